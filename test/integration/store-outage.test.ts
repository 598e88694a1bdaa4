import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLeaseValue } from '../../src/cluster/lease-store.js';
import { STORE_SYNC_SHARDS, storeSyncQueueName } from '../../src/queues/store-sync.js';
import { startTestCluster, waitUntil, type TestCluster } from '../../harness/cluster.js';
import { startTcpProxy, type TcpProxy } from '../../harness/tcp-proxy.js';

// The store stopped for 30 seconds while a server dies: failover runs on Redis alone, the records
// of it wait in the write-behind queue, and once the store is back every one of them arrives, in
// order, once. The servers reach the store through a TCP proxy the test can stop.

const OUTAGE_MS = 30_000;
const DEVICES = 60;

let cluster: TestCluster;
let proxy: TcpProxy;
let db: pg.Pool;

beforeAll(async () => {
  cluster = await startTestCluster();
  const direct = new URL(cluster.db.url);
  proxy = await startTcpProxy(direct.hostname, Number(direct.port || 5432));
  const proxied = new URL(cluster.db.url);
  proxied.port = String(proxy.port);
  db = new pg.Pool({ connectionString: cluster.db.url, max: 2 });
  for (const id of ['outage-a', 'outage-b', 'outage-c']) await cluster.start(id, { DATABASE_URL: proxied.toString() });
});

afterAll(async () => {
  // Our own connections first: dropping the database terminates any still open.
  await db?.end();
  await cluster?.stop();
  await proxy?.close();
});

const pendingSyncJobs = async (): Promise<number> => {
  let pending = 0;
  for (let shard = 0; shard < STORE_SYNC_SHARDS; shard++) {
    const base = `${cluster.keys.bullPrefix}:${storeSyncQueueName(shard)}`;
    const [wait, active] = await Promise.all([cluster.redis.redis.llen(`${base}:wait`), cluster.redis.redis.llen(`${base}:active`)]);
    pending += wait + active;
  }
  return pending;
};

