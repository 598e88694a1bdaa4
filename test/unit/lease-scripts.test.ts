import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseStore, RENEW_CHUNK, type LeaseStore } from '../../src/cluster/lease-store.js';
import { adoptFreshRedis } from '../../src/cluster/redis-reset.js';
import { removeKeys, useTestRedis, type TestRedis } from '../../harness/redis.js';
import { countRoundTrips } from '../../harness/bench/probe.js';

// The lease scripts, run directly against a real Redis. Expiry is tested with short real TTLs and
// polling: fake timers do not move Redis's clock.

let t: TestRedis;
let keys: ClusterKeys;
let leases: LeaseStore;

async function goLive(serverId: string, fields: Record<string, string | number> = {}): Promise<void> {
  await t.redis
    .multi()
    .hset(keys.server(serverId), { capacity: 1000, priority: 100, draining: 0, responseTimeMs: 0, ...fields })
    .pexpire(keys.server(serverId), 60_000)
    .sadd(keys.servers, serverId)
    .exec();
}

async function redisNow(): Promise<number> {
  const [seconds, micros] = await t.redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

/** A device id whose desired state is running (placement places only those). */
async function wantedDevice(): Promise<string> {
  const id = randomUUID();
  await leases.setWanted([id], true);
  return id;
}

beforeAll(async () => {
  t = await useTestRedis();
});
beforeEach(async () => {
  await removeKeys(t.redis, `*{${t.prefix}}*`);
  keys = createClusterKeys(t.prefix);
  await adoptFreshRedis(t.redis, keys);
  leases = createLeaseStore({ redis: t.redis, keys });
  await goLive('srv-a');
  await goLive('srv-b');
});
afterAll(async () => {
  await t.cleanup();
});

describe('claim', () => {
  it('takes an absent lease with the next fencing token, visible to redis-cli', async () => {
    const device = randomUUID();
    expect(await leases.claim(device, 'srv-a', 5000)).toEqual({ outcome: 'claimed', token: 1 });
    expect(await t.redis.get(keys.lease(device))).toBe('srv-a:1');
    const pttl = await t.redis.pttl(keys.lease(device));
    expect(pttl).toBeGreaterThan(4000);
    expect(pttl).toBeLessThanOrEqual(5000);
    expect(await t.redis.get(keys.fence(device))).toBe('1');
    expect(await t.redis.sismember(keys.owned('srv-a'), device)).toBe(1);
    expect(await t.redis.hget(keys.holders, device)).toBe('srv-a:1');
    // One deadline per holder, not per lease: the sweep reads it.
    const deadline = Number(await t.redis.zscore(keys.holderDeadlines, 'srv-a'));
    const now = await redisNow();
    expect(deadline - now).toBeGreaterThan(4000);
    expect(deadline - now).toBeLessThanOrEqual(5000);
  });

  it('refuses a held lease and names the holder', async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-a', 5000);
    expect(await leases.claim(device, 'srv-b', 5000)).toEqual({ outcome: 'held', serverId: 'srv-a', token: 1 });
    expect(await leases.claim(device, 'srv-a', 5000)).toEqual({ outcome: 'held', serverId: 'srv-a', token: 1 });
    expect(await t.redis.get(keys.fence(device))).toBe('1');
  });

  it('refuses a server that is not live, and everyone during an embargo', async () => {
    expect(await leases.claim(randomUUID(), 'srv-gone', 5000)).toEqual({ outcome: 'not_live' });
    await t.redis.set(keys.claimEmbargo, '1', 'PX', 5000);
    expect(await leases.claim(randomUUID(), 'srv-a', 5000)).toEqual({ outcome: 'embargoed' });
  });

  it('claims a batch in one script call, each device on its own terms, and refuses a whole batch at once', async () => {
    const [free, held, twice] = [randomUUID(), randomUUID(), randomUUID()];
    await leases.claim(held, 'srv-b', 5000);
    const sent = countRoundTrips(t.redis);
    const results = await leases.claimMany(
      [{ deviceId: free, minToken: 40 }, { deviceId: held }, { deviceId: twice }, { deviceId: twice }],
      'srv-a@boot1',
      5000,
    );
    expect(sent.read()).toMatchObject({ roundTrips: 1, scripts: 1 });
    expect(results).toEqual([
      { outcome: 'claimed', token: 40 },
      { outcome: 'held', serverId: 'srv-b', token: 1 },
      { outcome: 'claimed', token: 1 },
      // The same device twice in one batch: the second finds the first's lease.
      { outcome: 'held', serverId: 'srv-a', bootId: 'boot1', token: 1 },
    ]);
    expect(await t.redis.get(keys.lease(free))).toBe('srv-a@boot1:40');
    expect(await t.redis.smembers(keys.owned('srv-a'))).toEqual(expect.arrayContaining([free, twice]));

    // Placement claims need this server's reservation, device by device.
    const [reserved, unreserved] = [await wantedDevice(), await wantedDevice()];
    expect(await leases.place(reserved, ['srv-a'], 60_000)).toEqual({ outcome: 'placed', serverId: 'srv-a' });
    expect(await leases.claimMany([{ deviceId: unreserved }, { deviceId: reserved }], 'srv-a', 5000, { viaPlacement: true })).toEqual([
      { outcome: 'not_reserved' },
      { outcome: 'claimed', token: 1 },
    ]);
    expect(await t.redis.hget(keys.placementTargets, reserved)).toBeNull();
    expect(await t.redis.zscore(keys.reserved('srv-a'), reserved)).toBeNull();

    // A cluster-wide refusal answers for every device, and takes no token.
    await t.redis.set(keys.claimEmbargo, '1', 'PX', 5000);
    const [a, b] = [randomUUID(), randomUUID()];
    expect(await leases.claimMany([{ deviceId: a }, { deviceId: b }], 'srv-a', 5000)).toEqual([{ outcome: 'embargoed' }, { outcome: 'embargoed' }]);
    expect(await t.redis.mget(keys.fence(a), keys.fence(b))).toEqual([null, null]);
  });

  it("lifts the token to the store's floor and never lets it go down", async () => {
    const device = randomUUID();
    expect(await leases.claim(device, 'srv-a', 5000, { minToken: 50 })).toEqual({ outcome: 'claimed', token: 50 });
    expect(await leases.release(device, 'srv-a', 50)).toBe(true);
    expect(await leases.claim(device, 'srv-b', 5000, { minToken: 10 })).toEqual({ outcome: 'claimed', token: 51 });
  });

  it('grants nothing on a Redis other than the one fences were seeded on (restarted or failed over)', async () => {
    const device = randomUUID();
    const runId = /run_id:(\w+)/.exec(await t.redis.info('server'))![1]!;
    // As after a failover: the replica that took over has the old master's run id in its copy.
    await t.redis.set(keys.incarnation, 'run-id-of-the-old-master');
    expect(await leases.claim(device, 'srv-a', 5000)).toEqual({ outcome: 'redis_changed', runId, seededOn: 'run-id-of-the-old-master' });
    // Nothing was granted: no lease, no owner, and no token taken from the fence.
    expect(await t.redis.exists(keys.lease(device))).toBe(0);
    expect(await t.redis.sismember(keys.owned('srv-a'), device)).toBe(0);
    expect(await t.redis.get(keys.fence(device))).toBeNull();

    await t.redis.del(keys.incarnation);
    expect(await leases.claim(device, 'srv-a', 5000)).toMatchObject({ outcome: 'redis_changed', seededOn: null });

    await adoptFreshRedis(t.redis, keys);
    expect(await leases.claim(device, 'srv-a', 5000)).toEqual({ outcome: 'claimed', token: 1 });
  });
});

