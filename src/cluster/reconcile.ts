import type { RedisClient as Redis } from '../shared/redis.js';
import type { Logger } from '../shared/logger.js';
import type { Store } from '../store/types.js';
import type { ClusterKeys } from './keys.js';
import type { LeaseStore } from './lease-store.js';
import type { SingletonRunner } from './singleton.js';

// The store says which devices should run; Redis says which do. Every few seconds one server
// (under a singleton lock) mirrors the store's wanted devices into Redis's wanted set (placement
// places nothing else) and places whatever is wanted but neither leased nor on its way to a
// server. In steady state it finds nothing; after Redis lost its data it rebuilds the cluster.

const PAGE = 1000;

export interface ReconcilerOptions {
  store: Store;
  redis: Redis;
  keys: ClusterKeys;
  leases: LeaseStore;
  singleton: SingletonRunner;
  place(deviceId: string): Promise<unknown>;
  intervalMs: number;
  log: Logger;
}

export interface Reconciler {
  /** One round now; resolves with what it placed, or null when another server ran it. */
  round(): Promise<{ wanted: number; placed: number } | null>;
  start(): void;
  stop(): void;
}

export function createReconciler({ store, redis, keys, leases, singleton, place, intervalMs, log }: ReconcilerOptions): Reconciler {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | undefined;

  const roundOnce = async () => {
    let wanted = 0;
    let placed = 0;
    const ran = await singleton.run(keys.singletonLock('reconcile'), intervalMs, async () => {
      let after: string | null = null;
      const seen = new Set<string>();
      for (;;) {
        const page = await store.listWantedDevices(after, PAGE);
        if (page.length === 0) break;
        wanted += page.length;
        after = page[page.length - 1]!;
        for (const deviceId of page) seen.add(deviceId);
        await leases.setWanted(page, true);
        const pipeline = redis.pipeline();
        for (const deviceId of page) pipeline.exists(keys.lease(deviceId)).zscore(keys.placements, deviceId);
        const results = (await pipeline.exec()) ?? [];
        const missing = page.filter((_, i) => results[i * 2]?.[1] === 0 && results[i * 2 + 1]?.[1] === null);
        await Promise.all(missing.map((deviceId) => place(deviceId)));
        placed += missing.length;
      }
      // Devices stopped or deleted in the store since they were marked wanted.
      const stale = (await redis.smembers(keys.wanted)).filter((deviceId) => !seen.has(deviceId));
      await leases.setWanted(stale, false);
    });
    if (!ran) return null;
    if (placed > 0) log.info({ wanted, placed }, 'reconcile placed wanted devices that ran nowhere');
    return { wanted, placed };
  };

  const round = () => {
    const current = (running ??= roundOnce().finally(() => {
      running = undefined;
    }));
    return current as Promise<{ wanted: number; placed: number } | null>;
  };

  return {
    round,
    start() {
      timer = setInterval(() => {
        round().catch((err) => log.warn({ err }, 'reconcile failed'));
      }, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
