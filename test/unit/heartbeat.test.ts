import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clockDrift, createHeartbeat } from '../../src/cluster/heartbeat.js';
import { createClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseGuard } from '../../src/cluster/lease-guard.js';
import { createLeaseStore } from '../../src/cluster/lease-store.js';
import { waitUntil } from '../../harness/cluster.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The heartbeat against a real Redis, with a local clock the test can step.

let t: TestRedis;
beforeAll(async () => {
  t = await useTestRedis();
});
afterAll(async () => {
  await t.cleanup();
});

describe('clock drift between Redis and this server', () => {
  it('is zero while the gap fits within the round trips, and signed when it does not', () => {
    const a = { redisMs: 10_000, sentAt: 500, receivedAt: 510 };
    expect(clockDrift(a, { redisMs: 11_000, sentAt: 1495, receivedAt: 1505 })).toBe(0);
    // Redis ran 400 ms ahead of the local clock: leases expire sooner than the guard assumes.
    expect(clockDrift(a, { redisMs: 11_400, sentAt: 1495, receivedAt: 1505 })).toBe(395);
    // The local clock jumped 2 s forward.
    expect(clockDrift(a, { redisMs: 11_000, sentAt: 3495, receivedAt: 3505 })).toBe(-1985);
  });

  it('a step of the local clock between two beats self-fences the server instead of trusting the renewal', async () => {
    const ttlMs = 3000;
    const keys = createClusterKeys(t.prefix);
    let offset = 0;
    const clock = () => performance.now() + offset;
    const guard = createLeaseGuard({ clock, selfFenceMs: 2000 });
    const lines: string[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (chunk, _, done) => void (lines.push(String(chunk)), done()) }));
    const heartbeat = createHeartbeat({
      redis: t.redis,
      keys,
      leases: createLeaseStore({ redis: t.redis, keys }),
      guard,
      clock,
      log,
      serverId: 'srv-clock',
      ttlMs,
      intervalMs: 1000,
      maxClockDriftMs: (ttlMs - 2000) / 4,
      advert: () => ({ bootId: 'b', url: '', region: 'r', capacity: 1, priority: 1, draining: false, startedAt: 0, responseTimeMs: 0 }),
      onRedisReset: () => undefined,
    });
    await heartbeat.beat();
    await heartbeat.beat();
    expect(guard.isFenced()).toBe(false);

    // The local monotonic clock jumps 600 ms (more than a quarter of the 1000 ms margin, less
    // than what would fence by the deadline alone); Redis's clock does not.
    offset += 600;
    await heartbeat.beat();
    expect(guard.isFenced()).toBe(true);
    expect(lines.join('')).toContain('clock step');

    // The clocks agree again from the new baseline: the next beat renews.
    await heartbeat.beat();
    await waitUntil(async () => !guard.isFenced(), 1000);
  });
});
