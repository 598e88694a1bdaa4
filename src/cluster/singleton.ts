import { ExecutionError, Redlock, ResourceLockedError } from '@sesamecare-oss/redlock';
import type { RedisClient as Redis } from '../shared/redis.js';

// Singleton duties (reconcile, rebalance planning) run on one server at a time under a short
// redlock lock. It is an efficiency lock only: running a duty twice is wasteful, never unsafe,
// because ownership is decided by the lease scripts alone. The lock is not released after the
// duty but left to expire, so a duty runs at most once per lock period across the whole cluster
// (every server's timer fires, but only the first in each period gets the lock).

export interface SingletonRunner {
  /** Runs `duty` if this server gets the lock for `lockMs`; resolves false when another server holds it. */
  run(lockKey: string, lockMs: number, duty: () => Promise<void>): Promise<boolean>;
}

export function createSingletonRunner(redis: Redis): SingletonRunner {
  const redlock = new Redlock([redis], { retryCount: 0 });
  // Redlock reports contention as 'error' events as well as rejections; the rejection is enough.
  redlock.on('error', () => undefined);
  return {
    async run(lockKey, lockMs, duty) {
      try {
        await redlock.acquire([lockKey], lockMs);
      } catch (err) {
        if (err instanceof ResourceLockedError || err instanceof ExecutionError) return false;
        throw err;
      }
      await duty();
      return true;
    },
  };
}