describe('renew', () => {
  it(`renews every held lease in chunks of ${RENEW_CHUNK} and reports exactly the lost ones`, async () => {
    const devices = Array.from({ length: 2500 }, () => randomUUID());
    const held = [];
    for (const deviceId of devices) {
      const claimed = await leases.claim(deviceId, 'srv-a', 3000);
      if (claimed.outcome !== 'claimed') throw new Error('claim failed');
      held.push({ deviceId, token: claimed.token });
    }
    const stolen = devices[1234]!;
    const vanished = devices[2]!;
    await t.redis.del(keys.lease(stolen), keys.lease(vanished));
    // srv-a never released it: the claim names it as the holder whose lease ran out.
    expect(await leases.claim(stolen, 'srv-b', 3000)).toEqual({ outcome: 'claimed', token: 2, expired: { serverId: 'srv-a', token: 1 } });

    const before = await t.redis.pttl(keys.lease(devices[0]!));
    await new Promise((r) => setTimeout(r, 50));
    const lost = await leases.renew('srv-a', 60_000, held);
    expect(lost).toHaveLength(2);
    expect(lost).toEqual(
      expect.arrayContaining([
        { deviceId: stolen, token: 1, holder: { serverId: 'srv-b', token: 2 } },
        { deviceId: vanished, token: 1, holder: null },
      ]),
    );
    const after = await t.redis.pttl(keys.lease(devices[0]!));
    expect(before).toBeLessThanOrEqual(3000);
    expect(after).toBeGreaterThan(55_000);
    expect(await t.redis.pttl(keys.lease(devices[2499]!))).toBeGreaterThan(55_000);
    // A lost lease leaves the loser's owned set; the thief's lease is untouched.
    expect(await t.redis.sismember(keys.owned('srv-a'), stolen)).toBe(0);
    expect(await t.redis.scard(keys.owned('srv-a'))).toBe(2498);
    expect(await t.redis.get(keys.lease(stolen))).toBe('srv-b:2');
  });

  it('moves one deadline per holder and no per-lease index: GETEX per lease, one ZADD per chunk', async () => {
    const devices = Array.from({ length: 50 }, () => randomUUID());
    const held = [];
    for (const deviceId of devices) {
      const claimed = await leases.claim(deviceId, 'srv-a@boot1', 1000);
      if (claimed.outcome !== 'claimed') throw new Error('claim failed');
      held.push({ deviceId, token: claimed.token });
    }
    await t.redis.config('RESETSTAT');
    expect(await leases.renew('srv-a@boot1', 60_000, held)).toEqual([]);
    const stats = await t.redis.info('commandstats');
    const calls = (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    expect(calls('getex')).toBe(50);
    expect(calls('zadd')).toBe(1);
    expect(calls('pexpire')).toBe(0);
    expect(await t.redis.zrange(keys.holderDeadlines, 0, -1)).toEqual(['srv-a@boot1']);
    const deadline = Number(await t.redis.zscore(keys.holderDeadlines, 'srv-a@boot1'));
    expect(deadline - (await redisNow())).toBeGreaterThan(55_000);
    expect(await t.redis.pttl(keys.lease(devices[49]!))).toBeGreaterThan(55_000);
  });

  it("leaves another holder's lease to expire when that holder's deadline says, though its GETEX read it", async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-b', 2000);
    // srv-a thinks it still holds the device under an old token (it was paused meanwhile).
    expect(await leases.renew('srv-a', 60_000, [{ deviceId: device, token: 7 }])).toEqual([
      { deviceId: device, token: 7, holder: { serverId: 'srv-b', token: 1 } },
    ]);
    expect(await t.redis.pttl(keys.lease(device))).toBeLessThanOrEqual(2000);
    expect(await t.redis.zscore(keys.holderDeadlines, 'srv-a')).toBeNull();
  });

  it('does not renew a lease whose token is stale', async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-a', 5000);
    await leases.release(device, 'srv-a', 1);
    await leases.claim(device, 'srv-a', 5000);
    expect(await leases.renew('srv-a', 5000, [{ deviceId: device, token: 1 }])).toEqual([
      { deviceId: device, token: 1, holder: { serverId: 'srv-a', token: 2 } },
    ]);
  });
});

