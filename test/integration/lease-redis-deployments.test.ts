import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisCluster, startRedisSentinel, type LocalRedisCluster, type LocalRedisSentinel, type RedisNodeAddress } from '../../harness/redis-topology.js';
import { runIdOf } from '../../src/cluster/lease-store.js';
import type { RedisTarget } from '../../src/shared/redis.js';
import { startTestCluster, waitUntil, type TestCluster } from '../../harness/cluster.js';

// The lease core's multi-process behaviour on the two deployments users grow into: a 3-master
// Redis Cluster (each master with a replica) and Sentinel (a master, a replica, three sentinels),
// all real redis-server processes on loopback. On each: servers fail over and drain as on one
// Redis, and a master failover (the master SIGKILLed, its replica promoted, possibly without the
// newest writes) ends with every device owned exactly once, no token handed out twice, and the
// servers having noticed it (fences re-seeded on the new master).

// Long enough that a master failover (a few seconds) does not self-fence the servers, so what is
// tested is the re-seed and re-assertion, not a restart from nothing.
const TTL = 10_000;
const DEVICES = 60;
const KEY = 'deployments-internal-key-0123456789abcdef';
const ENV = { LEASE_TTL_MS: String(TTL), SWEEP_INTERVAL_MS: '250', INTERNAL_API_KEY: KEY };

const nodes = (list: string): RedisNodeAddress[] =>
  list.split(',').map((entry) => {
    const [host = '', port = ''] = entry.split(':');
    return { host, port: Number(port) };
  });

/** Run id of the Redis holding the cluster's keys, and the run id fences were seeded on. */
async function incarnation(cluster: TestCluster): Promise<{ runId: string | undefined; seededOn: string | null }> {
  // A transaction with a keyed command runs on the node serving the prefix's slot.
  const results = (await cluster.redis.redis.multi().info('server').get(cluster.keys.incarnation).exec()) ?? [];
  return { runId: runIdOf(String((results[0]?.[1] as string | null | undefined) ?? '')), seededOn: (results[1]?.[1] as string | null) ?? null };
}

async function fences(cluster: TestCluster, devices: readonly string[]): Promise<Map<string, number>> {
  const values = await Promise.all(devices.map((d) => cluster.redis.redis.get(cluster.keys.fence(d))));
  return new Map(devices.map((d, i) => [d, Number(values[i] ?? 0)]));
}

/**
 * Every device is in exactly one live server's owned set, the set of the server its lease names:
 * the bookkeeping placement counts load by agrees with the leases (a promoted replica may have
 * lost some of its writes). A dead server's set is no one's load, so it is not read.
 */
async function expectOwnedOnce(cluster: TestCluster, devices: readonly string[], servers: readonly string[]): Promise<void> {
  const owners = await cluster.owners(devices);
  const sets = await Promise.all(servers.map((s) => cluster.redis.redis.smembers(cluster.keys.owned(s))));
  for (const deviceId of devices) {
    const listedBy = servers.filter((_, i) => sets[i]!.includes(deviceId));
    expect(listedBy, deviceId).toEqual([owners.get(deviceId)]);
  }
}

async function allConnected(cluster: TestCluster, devices: readonly string[], servers: readonly string[], timeoutMs: number, what: string): Promise<void> {
  await waitUntil(
    async () => (await cluster.connectedCount(devices, servers)) === devices.length,
    timeoutMs,
    async () => `${what}: ${await cluster.connectedCount(devices, servers)}/${devices.length} connected on ${servers.join(', ')}`,
  );
}

/**
 * Posts `perDevice` messages to each device through the servers' HTTP API (one device's messages
 * one after another), and waits until the simulated WhatsApp has each exactly once, in order:
 * the outbound BullMQ queues, idempotency keys and message records on this deployment.
 */
async function sendMessages(cluster: TestCluster, devices: readonly string[], servers: readonly string[], perDevice: number): Promise<void> {
  const sent = new Map<string, string[]>();
  await Promise.all(
    devices.map(async (deviceId, d) => {
      const texts: string[] = [];
      sent.set(deviceId, texts);
      for (let i = 0; i < perDevice; i++) {
        const text = `${deviceId.slice(0, 8)}-${i}`;
        const port = cluster.servers.get(servers[(d + i) % servers.length]!)!.port;
        const res = await fetch(`http://127.0.0.1:${port}/api/devices/${deviceId}/messages`, {
          method: 'POST',
          headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'idempotency-key': text },
          body: JSON.stringify({ to: '4915112345678', type: 'text', text }),
        });
        expect(res.status, await res.clone().text()).toBe(202);
        texts.push(text);
      }
    }),
  );
  const logOf = async (deviceId: string) =>
    (await cluster.redis.redis.lrange(cluster.keys.simLog(deviceId), 0, -1)).map((line) => (JSON.parse(line) as { text: string }).text);
  await waitUntil(
    async () => (await Promise.all(devices.map(logOf))).every((log) => log.length >= perDevice),
    TTL * 3,
    async () => {
      // Where a device's messages stand, so a stalled queue shows which part stalled.
      const r = cluster.redis.redis;
      const owners = await cluster.owners(devices);
      const lines: string[] = [];
      for (const d of devices) {
        const base = `${cluster.keys.bullPrefix}:wa-out-${d}`;
        const [wait, active, delayed, marker] = await Promise.all([r.llen(`${base}:wait`), r.llen(`${base}:active`), r.zcard(`${base}:delayed`), r.zcard(`${base}:marker`)]);
        lines.push(`${d} on ${owners.get(d)}: ${(await logOf(d)).length} delivered, jobs wait=${wait} active=${active} delayed=${delayed} marker=${marker}`);
      }
      return `${(await Promise.all(devices.map(logOf))).reduce((n, l) => n + l.length, 0)}/${devices.length * perDevice} delivered\n` + lines.join('\n');
    },
  );
  for (const deviceId of devices) expect(await logOf(deviceId)).toEqual(sent.get(deviceId));
}

