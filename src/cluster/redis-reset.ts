import type { Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import type { Store } from '../store/types.js';
import type { ClusterKeys } from './keys.js';
import type { LeaseStore } from './lease-store.js';

// When Redis loses its data (or restarts), fence counters restart at zero while old owners may
// still be running with their tokens. Before anyone claims again: lift every fence to the store's
// lease_epoch, hold claims off for one TTL so holders can re-assert what they still run, and put
// the marker back. Every server that notices runs this; each step is idempotent.

const SEED_PAGE = 1000;

export interface RedisResetDeps {
  redis: Redis;
  keys: ClusterKeys;
  store: Store;
  leases: LeaseStore;
  log: Logger;
  ttlMs: number;
}

/** Lifts fences from the store; with `embargo`, nobody claims for one TTL. Returns fences lifted. */
export async function reseedFences({ redis, keys, store, leases, log, ttlMs }: RedisResetDeps, embargo: boolean): Promise<number> {
  if (embargo) await redis.set(keys.claimEmbargo, Date.now(), 'PX', ttlMs, 'NX');
  let lifted = 0;
  let after: string | null = null;
  for (;;) {
    const page = await store.listLeaseEpochs(after, SEED_PAGE);
    if (page.length === 0) break;
    lifted += await leases.seedFences(page);
    after = page[page.length - 1]!.deviceId;
  }
  // NX: when several servers notice at once, the first marker stands and the others adopt it.
  await redis.set(keys.marker, `${new Date().toISOString()}/${Math.random().toString(36).slice(2, 8)}`, 'NX');
  log.warn({ lifted, embargoMs: embargo ? ttlMs : 0 }, 'fence counters re-seeded from the store');
  return lifted;
}

/**
 * At start-up a missing marker means either a fresh Redis or one that lost its data. Only the
 * latter needs the embargo: it is the one where old tokens exist (the store has epochs).
 */
export async function ensureMarker(deps: RedisResetDeps): Promise<void> {
  if ((await deps.redis.exists(deps.keys.marker)) === 1) return;
  const known = await deps.store.listLeaseEpochs(null, 1);
  await reseedFences(deps, known.length > 0);
}