describe('release', () => {
  it('releases only with the current value, so the next claim follows at once', async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-a', 5000);
    expect(await leases.release(device, 'srv-a', 7)).toBe(false);
    expect(await leases.release(device, 'srv-b', 1)).toBe(false);
    expect(await t.redis.get(keys.lease(device))).toBe('srv-a:1');
    expect(await leases.release(device, 'srv-a', 1)).toBe(true);
    expect(await t.redis.exists(keys.lease(device))).toBe(0);
    expect(await t.redis.hget(keys.holders, device)).toBeNull();
    expect(await leases.claim(device, 'srv-b', 5000)).toEqual({ outcome: 'claimed', token: 2 });
  });
});

describe('expiry', () => {
  /** Polls until the holder is due by Redis's clock (real TTLs: fake timers do not move Redis's). */
  async function dueHolders(): Promise<string[]> {
    let due: string[] = [];
    for (let i = 0; i < 50 && due.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      due = await leases.findDueHolders(100);
    }
    return due;
  }

  it("lists a holder past its deadline, then its leases, and expires each once; other holders' stay", async () => {
    const [one, two] = [randomUUID(), randomUUID()];
    const other = randomUUID();
    await leases.claim(one, 'srv-a@dead', 150);
    await leases.claim(two, 'srv-a@dead', 150);
    await leases.claim(other, 'srv-b', 60_000);
    expect(await dueHolders()).toEqual(['srv-a@dead']);
    const due = await leases.leasesOf('srv-a@dead');
    expect(due).toEqual(expect.arrayContaining([
      { deviceId: one, holder: 'srv-a@dead:1' },
      { deviceId: two, holder: 'srv-a@dead:1' },
    ]));
    expect(due).toHaveLength(2);
    expect(await leases.expire(due)).toEqual(['expired', 'expired']);
    expect(await t.redis.scard(keys.owned('srv-a'))).toBe(0);
    expect(await t.redis.hget(keys.holders, one)).toBeNull();
    // A second sweeper that read the same holder is told it changed, and does nothing.
    expect(await leases.expire(due)).toEqual(['changed', 'changed']);
    expect(await leases.forgetHolder('srv-a@dead')).toBe(true);
    expect(await leases.findDueHolders(100)).toEqual([]);
    expect(await t.redis.get(keys.lease(other))).toBe('srv-b:1');
  });

  it("a holder's leases exclude another boot's of the same server id", async () => {
    const [old, current] = [randomUUID(), randomUUID()];
    await leases.claim(old, 'srv-a@boot1', 60_000);
    await leases.claim(current, 'srv-a@boot2', 60_000);
    expect(await leases.leasesOf('srv-a@boot1')).toEqual([{ deviceId: old, holder: 'srv-a@boot1:1' }]);
    expect(await leases.leasesOf('srv-a@boot2')).toEqual([{ deviceId: current, holder: 'srv-a@boot2:1' }]);
  });

  it('keeps a due holder while one of its leases is alive, and puts its deadline at that lease\'s expiry', async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-a', 100);
    // Extended behind the holder's back (a PEXPIRE by hand; a foreign GETEX is put back, see renew).
    await t.redis.pexpire(keys.lease(device), 60_000);
    expect(await dueHolders()).toEqual(['srv-a']);
    expect(await leases.expire(await leases.leasesOf('srv-a'))).toEqual(['alive']);
    expect(await leases.forgetHolder('srv-a')).toBe(false);
    expect(Number(await t.redis.zscore(keys.holderDeadlines, 'srv-a')) - (await redisNow())).toBeGreaterThan(55_000);
    expect(await leases.findDueHolders(100)).toEqual([]);
  });

  it('expires a lease a live holder let run out (a failed release) when told its key expired', async () => {
    const [gone, kept] = [randomUUID(), randomUUID()];
    await leases.claim(gone, 'srv-a@b1', 100);
    await leases.claim(kept, 'srv-a@b1', 60_000);
    await new Promise((r) => setTimeout(r, 150));
    // The holder's deadline is the later lease's: it is not due, and the sweep of holders misses it.
    expect(await leases.findDueHolders(100)).toEqual([]);
    expect(await leases.expireOwn([gone, kept], 'srv-a@b1')).toEqual([{ deviceId: gone, holder: 'srv-a@b1:1' }]);
    expect(await t.redis.sismember(keys.owned('srv-a'), gone)).toBe(0);
    expect(await t.redis.hget(keys.holders, gone)).toBeNull();
    // Another holder's leases are not this server's to expire.
    expect(await leases.expireOwn([kept], 'srv-b')).toEqual([]);
  });

  it("a claim after an unswept expiry takes the device out of the old owner's owned set", async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-a', 100);
    await new Promise((r) => setTimeout(r, 150));
    expect(await leases.claim(device, 'srv-b', 60_000)).toMatchObject({ outcome: 'claimed', expired: { serverId: 'srv-a', token: 1 } });
    expect(await t.redis.sismember(keys.owned('srv-a'), device)).toBe(0);
    expect(await t.redis.sismember(keys.owned('srv-b'), device)).toBe(1);
  });

  it('expires a batch in one round trip, each lease on its own terms: orphaned, alive, taken since, or already swept', async () => {
    const [gone, alive, taken] = [randomUUID(), randomUUID(), randomUUID()];
    await leases.claim(gone, 'srv-a', 100);
    await leases.claim(alive, 'srv-a', 60_000);
    await leases.claim(taken, 'srv-a', 100);
    await new Promise((r) => setTimeout(r, 150));
    await goLive('srv-b');
    expect(await leases.claim(taken, 'srv-b', 60_000)).toMatchObject({ outcome: 'claimed', token: 2 });
    const sent = countRoundTrips(t.redis);
    const outcomes = await leases.expire([
      { deviceId: gone, holder: 'srv-a:1' },
      { deviceId: alive, holder: 'srv-a:1' },
      { deviceId: taken, holder: 'srv-a:1' },
      // As a second sweeper that read the same holder would find it: the first expired it.
      { deviceId: gone, holder: 'srv-a:1' },
    ]);
    expect(outcomes).toEqual(['expired', 'alive', 'alive', 'changed']);
    expect(sent.read()).toMatchObject({ roundTrips: 1, scripts: 4 });
    expect(await t.redis.sismember(keys.owned('srv-a'), gone)).toBe(0);
    expect(await t.redis.sismember(keys.owned('srv-a'), alive)).toBe(1);
    expect(await t.redis.get(keys.lease(taken))).toBe('srv-b:2');
  });
});

