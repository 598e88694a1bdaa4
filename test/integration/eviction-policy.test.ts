import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEphemeralRedis, type LocalRedis } from '../../harness/local-redis.js';
import { spawnServer, stopAll, type ServerProcess } from '../../harness/processes.js';

// A Redis that may evict could drop a live lease or a fence, and then two servers own one device:
// a server refuses it before it writes anything. A Redis of this file's own, since the policy is
// what the test sets.

let lru: LocalRedis;
const processes: ServerProcess[] = [];

beforeAll(async () => {
  lru = await startEphemeralRedis(await freePort(), ['--maxmemory-policy', 'allkeys-lru']);
});
afterAll(async () => {
  await stopAll(processes.splice(0));
  await lru?.stop();
});

describe('a server against a Redis that may evict keys', () => {
  it('exits 1 naming maxmemory-policy and the policy found, having written nothing', async () => {
    const p = spawnServer({ SERVER_ID: 'srv-evicting', REDIS_URL: `redis://127.0.0.1:${lru.port}` }, await freePort());
    processes.push(p);
    expect(await p.exited).toBe(1);
    expect(p.output()).toContain(`Redis at 127.0.0.1:${lru.port} has maxmemory-policy allkeys-lru`);
    expect(p.output()).toContain('CONFIG SET maxmemory-policy noeviction');
    expect(p.output()).toContain('"code":"redis_eviction_policy"');
    const probe = new Redis(lru.port, '127.0.0.1', { lazyConnect: true });
    try {
      await probe.connect();
      expect(await probe.dbsize()).toBe(0);
    } finally {
      probe.disconnect();
    }
  });
});