/**
 * The same scenario on each deployment: SIGKILL failover, SIGTERM drain, then the Redis master
 * fails over under the remaining servers.
 */
function leaseCoreOn(name: string, deploy: () => Promise<{ target: RedisTarget; failMaster(prefix: string): Promise<void>; stop(): Promise<void> }>) {
  describe(`lease core on ${name}`, () => {
    let deployment: Awaited<ReturnType<typeof deploy>> | undefined;
    let cluster: TestCluster;
    let devices: string[];

    beforeAll(async () => {
      deployment = await deploy();
      cluster = await startTestCluster({ redis: deployment.target, prefixLabel: 'dep' });
    });
    afterAll(async () => {
      await cluster?.stop();
      await deployment?.stop();
    });

    it('servers claim, fail over and drain as on one Redis', async () => {
      await Promise.all(['dp-a', 'dp-b', 'dp-c'].map((id) => cluster.start(id, ENV)));
      devices = await cluster.addDevices(DEVICES);
      await allConnected(cluster, devices, ['dp-a', 'dp-b', 'dp-c'], 60_000, 'start');

      const owners = await cluster.owners(devices);
      const victims = devices.filter((d) => owners.get(d) === 'dp-a');
      expect(victims.length).toBeGreaterThan(0);
      const before = await fences(cluster, victims);
      cluster.servers.get('dp-a')!.signal('SIGKILL');
      await cluster.servers.get('dp-a')!.exited;
      await allConnected(cluster, devices, ['dp-b', 'dp-c'], TTL * 6, 'after SIGKILL');
      const after = await fences(cluster, victims);
      for (const d of victims) expect(after.get(d)).toBeGreaterThan(before.get(d)!);

      cluster.servers.get('dp-b')!.signal('SIGTERM');
      expect(await cluster.servers.get('dp-b')!.exited).toBe(0);
      await allConnected(cluster, devices, ['dp-c'], TTL * 6, 'after drain');
      expect(await cluster.conflicts()).toBe(0);
      await expectOwnedOnce(cluster, devices, ['dp-c']);
    });

    it('a master failover ends with every device owned exactly once and no token granted twice', async () => {
      await cluster.start('dp-d', ENV);
      const beforeOwners = await cluster.owners(devices);
      const beforeFences = await fences(cluster, devices);
      const before = await incarnation(cluster);
      expect(before.seededOn).toBe(before.runId);

      await deployment!.failMaster(cluster.redis.prefix);

      // The servers notice the new run id and re-seed fences on the new master.
      await waitUntil(
        async () => {
          const now = await incarnation(cluster).catch(() => null);
          return now !== null && now.runId !== before.runId && now.seededOn === now.runId;
        },
        TTL * 6,
        async () => JSON.stringify(await incarnation(cluster).catch((err: Error) => err.message)),
      );
      await allConnected(cluster, devices, ['dp-c', 'dp-d'], TTL * 6, 'after the master failover');

      const afterOwners = await cluster.owners(devices);
      const afterFences = await fences(cluster, devices);
      const leaseTokens = await Promise.all(devices.map((d) => cluster.redis.redis.get(cluster.keys.lease(d))));
      devices.forEach((d, i) => {
        const token = Number(leaseTokens[i]!.split(':')[1]);
        // Fences never went back, even if the promoted replica had missed the newest increments...
        expect(afterFences.get(d)).toBeGreaterThanOrEqual(beforeFences.get(d)!);
        // ...and a device that changed hands did so with a token above any granted before.
        if (afterOwners.get(d) !== beforeOwners.get(d)) expect(token).toBeGreaterThan(beforeFences.get(d)!);
        else expect(token).toBeGreaterThanOrEqual(beforeFences.get(d)!);
      });
      // One socket per device throughout: the simulated WhatsApp kicked nobody.
      expect(await cluster.conflicts()).toBe(0);
      await expectOwnedOnce(cluster, devices, ['dp-c', 'dp-d']);

      // The queues work on the new master: messages go out, once each, in order.
      await sendMessages(cluster, devices.slice(0, 10), ['dp-c', 'dp-d'], 5);
      // And the store heard of it (written behind, so it may take a moment).
      const db = new pg.Client({ connectionString: cluster.db.url });
      await db.connect();
      try {
        await waitUntil(async () => {
          const { rows } = await db.query<{ n: string }>(`select count(*)::text as n from server_logs where event = 'redis_reset'`);
          return Number(rows[0]!.n) > 0;
        }, TTL * 3);
      } finally {
        await db.end();
      }
    });
  });
}

leaseCoreOn('a 3-master Redis Cluster', async () => {
  const redis: LocalRedisCluster = await startRedisCluster();
  return {
    target: { mode: 'cluster', nodes: nodes(redis.seeds), tls: false },
    // Every wafleet key is in the slot of the prefix's hash tag, so that slot's master is the one to kill.
    async failMaster(prefix) {
      await redis.failover(`{${prefix}}`, 'kill');
    },
    stop: () => redis.stop(),
  };
});

leaseCoreOn('Sentinel (one master, one replica, three sentinels)', async () => {
  const redis: LocalRedisSentinel = await startRedisSentinel();
  return {
    target: { mode: 'sentinel', sentinels: nodes(redis.sentinels), masterName: redis.masterName, tls: false },
    async failMaster() {
      await redis.failover('kill');
    },
    stop: () => redis.stop(),
  };
});