describe('concurrency', () => {
  it('8 concurrent claimers on 1000 devices: exactly one owner each, tokens strictly increase across handovers', async () => {
    const claimers = Array.from({ length: 8 }, (_, i) => `claimer-${i}`);
    await Promise.all(claimers.map((id) => goLive(id)));
    const connections = claimers.map(() => new Redis(t.url));
    try {
      const stores = connections.map((redis) => createLeaseStore({ redis, keys }));
      const devices = Array.from({ length: 1000 }, () => randomUUID());
      const lastToken = new Map<string, number>();

      for (let round = 0; round < 3; round++) {
        const outcomes = await Promise.all(
          stores.map(async (store, i) => {
            const won: Array<{ deviceId: string; token: number }> = [];
            for (const deviceId of devices) {
              const result = await store.claim(deviceId, claimers[i]!, 60_000);
              if (result.outcome === 'claimed') won.push({ deviceId, token: result.token });
            }
            return won;
          }),
        );
        const winners = new Map<string, number>();
        outcomes.forEach((won, i) => {
          for (const { deviceId, token } of won) {
            expect(winners.has(deviceId)).toBe(false);
            winners.set(deviceId, i);
            expect(token).toBeGreaterThan(lastToken.get(deviceId) ?? 0);
            lastToken.set(deviceId, token);
          }
        });
        expect(winners.size).toBe(devices.length);
        const owned = await Promise.all(claimers.map((id) => t.redis.scard(keys.owned(id))));
        expect(owned.reduce((a, b) => a + b, 0)).toBe(devices.length);

        // Hand every device over: its owner releases it, and the next round claims it afresh.
        await Promise.all(
          outcomes.map((won, i) => Promise.all(won.map(({ deviceId, token }) => stores[i]!.release(deviceId, claimers[i]!, token)))),
        );
      }
    } finally {
      for (const c of connections) c.disconnect();
    }
  });

  it('concurrent placement never reserves more than a server can hold', async () => {
    const servers = ['cap-1', 'cap-2', 'cap-3'];
    await goLive('cap-1', { capacity: 5, priority: 10 });
    await goLive('cap-2', { capacity: 3, priority: 10 });
    await goLive('cap-3', { capacity: 4, priority: 5 });
    // One of them already holds a device: that counts against its capacity.
    await leases.claim(randomUUID(), 'cap-2', 60_000);
    const connections = Array.from({ length: 8 }, () => new Redis(t.url));
    try {
      const stores = connections.map((redis) => createLeaseStore({ redis, keys }));
      const devices = await Promise.all(Array.from({ length: 40 }, () => wantedDevice()));
      const results = await Promise.all(devices.map((d, i) => stores[i % 8]!.place(d, servers, 60_000)));
      const placed = results.filter((r) => r.outcome === 'placed');
      expect(placed).toHaveLength(5 + 2 + 4);
      const perServer = (id: string) => placed.filter((r) => r.outcome === 'placed' && r.serverId === id).length;
      expect([perServer('cap-1'), perServer('cap-2'), perServer('cap-3')]).toEqual([5, 2, 4]);
      expect(results.filter((r) => r.outcome === 'none')).toHaveLength(40 - 11);
      // Each placement was announced in its target's inbox.
      expect(await t.redis.xlen(keys.inbox('cap-1'))).toBe(5);
    } finally {
      for (const c of connections) c.disconnect();
    }
  });

  it('places by priority, then load ratio, then response time, skipping draining and dead servers', async () => {
    await goLive('p-low', { capacity: 10, priority: 1 });
    await goLive('p-high-busy', { capacity: 10, priority: 9 });
    await goLive('p-high-slow', { capacity: 10, priority: 9, responseTimeMs: 80 });
    await goLive('p-high-fast', { capacity: 10, priority: 9, responseTimeMs: 5 });
    await goLive('p-drain', { capacity: 10, priority: 99, draining: 1 });
    await leases.claim(randomUUID(), 'p-high-busy', 60_000);
    const candidates = ['p-low', 'p-high-busy', 'p-high-slow', 'p-high-fast', 'p-drain', 'p-dead'];
    expect(await leases.place(await wantedDevice(), candidates, 60_000)).toEqual({ outcome: 'placed', serverId: 'p-high-fast' });
    expect(await leases.place(await wantedDevice(), candidates, 60_000, 'p-high-fast')).toEqual({
      outcome: 'placed',
      serverId: 'p-high-slow',
    });
    const owned = await wantedDevice();
    await leases.claim(owned, 'p-low', 60_000);
    expect(await leases.place(owned, candidates, 60_000)).toEqual({ outcome: 'owned', serverId: 'p-low', token: 1 });
    const pending = await wantedDevice();
    const first = await leases.place(pending, candidates, 60_000);
    expect(await leases.place(pending, candidates, 60_000)).toEqual({ outcome: 'pending', serverId: (first as { serverId: string }).serverId });
  });

  it('a placement left for a device that is owned meanwhile is dropped, so it cannot stay due forever', async () => {
    await goLive('o-1', { capacity: 10 });
    const device = await wantedDevice();
    // Placed while claims were refused (after a Redis data loss), then the old holder re-asserted
    // its lease under another id: the reservation is never claimed.
    expect(await leases.place(device, ['o-1'], 1)).toEqual({ outcome: 'placed', serverId: 'o-1' });
    await t.redis.set(keys.lease(device), 'o-2:7', 'PX', 60_000);
    await new Promise((r) => setTimeout(r, 5));
    expect(await leases.findDuePlacements(10)).toEqual([{ deviceId: device, target: 'o-1' }]);
    expect(await leases.place(device, ['o-1'], 60_000)).toEqual({ outcome: 'owned', serverId: 'o-2', token: 7 });
    expect(await t.redis.zscore(keys.placements, device)).toBeNull();
    expect(await t.redis.hexists(keys.placementTargets, device)).toBe(0);
    expect(await leases.findDuePlacements(10)).toEqual([]);
  });

  it('a claim by the target consumes its reservation', async () => {
    await goLive('r-1', { capacity: 1 });
    const device = await wantedDevice();
    expect(await leases.place(device, ['r-1'], 60_000)).toEqual({ outcome: 'placed', serverId: 'r-1' });
    expect(await leases.place(await wantedDevice(), ['r-1'], 60_000)).toEqual({ outcome: 'none' });
    expect(await leases.claim(device, 'r-1', 60_000)).toMatchObject({ outcome: 'claimed' });
    expect(await t.redis.zcard(keys.reserved('r-1'))).toBe(0);
    expect(await t.redis.zscore(keys.placements, device)).toBeNull();
    // Still full: the device now counts as owned instead of reserved.
    expect(await leases.place(await wantedDevice(), ['r-1'], 60_000)).toEqual({ outcome: 'none' });
  });

  it('an unclaimed reservation expires and frees the capacity', async () => {
    await goLive('r-2', { capacity: 1 });
    expect(await leases.place(await wantedDevice(), ['r-2'], 100)).toMatchObject({ outcome: 'placed' });
    expect(await leases.place(await wantedDevice(), ['r-2'], 100)).toEqual({ outcome: 'none' });
    await new Promise((r) => setTimeout(r, 150));
    expect(await leases.place(await wantedDevice(), ['r-2'], 100)).toMatchObject({ outcome: 'placed', serverId: 'r-2' });
  });
});

