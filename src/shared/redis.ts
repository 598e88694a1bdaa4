import { Redis, type RedisOptions } from 'ioredis';
import { DependencyUnavailableError } from './errors.js';
import type { Logger } from './logger.js';
import { redactUrl } from './redact.js';

export type { Redis } from 'ioredis';

export interface ConnectRedisOptions {
  url: string;
  log: Logger;
  /** Shown in CLIENT LIST, so an operator can tell wafleet's connections apart. */
  connectionName: string;
  /** How long start-up waits for the first PONG. */
  connectTimeoutMs?: number;
  extra?: RedisOptions;
}

/**
 * Connects and proves the connection with a PING before returning. Start-up fails fast with the
 * URL (password hidden) and a hint; after start-up, ioredis reconnects on its own and a lost
 * connection is reported through `error` events, never thrown from a timer.
 */
export async function connectRedis({
  url,
  log,
  connectionName,
  connectTimeoutMs = 5000,
  extra,
}: ConnectRedisOptions): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectionName,
    connectTimeout: connectTimeoutMs,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
    ...extra,
  });
  let lastError: Error | undefined;
  const onError = (err: Error) => {
    lastError = err;
  };
  redis.on('error', onError);
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    const reason = (lastError ?? (err as Error)).message;
    throw new DependencyUnavailableError(
      'redis_unavailable',
      `Cannot reach Redis at ${redactUrl(url)}: ${reason}. ` +
        'Is redis-server running? Start one with `npm run redis` (or set REDIS_URL to a reachable Redis).',
      { cause: err },
    );
  }
  redis.off('error', onError);
  // Keep one listener so ioredis never raises an unhandled 'error' event; log each outage once
  // per state change rather than once per retry.
  let reported = false;
  redis.on('error', (err) => {
    if (!reported) log.error({ err: { message: err.message }, redis: redactUrl(url) }, 'redis connection error');
    reported = true;
  });
  redis.on('ready', () => {
    if (reported) log.info({ redis: redactUrl(url) }, 'redis connection restored');
    reported = false;
  });
  return redis;
}
