import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseStore } from '../../src/cluster/lease-store.js';
import { reseedFences, type RedisResetDeps } from '../../src/cluster/redis-reset.js';
import { createStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';
import { useTestRedis, type TestRedis } from '../helpers/redis.js';

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

describe('re-seed after Redis lost its data', () => {
  it('holds claims off for a whole TTL after the re-seed is complete, however long it took', async () => {
    const ttlMs = 1000;
    const keys = createClusterKeys(t.prefix);
    const deps: RedisResetDeps = {
      redis: t.redis,
      keys,
      store,
      leases: createLeaseStore({ redis: t.redis, keys }),
      log,
      ttlMs,
      // A restore of many pending messages takes longer than a TTL.
      restoreMessages: () => new Promise((r) => setTimeout(r, ttlMs * 1.5)),
    };
    await t.redis.del(keys.marker, keys.incarnation, keys.claimEmbargo);
    await reseedFences(deps, true);
    // Holders re-assert what they still run within this TTL; no claim may take a device first.
    expect(await t.redis.pttl(keys.claimEmbargo)).toBeGreaterThan(ttlMs * 0.8);
    expect(await t.redis.exists(keys.marker)).toBe(1);
  });
});