describe('placement timeout', () => {
  it('a target that does not claim in time leaves the device due, and the next placement picks again', async () => {
    await goLive('slow-1', { capacity: 5, priority: 50 });
    await goLive('fast-1', { capacity: 5, priority: 10 });
    const device = await wantedDevice();
    expect(await leases.place(device, ['slow-1', 'fast-1'], 100)).toEqual({ outcome: 'placed', serverId: 'slow-1' });
    expect(await leases.findDuePlacements(100)).toEqual([]);
    // slow-1 dies without claiming.
    await t.redis.del(keys.server('slow-1'));
    await new Promise((r) => setTimeout(r, 150));
    expect(await leases.findDuePlacements(100)).toEqual([{ deviceId: device, target: 'slow-1' }]);
    expect(await leases.place(device, ['slow-1', 'fast-1'], 100)).toEqual({ outcome: 'placed', serverId: 'fast-1' });
    expect(await leases.claim(device, 'fast-1', 5000)).toMatchObject({ outcome: 'claimed' });
    expect(await leases.findDuePlacements(100)).toEqual([]);
  });

  it('a device no server can take stays due, so the sweep retries it', async () => {
    const device = await wantedDevice();
    expect(await leases.place(device, ['nobody-here'], 1000)).toEqual({ outcome: 'none' });
    expect(await leases.findDuePlacements(100)).toContainEqual({ deviceId: device, target: '' });
    await leases.cancelPlacement(device);
    expect(await leases.findDuePlacements(100)).not.toContainEqual({ deviceId: device, target: '' });
  });
});

