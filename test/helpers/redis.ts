import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

export interface TestRedis {
  url: string;
  /** Key prefix unique to this test file; every wafleet key lives under `{prefix}:`. */
  prefix: string;
  redis: Redis;
  /** Removes exactly this prefix's keys (SCAN + UNLINK, never FLUSHDB) and disconnects. */
  cleanup(): Promise<void>;
}

/**
 * `url`: a Redis of the test's own (e.g. one it restarts); default: the run's shared Redis.
 * `label` starts the prefix, so a benchmark's keys can be told apart from a test's.
 */
export async function useTestRedis(url?: string, label = 't'): Promise<TestRedis> {
  // vitest is imported only when asked for the run's Redis, so the benchmarks (scripts/bench),
  // which run outside vitest and always pass a URL, can use these helpers too.
  url ??= (await import('vitest')).inject('redisUrl');
  const prefix = `${label}${randomBytes(5).toString('hex')}`;
  const redis = new Redis(url, { maxRetriesPerRequest: 3 });
  return {
    url,
    prefix,
    redis,
    async cleanup() {
      await removeKeys(redis, `*{${prefix}}*`);
      redis.disconnect();
    },
  };
}

export async function removeKeys(redis: Redis, pattern: string): Promise<number> {
  let removed = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) removed += await redis.unlink(...keys);
  } while (cursor !== '0');
  return removed;
}
