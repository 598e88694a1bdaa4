import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLeaseStore } from '../../src/cluster/lease-store.js';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';
import { freePort, startEphemeralRedis } from '../../harness/local-redis.js';

const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
const RENEW = Math.floor(TTL / 3);
let cluster: TestCluster;

beforeEach(async () => {
  cluster = await startTestCluster();
});
afterEach(async () => {
  await cluster?.stop();
});

async function leaseEvents(deviceIds: readonly string[], type: string): Promise<Array<{ device_id: string; server_id: string; epoch: string }>> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: cluster.db.url });
  await client.connect();
  try {
    const { rows } = await client.query('select device_id, server_id, epoch::text from device_lease_events where event_type = $1 and device_id = any($2::uuid[])', [
      type,
      deviceIds,
    ]);
    return rows;
  } finally {
    await client.end();
  }
}

describe('lease handover between real server processes', () => {
  it('SIGTERM a server holding 200 devices: all move, nothing is logged out, its key is gone, it exits 0', async () => {
    const draining = await cluster.start('dr-a');
    const devices = await cluster.addDevices(200);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['dr-a'])) === 200, 60_000);
    await Promise.all([cluster.start('dr-b'), cluster.start('dr-c')]);

    const started = Date.now();
    draining.signal('SIGTERM');
    await waitUntil(
      async () => (await cluster.connectedCount(devices, ['dr-b', 'dr-c'])) === 200,
      30_000,
      async () => `${await cluster.connectedCount(devices, ['dr-b', 'dr-c'])}/200 moved`,
    );
    console.log(`drain: 200 devices connected elsewhere ${Date.now() - started} ms after SIGTERM`);
    expect(await draining.exited).toBe(0);
    expect(await cluster.redis.redis.exists(cluster.keys.server('dr-a'))).toBe(0);
    expect(await cluster.redis.redis.sismember(cluster.keys.servers, 'dr-a')).toBe(0);
    expect(await cluster.conflicts()).toBe(0);
    const statuses = await Promise.all(devices.map((d) => cluster.redis.redis.hget(cluster.keys.deviceStatus(d), 'status')));
    expect(statuses.filter((s) => s === 'logged_out')).toEqual([]);
    expect(await leaseEvents(devices, 'drain')).toHaveLength(200);
    expect((await cluster.store.getServer('dr-a'))?.isActive).toBe(false);
  });

  it('a lease taken away from its owner is noticed within one heartbeat, and its device stops', async () => {
    await cluster.start('st-a');
    const [device] = await cluster.addDevices(1);
    await waitUntil(async () => (await cluster.connectedCount([device!])) === 1, 30_000);
    const before = await cluster.redis.redis.get(cluster.keys.lease(device!));

    // A thief (this test, acting as server st-thief) deletes the lease and claims it.
    await cluster.redis.redis.multi().hset(cluster.keys.server('st-thief'), 'capacity', 10).pexpire(cluster.keys.server('st-thief'), 60_000).exec();
    const thief = createLeaseStore({ redis: cluster.redis.redis, keys: cluster.keys });
    await cluster.redis.redis.del(cluster.keys.lease(device!));
    const stolen = await thief.claim(device!, 'st-thief', 60_000);
    expect(stolen.outcome).toBe('claimed');

    const noticedIn = await waitUntil(async () => (await cluster.redis.redis.exists(cluster.keys.simSocket(device!))) === 0, RENEW * 2 + 1000);
    console.log(`lease theft noticed and the socket closed ${noticedIn} ms later (renew interval ${RENEW} ms); lease was ${before}`);
    await waitUntil(async () => (await leaseEvents([device!], 'lost')).length === 1, 10_000);
    expect(await cluster.redis.redis.get(cluster.keys.lease(device!))).toMatch(/^st-thief:/);
    await cluster.redis.redis.del(cluster.keys.server('st-thief'));
  });

  it('SIGSTOP the owner of 100 devices past the TTL: others take over, and on SIGCONT it writes nothing that counts', async () => {
    const paused = await cluster.start('ps-a');
    const devices = await cluster.addDevices(100);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['ps-a'])) === 100, 60_000);
    await cluster.start('ps-b');

    paused.signal('SIGSTOP');
    await waitUntil(
      async () => (await cluster.connectedCount(devices, ['ps-b'])) === 100,
      TTL * 10,
      async () => `${await cluster.connectedCount(devices, ['ps-b'])}/100 on ps-b`,
    );
    paused.signal('SIGCONT');
    // Give the woken server time to run every timer it missed, and a few heartbeats more.
    await new Promise((r) => setTimeout(r, TTL));
    await waitUntil(async () => paused.output().includes('lease lost'), TTL * 3);

    expect(await cluster.conflicts()).toBe(0);
    expect(await cluster.connectedCount(devices, ['ps-b'])).toBe(100);
    // The live status of every device is ps-b's, in Redis and in the store.
    const statusOwners = await Promise.all(devices.map((d) => cluster.redis.redis.hget(cluster.keys.deviceStatus(d), 'serverId')));
    expect(new Set(statusOwners)).toEqual(new Set(['ps-b']));
    await waitUntil(async () => {
      const rows = await Promise.all(devices.map((d) => cluster.store.getDevice(d)));
      return rows.every((row) => row?.assignedServerId === 'ps-b' && row.status === 'connected');
    }, 10_000);
    expect((await cluster.owners(devices)).size).toBe(100);
    expect(new Set((await cluster.owners(devices)).values())).toEqual(new Set(['ps-b']));
  });

  it('Redis restarts with its data lost: the cluster recovers with no device owned twice and tokens above the old ones', async () => {
    // A Redis of this test's own, so it can really be restarted (the shared one cannot).
    const port = await freePort();
    let own = await startEphemeralRedis(port);
    await cluster.stop();
    cluster = await startTestCluster({ redis: `redis://127.0.0.1:${port}` });
    try {
      await Promise.all([cluster.start('rl-a'), cluster.start('rl-b')]);
      const devices = await cluster.addDevices(100);
      await waitUntil(async () => (await cluster.connectedCount(devices)) === 100, 60_000);
      // The store has every claim's epoch before Redis goes.
      await waitUntil(async () => (await Promise.all(devices.map((d) => cluster.store.getDevice(d)))).every((d) => (d?.leaseEpoch ?? 0) > 0), 10_000);
      const tokensBefore = await cluster.redis.redis.mget(devices.map((d) => cluster.keys.fence(d)));

      await own.stop(); // no persistence: everything is gone, and the run id changes
      own = await startEphemeralRedis(port);

      await waitUntil(
        async () => (await cluster.connectedCount(devices)) === 100,
        TTL * 10,
        async () => `${await cluster.connectedCount(devices)}/100 connected again`,
      );
      expect(await cluster.conflicts()).toBe(0);
      const tokensAfter = await cluster.redis.redis.mget(devices.map((d) => cluster.keys.fence(d)));
      devices.forEach((_, i) => expect(Number(tokensAfter[i])).toBeGreaterThanOrEqual(Number(tokensBefore[i])));
      // A new claim hands out a token above every old one: take one device's lease away and let
      // the cluster claim it afresh.
      const device = devices[0]!;
      await cluster.redis.redis.del(cluster.keys.lease(device));
      await waitUntil(async () => (await cluster.connectedCount([device])) === 1, TTL * 10);
      const holder = (await cluster.redis.redis.get(cluster.keys.lease(device)))!;
      expect(Number(holder.split(':')[1])).toBeGreaterThan(Number(tokensBefore[0]));
      expect([...cluster.servers.values()].some((p) => p.output().includes('Redis lost or reset its data'))).toBe(true);
    } finally {
      await cluster.stop();
      await own.stop();
    }
  });
});