describe('wanted devices and reservations', () => {
  it('places only wanted devices, and drops the placement of one that stopped being wanted', async () => {
    await goLive('w-1', { capacity: 5 });
    const device = randomUUID();
    expect(await leases.place(device, ['w-1'], 60_000)).toEqual({ outcome: 'unwanted' });
    await leases.setWanted([device], true);
    expect(await leases.place(device, ['w-1'], 60_000)).toEqual({ outcome: 'placed', serverId: 'w-1' });
    await leases.setWanted([device], false);
    expect(await leases.place(device, ['w-1'], 60_000)).toEqual({ outcome: 'unwanted' });
    expect(await t.redis.zscore(keys.placements, device)).toBeNull();
    // The target's late claim finds no reservation and starts nothing.
    expect(await leases.claim(device, 'w-1', 60_000, { viaPlacement: true })).toEqual({ outcome: 'not_reserved' });
    expect(await t.redis.exists(keys.lease(device))).toBe(0);
  });

  it('a placement claim needs a reservation for the claiming server', async () => {
    await goLive('w-2', { capacity: 5, priority: 1 });
    await goLive('w-3', { capacity: 5, priority: 9 });
    const device = await wantedDevice();
    expect(await leases.place(device, ['w-2', 'w-3'], 60_000)).toEqual({ outcome: 'placed', serverId: 'w-3' });
    expect(await leases.claim(device, 'w-2', 60_000, { viaPlacement: true })).toEqual({ outcome: 'not_reserved' });
    expect(await leases.claim(device, 'w-3', 60_000, { viaPlacement: true })).toMatchObject({ outcome: 'claimed' });
  });
});

