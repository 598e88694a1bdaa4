// `npm run redis`: makes sure the Redis in REDIS_URL answers, starting a local one (daemonised,
// data under data/redis, log in logs/redis.log) when it is on this host and nothing answers.
import { redactUrl } from '../src/shared/redact.js';
import { describeRedisTarget } from '../src/shared/redis.js';
import { loadConfigOrExit } from './lib/cli.js';
import { ensureRedis, RedisServerMissingError } from '../harness/local-redis.js';

const config = loadConfigOrExit();
const { target } = config.redis;
if (target.mode !== 'standalone') {
  console.error(`wafleet: Redis is configured as a ${target.mode} (${describeRedisTarget(target)}); \`npm run redis\` only starts a standalone one.`);
  process.exit(1);
}
try {
  const outcome = await ensureRedis(target.url);
  console.log(
    outcome === 'started'
      ? `Started a local redis-server for ${redactUrl(target.url)} (data in data/redis, log in logs/redis.log).`
      : `Redis answers at ${redactUrl(target.url)}.`,
  );
} catch (err) {
  console.error(err instanceof RedisServerMissingError ? err.message : `wafleet: ${(err as Error).message}`);
  process.exit(1);
}
