import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseStore } from '../../src/cluster/lease-store.js';
import { reseedFences, type RedisResetDeps } from '../../src/cluster/redis-reset.js';
import { createStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The re-seed after Redis lost its data, against a real Redis and a real store.

const log = pino({ level: 'silent' });
let t: TestRedis;
let database: TestDatabase;
let store: Store;

beforeAll(async () => {
  t = await useTestRedis();
  database = await createTestDatabase();
  store = await createStore({ kind: 'postgres', databaseUrl: database.url, poolMax: 2 }, { log });
  await store.migrate();
});
afterAll(async () => {
  await store?.close();
  await database?.drop();
  await t?.cleanup();
});

/** One server's re-seed against this test's Redis and store, TTL 1 s; `extra` adds its restores. */
const resetDeps = (extra: Partial<RedisResetDeps> = {}): RedisResetDeps => {
  const keys = createClusterKeys(t.prefix);
  return { redis: t.redis, keys, store, leases: createLeaseStore({ redis: t.redis, keys }), log, ttlMs: 1000, ...extra };
};

describe('re-seed after Redis lost its data', () => {
  it('holds claims off for a whole TTL after the re-seed is complete, however long it took', async () => {
    const ttlMs = 1000;
    const keys = createClusterKeys(t.prefix);
    // A restore of many pending messages takes longer than a TTL.
    const deps = resetDeps({ restoreMessages: () => new Promise((r) => setTimeout(r, ttlMs * 1.5)) });
    await t.redis.del(keys.marker, keys.incarnation, keys.claimEmbargo);
    await reseedFences(deps, true);
    // Holders re-assert what they still run within this TTL; no claim may take a device first.
    expect(await t.redis.pttl(keys.claimEmbargo)).toBeGreaterThan(ttlMs * 0.8);
    expect(await t.redis.exists(keys.marker)).toBe(1);

    // The other servers noticing the same reset find the re-seed done: nothing is read again, and
    // the embargo is not extended by them.
    await new Promise((r) => setTimeout(r, 300));
    const restored: string[] = [];
    expect(await reseedFences({ ...deps, restoreMessages: async () => void restored.push('again') }, true)).toBe(0);
    expect(restored).toEqual([]);
    expect(await t.redis.pttl(keys.claimEmbargo)).toBeLessThan(ttlMs - 250);
  });

  it('lets one of the servers that notice the same loss read the store; the others wait for it', async () => {
    const keys = createClusterKeys(t.prefix);
    const restores: string[] = [];
    const server = (serverId: string): RedisResetDeps =>
      resetDeps({
        serverId,
        // Slow, as the event restore of a large fleet is: the others would all start it meanwhile.
        restoreEvents: async () => {
          restores.push(serverId);
          await new Promise((r) => setTimeout(r, 600));
        },
      });
    await t.redis.del(keys.marker, keys.incarnation, keys.claimEmbargo, keys.reseedLock);
    const ended: string[] = [];
    await Promise.all(['srv-a', 'srv-b', 'srv-c'].map(async (id) => {
      await reseedFences(server(id), true);
      ended.push(id);
    }));
    expect(restores).toHaveLength(1);
    expect(ended).toHaveLength(3);
    // Each returned only once the re-seed was complete: claims are open on this Redis.
    expect(await t.redis.exists(keys.marker)).toBe(1);
    expect(await t.redis.get(keys.incarnation)).not.toBeNull();
    expect(await t.redis.exists(keys.reseedLock)).toBe(0);
  });

  it('takes the re-seed over from a server that died holding the lock, once its hold lapses', async () => {
    const keys = createClusterKeys(t.prefix);
    await t.redis.del(keys.marker, keys.incarnation, keys.claimEmbargo);
    // The dead server's hold: nobody extends it any more.
    await t.redis.set(keys.reseedLock, 'dead-server-hold', 'PX', 700);
    const restores: number[] = [];
    const started = Date.now();
    await reseedFences(resetDeps({ restoreEvents: async () => void restores.push(Date.now() - started) }), true);
    expect(restores).toHaveLength(1);
    expect(restores[0]).toBeGreaterThanOrEqual(600);
    expect(await t.redis.exists(keys.marker)).toBe(1);
  });

  it('never grants again a token whose record had not reached the store when Redis lost its data', async () => {
    // S claimed the device with token 1; the record was still queued in Redis when Redis lost
    // its data, so the store knows no lease_epoch for it, and S is paused (no re-assert).
    const ttlMs = 1000;
    const keys = createClusterKeys(t.prefix);
    const leases = createLeaseStore({ redis: t.redis, keys });
    const device = randomUUID();
    await t.redis.del(keys.claimEmbargo);
    for (const server of ['srv-s', 'srv-t']) await t.redis.multi().hset(keys.server(server), { capacity: 10 }).pexpire(keys.server(server), 60_000).exec();
    const before = await leases.claim(device, 'srv-s@5a5a5a5a5a5a', 60_000);
    expect(before).toMatchObject({ outcome: 'claimed' });
    const oldToken = (before as { token: number }).token;
    await t.redis.del(keys.lease(device), keys.fence(device), keys.marker, keys.incarnation, keys.holderDeadlines, keys.holders, keys.claimEmbargo);

    await reseedFences({ redis: t.redis, keys, store, leases, log, ttlMs, serverId: 'srv-t' }, true);
    await t.redis.del(keys.claimEmbargo);
    const after = await leases.claim(device, 'srv-t@7b7b7b7b7b7b', 60_000);
    expect(after).toMatchObject({ outcome: 'claimed' });
    const newToken = (after as { token: number }).token;
    expect(newToken).toBeGreaterThan(oldToken);
    // The token's high bits name the incarnation epoch the store handed out for this re-seed.
    expect(Math.floor(newToken / 2 ** 32)).toBeGreaterThanOrEqual(1);
    expect(await t.redis.get(keys.lease(device))).toBe(`srv-t@7b7b7b7b7b7b:${newToken}`);
    expect(Number.isSafeInteger(newToken)).toBe(true);
  });
});