describe('re-assert after Redis lost its data', () => {
  it('writes back a vanished lease with its token and lifts the fence to it', async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-a', 5000);
    await t.redis.del(keys.lease(device), keys.fence(device));
    expect(await leases.reassert('srv-a', 5000, [{ deviceId: device, token: 1 }])).toEqual([]);
    expect(await t.redis.get(keys.lease(device))).toBe('srv-a:1');
    expect(await t.redis.get(keys.fence(device))).toBe('1');
  });

  it('reports the lease lost when the fence seeded from the store is above its token', async () => {
    // S held the device with token 7 and was paused; T claimed it (token 8, recorded in the
    // store) and drained it; Redis lost its data and the fence was seeded to 8. S wakes up.
    const device = randomUUID();
    await leases.seedFences([{ deviceId: device, leaseEpoch: 8 }]);
    expect(await leases.reassert('srv-a', 5000, [{ deviceId: device, token: 7 }])).toEqual([{ deviceId: device, token: 7, holder: null }]);
    expect(await t.redis.exists(keys.lease(device))).toBe(0);
    expect(await t.redis.sismember(keys.owned('srv-a'), device)).toBe(0);
    expect(await t.redis.get(keys.fence(device))).toBe('8');
    // The next claim gets a token above every one handed out before.
    expect(await leases.claim(device, 'srv-b', 5000)).toMatchObject({ outcome: 'claimed', token: 9 });
  });

  it('drops its own stale value when a promoted replica kept it but the fence is higher', async () => {
    const device = randomUUID();
    await leases.claim(device, 'srv-a', 5000);
    await leases.seedFences([{ deviceId: device, leaseEpoch: 2 }]);
    expect(await leases.reassert('srv-a', 5000, [{ deviceId: device, token: 1 }])).toEqual([{ deviceId: device, token: 1, holder: null }]);
    expect(await t.redis.exists(keys.lease(device))).toBe(0);
    expect(await t.redis.hget(keys.holders, device)).toBeNull();
    expect(await leases.claim(device, 'srv-b', 5000)).toMatchObject({ outcome: 'claimed', token: 3 });
  });
});