describe('store outage', () => {
  it('failover still happens with the store down; afterwards every record arrives, in order, once', async () => {
    const devices = await cluster.addDevices(DEVICES);
    const byOwner = async () => {
      const counts: Record<string, number> = {};
      for (const owner of (await cluster.owners(devices)).values()) counts[owner] = (counts[owner] ?? 0) + 1;
      return JSON.stringify(counts);
    };
    await waitUntil(async () => (await cluster.connectedCount(devices)) === DEVICES, 90_000, async () => `${await cluster.connectedCount(devices)} connected; leases by owner ${await byOwner()}`);
    // The store has caught up with the steady state before the outage.
    await waitUntil(async () => {
      const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from devices where status = 'connected' and assigned_server_id is not null`);
      return rows[0]!.n === DEVICES;
    }, 30_000);

    const owners = await cluster.owners(devices);
    const victims = devices.filter((d) => owners.get(d) === 'outage-b');
    expect(victims.length).toBeGreaterThan(0);

    await proxy.stop();
    const stoppedAt = Date.now();
    cluster.servers.get('outage-b')!.signal('SIGKILL');
    await cluster.servers.get('outage-b')!.exited;

    // Failover on Redis alone.
    const failoverMs = await waitUntil(
      async () => (await cluster.connectedCount(victims, ['outage-a', 'outage-c'])) === victims.length,
      OUTAGE_MS - 5000,
      async () =>
        `${await cluster.connectedCount(victims, ['outage-a', 'outage-c'])}/${victims.length} moved; leases by owner ${await byOwner()}\n` +
        ['outage-a', 'outage-c']
          .map((id) => {
            const p = cluster.servers.get(id)!;
            return `== ${id} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'running'}):\n${p.output().slice(-3000)}`;
          })
          .join('\n'),
    );
    console.log(`store down: ${victims.length} devices failed over in ${failoverMs} ms after the SIGKILL`);
    // Its records are held in the queue meanwhile, not dropped.
    expect(await pendingSyncJobs()).toBeGreaterThan(0);
    const { rows: stale } = await db.query<{ n: number }>(`select count(*)::int as n from devices where assigned_server_id = 'outage-b'`);
    expect(stale[0]!.n).toBe(victims.length);

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, OUTAGE_MS - (Date.now() - stoppedAt))));
    await proxy.resume();
    const resumedAt = Date.now();

    // Every moved device's new lease reaches the store: assignment, epoch and status.
    const leases = new Map<string, { serverId: string; token: number }>();
    for (const d of victims) {
      const lease = parseLeaseValue((await cluster.redis.redis.get(cluster.keys.lease(d)))!);
      leases.set(d, { serverId: lease!.serverId, token: lease!.token });
    }
    const catchUpMs = await waitUntil(
      async () => {
        const { rows } = await db.query<{ id: string; assigned_server_id: string; lease_epoch: string; status: string }>(
          `select id, assigned_server_id, lease_epoch::text, status from devices where id = any($1::uuid[])`,
          [victims],
        );
        return rows.every((r) => {
          const lease = leases.get(r.id)!;
          return r.assigned_server_id === lease.serverId && Number(r.lease_epoch) === lease.token && r.status === 'connected';
        });
      },
      60_000,
      async () => `${await pendingSyncJobs()} write-behind jobs pending`,
    );
    await waitUntil(async () => (await pendingSyncJobs()) === 0, 30_000);
    console.log(`store back: caught up ${catchUpMs} ms after it returned (${Date.now() - resumedAt} ms until the queue was empty)`);

    // Exactly one claim per new lease, and one 'connected' event per new socket: nothing twice.
    const { rows: claims } = await db.query<{ device_id: string; epoch: string; n: number }>(
      `select device_id, epoch::text, count(*)::int as n from device_lease_events
       where event_type = 'claim' and device_id = any($1::uuid[]) group by device_id, epoch`,
      [victims],
    );
    for (const d of victims) {
      const forLease = claims.filter((c) => c.device_id === d && Number(c.epoch) === leases.get(d)!.token);
      expect(forLease, d).toEqual([{ device_id: d, epoch: String(leases.get(d)!.token), n: 1 }]);
    }
    const { rows: connected } = await db.query<{ device_id: string; n: number }>(
      `select device_id, count(*)::int as n from device_connection_logs
       where event_type = 'connected' and device_id = any($1::uuid[]) and server_id <> 'outage-b'
       group by device_id`,
      [victims],
    );
    expect(connected).toHaveLength(victims.length);
    expect(connected.every((c) => c.n === 1)).toBe(true);
    const { rows: duplicates } = await db.query(
      `select record_id from device_lease_events where record_id is not null group by record_id having count(*) > 1
       union all
       select record_id from device_connection_logs where record_id is not null group by record_id having count(*) > 1`,
    );
    expect(duplicates).toEqual([]);

    // In order: the rows one server wrote for a device were inserted in the order they happened,
    // and their epochs only grow. (Two servers' records for one device, such as the sweeper's
    // expiry and the next owner's claim a few milliseconds later, enter the queue in the order
    // their batches arrive; created_at is the time each happened.)
    const { rows: history } = await db.query<{ stream: string; epoch: string; created_at: Date }>(
      `select device_id || ':' || coalesce(details->>'sweptBy', server_id, '') as stream, epoch::text, created_at
       from device_lease_events where device_id = any($1::uuid[]) order by id`,
      [devices],
    );
    const last = new Map<string, { epoch: number; at: number }>();
    for (const row of history) {
      const previous = last.get(row.stream);
      const current = { epoch: Number(row.epoch), at: row.created_at.getTime() };
      if (previous) {
        expect(current.epoch, row.stream).toBeGreaterThanOrEqual(previous.epoch);
        expect(current.at, row.stream).toBeGreaterThanOrEqual(previous.at);
      }
      last.set(row.stream, current);
    }
    const { rows: statusOrder } = await db.query<{ stream: string; created_at: Date }>(
      `select device_id || ':' || coalesce(server_id, '') as stream, created_at from device_connection_logs where device_id = any($1::uuid[]) order by id`,
      [devices],
    );
    const lastAt = new Map<string, number>();
    for (const row of statusOrder) {
      expect(row.created_at.getTime(), row.stream).toBeGreaterThanOrEqual(lastAt.get(row.stream) ?? 0);
      lastAt.set(row.stream, row.created_at.getTime());
    }
    expect(await cluster.conflicts()).toBe(0);
  });
});
