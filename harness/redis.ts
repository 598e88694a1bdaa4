import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { createClusterKeys } from '../src/cluster/keys.js';
import { adoptFreshRedis } from '../src/cluster/redis-reset.js';
import { connectRedis, scanKeys, type Redis, type RedisClient, type RedisTarget } from '../src/shared/redis.js';

/** `C`: a standalone Redis unless the test asked for a Sentinel or Cluster deployment. */
export interface TestRedis<C extends RedisClient = Redis> {
  url: string;
  /** Key prefix unique to this test file; every wafleet key lives under `{prefix}:`. */
  prefix: string;
  redis: C;
  /** The variables that point a server process at this Redis (REDIS_URL, or Sentinel/Cluster's). */
  env: Record<string, string>;
  /** Removes exactly this prefix's keys (SCAN + UNLINK, never FLUSHDB) and disconnects. */
  cleanup(): Promise<void>;
}

/** The variables a server reads for `target` (see src/config/schema.ts). */
export function redisEnvFor(target: RedisTarget): Record<string, string> {
  const list = (nodes: ReadonlyArray<{ host: string; port: number }>) => nodes.map((n) => `${n.host}:${n.port}`).join(',');
  switch (target.mode) {
    case 'standalone':
      return { REDIS_URL: target.url };
    case 'sentinel':
      return { REDIS_SENTINELS: list(target.sentinels), REDIS_SENTINEL_MASTER: target.masterName };
    case 'cluster':
      return { REDIS_CLUSTER_NODES: list(target.nodes) };
  }
}

/**
 * `target`: a Redis of the test's own (e.g. one it restarts, or a Sentinel or Cluster deployment);
 * a string is a standalone URL; default: the run's shared Redis. `label` starts the prefix, so a
 * benchmark's keys can be told apart from a test's.
 */
export async function useTestRedis(url?: string, label?: string): Promise<TestRedis>;
export async function useTestRedis(target: RedisTarget, label?: string): Promise<TestRedis<RedisClient>>;
export async function useTestRedis(target?: string | RedisTarget, label = 't'): Promise<TestRedis<RedisClient>> {
  // vitest is imported only when asked for the run's Redis, so the benchmarks (scripts/bench),
  // which run outside vitest and always pass a URL, can use these helpers too.
  const resolved: RedisTarget =
    typeof target === 'object' ? target : { mode: 'standalone', url: target ?? (await import('vitest')).inject('redisUrl') };
  const prefix = `${label}${randomBytes(5).toString('hex')}`;
  const redis = await connectRedis({
    target: resolved,
    log: pino({ level: 'silent' }),
    connectionName: `wafleet-test:${prefix}`,
    extra: { maxRetriesPerRequest: 3 },
  });
  // Claims need fences seeded on this Redis; under a brand-new prefix there is nothing to seed.
  await adoptFreshRedis(redis, createClusterKeys(prefix));
  return {
    url: resolved.mode === 'standalone' ? resolved.url : '',
    prefix,
    redis,
    env: redisEnvFor(resolved),
    async cleanup() {
      await removeKeys(redis, `*{${prefix}}*`);
      redis.disconnect();
    },
  };
}

export async function removeKeys(redis: RedisClient, pattern: string): Promise<number> {
  let removed = 0;
  // One UNLINK per key: under Cluster a multi-key UNLINK must stay in one slot.
  await scanKeys(redis, pattern, async (keys) => {
    const results = await Promise.all(keys.map((key) => redis.unlink(key)));
    removed += results.reduce((a, b) => a + b, 0);
  });
  return removed;
}
