import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { DependencyUnavailableError } from './errors.js';
import type { Logger } from './logger.js';
import { redactUrl } from './redact.js';

export type { Redis } from 'ioredis';
/** A standalone or Sentinel-managed Redis, or a Redis Cluster: every module takes either. */
export type RedisClient = Redis | Cluster;

export interface RedisNode {
  host: string;
  port: number;
}

/**
 * Where Redis is. Every wafleet key carries the `{prefix}` hash tag, so on a Cluster all of them,
 * BullMQ's included, live in one slot: Lua scripts and transactions never cross slots.
 */
export type RedisTarget =
  | { mode: 'standalone'; url: string }
  | { mode: 'sentinel'; sentinels: RedisNode[]; masterName: string; username?: string; password?: string; sentinelPassword?: string; tls: boolean }
  | { mode: 'cluster'; nodes: RedisNode[]; username?: string; password?: string; tls: boolean };

const nodeList = (nodes: readonly RedisNode[]) => nodes.map((n) => (n.host.includes(':') ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`)).join(',');

/** Safe to log: no password. */
export function describeRedisTarget(target: RedisTarget): string {
  switch (target.mode) {
    case 'standalone':
      return redactUrl(target.url);
    case 'sentinel':
      return `sentinel master "${target.masterName}" via ${nodeList(target.sentinels)}${target.tls ? ' (TLS)' : ''}`;
    case 'cluster':
      return `cluster via ${nodeList(target.nodes)}${target.tls ? ' (TLS)' : ''}`;
  }
}

export interface ConnectRedisOptions {
  target: RedisTarget;
  log: Logger;
  /** Shown in CLIENT LIST, so an operator can tell wafleet's connections apart. */
  connectionName: string;
  /** How long start-up waits for the first PONG. */
  connectTimeoutMs?: number;
  extra?: RedisOptions;
}

const retryStrategy = (attempt: number) => Math.min(attempt * 200, 2000);

function createClient(target: RedisTarget, options: RedisOptions): RedisClient {
  switch (target.mode) {
    case 'standalone':
      return new Redis(target.url, options);
    case 'sentinel':
      return new Redis({
        ...options,
        sentinels: target.sentinels,
        name: target.masterName,
        ...(target.username ? { username: target.username } : {}),
        ...(target.password ? { password: target.password } : {}),
        ...(target.sentinelPassword ? { sentinelPassword: target.sentinelPassword } : {}),
        ...(target.tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
        sentinelRetryStrategy: retryStrategy,
        // Not ioredis's failoverDetector: its disconnect can land while a reconnect is resolving
        // the master, which ends the connection for good ("Connection is closed."). Sentinel
        // itself kills a demoted master's client connections, which is what makes us reconnect.
      });
    case 'cluster': {
      const { lazyConnect, ...redisOptions } = options;
      const clusterOptions: ClusterOptions = {
        lazyConnect,
        redisOptions: {
          ...redisOptions,
          ...(target.username ? { username: target.username } : {}),
          ...(target.password ? { password: target.password } : {}),
          ...(target.tls ? { tls: {} } : {}),
        },
        clusterRetryStrategy: retryStrategy,
        // Leases must be read where they are written: never from a replica.
        scaleReads: 'master',
        // ioredis's ready check (CLUSTER INFO says ok) fails just after a master failover, and
        // then it reconnects without ever settling the promise connect() returned: BullMQ
        // reconnects a worker's blocking client with connect() and would wait on it forever, the
        // device's messages queued and never sent. Without the check, a command sent before the
        // cluster agrees again gets CLUSTERDOWN and is retried.
        enableReadyCheck: false,
      };
      return new Cluster(target.nodes, clusterOptions);
    }
  }
}

/**
 * Another connection to the same Redis with some options changed (a blocking reader, a subscriber,
 * BullMQ's connection without a retry limit). ioredis's own duplicate takes different arguments
 * for a Cluster.
 */
export function duplicateRedis(client: RedisClient, overrides: RedisOptions): RedisClient {
  if (client instanceof Cluster) {
    return client.duplicate(undefined, { ...client.options, redisOptions: { ...client.options.redisOptions, ...overrides } });
  }
  return client.duplicate(overrides);
}

/**
 * Connects and proves the connection with a PING before returning. Start-up fails fast with the
 * address (password hidden) and a hint; after start-up, ioredis reconnects on its own (following
 * a Sentinel or Cluster failover) and a lost connection is reported through `error` events, never
 * thrown from a timer.
 */
export async function connectRedis({ target, log, connectionName, connectTimeoutMs = 5000, extra }: ConnectRedisOptions): Promise<RedisClient> {
  const where = describeRedisTarget(target);
  const redis = createClient(target, {
    lazyConnect: true,
    connectionName,
    connectTimeout: connectTimeoutMs,
    retryStrategy,
    ...extra,
  });
  let lastError: Error | undefined;
  const onError = (err: Error) => {
    lastError = err;
  };
  redis.on('error', onError);
  try {
    await withDeadline(redis.connect().then(() => redis.ping()), connectTimeoutMs * 2, `no answer within ${connectTimeoutMs * 2} ms`);
  } catch (err) {
    redis.disconnect();
    const reason = (lastError ?? (err as Error)).message;
    throw new DependencyUnavailableError(
      'redis_unavailable',
      `Cannot reach Redis at ${where}: ${reason}. ` +
        (target.mode === 'standalone'
          ? 'Is redis-server running? Start one with `npm run redis` (or set REDIS_URL to a reachable Redis).'
          : `Check ${target.mode === 'sentinel' ? 'REDIS_SENTINELS and REDIS_SENTINEL_MASTER' : 'REDIS_CLUSTER_NODES'} (and REDIS_PASSWORD).`),
      { cause: err },
    );
  }
  redis.off('error', onError);
  // Keep one listener so ioredis never raises an unhandled 'error' event; log each outage once
  // per state change rather than once per retry.
  let reported = false;
  redis.on('error', (err: Error) => {
    if (!reported) log.error({ err, redis: where }, 'redis connection error');
    reported = true;
  });
  redis.on('ready', () => {
    if (reported) log.info({ redis: where }, 'redis connection restored');
    reported = false;
  });
  return redis;
}

/** A Cluster whose seeds never answer keeps retrying inside connect(); start-up must not wait forever. */
function withDeadline<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(message)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/**
 * SCAN over every key matching `pattern`, handing each page to `onPage`. A Cluster node scans only
 * its own keys, so under Cluster every master is scanned.
 */
export async function scanKeys(client: RedisClient, pattern: string, onPage: (keys: string[]) => void | Promise<void>): Promise<void> {
  const nodes = client instanceof Cluster ? client.nodes('master') : [client];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (found.length > 0) await onPage(found);
    } while (cursor !== '0');
  }
}

export type PipelineResults = Array<[Error | null, unknown]>;

/** Commands queued per pipeline by execChunked: one round trip each, none large enough to stall Redis. */
const PIPELINE_CHUNK = 500;

/**
 * Queues `queue`'s commands for every item, a pipeline per chunk of items, and returns all the
 * replies in order; the first error reply rejects.
 */
export async function execChunked<T>(
  client: RedisClient,
  items: readonly T[],
  queue: (pipeline: ReturnType<RedisClient['pipeline']>, item: T) => void,
): Promise<PipelineResults> {
  const results: PipelineResults = [];
  for (let start = 0; start < items.length; start += PIPELINE_CHUNK) {
    const pipeline = client.pipeline();
    for (const item of items.slice(start, start + PIPELINE_CHUNK)) queue(pipeline, item);
    const chunk = (await pipeline.exec()) ?? [];
    for (const [err] of chunk) if (err) throw err;
    results.push(...chunk);
  }
  return results;
}
