// `npm run redis`: makes sure the Redis in REDIS_URL answers, starting a local one (daemonised,
// data under data/redis, log in logs/redis.log) when it is on this host and nothing answers.
import { redactUrl } from '../src/shared/redact.js';
import { loadConfigOrExit } from './lib/cli.js';
import { ensureRedis, RedisServerMissingError } from './lib/local-redis.js';

const config = loadConfigOrExit();
try {
  const outcome = await ensureRedis(config.redis.url);
  console.log(
    outcome === 'started'
      ? `Started a local redis-server for ${redactUrl(config.redis.url)} (data in data/redis, log in logs/redis.log).`
      : `Redis answers at ${redactUrl(config.redis.url)}.`,
  );
} catch (err) {
  console.error(err instanceof RedisServerMissingError ? err.message : `wafleet: ${(err as Error).message}`);
  process.exit(1);
}
