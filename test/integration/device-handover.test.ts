import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';

// A device that moves between real server processes keeps its WhatsApp session: the next owner
// starts from the same creds (the simulated phone is not asked to link it again), whether it
// finds them in Redis or, when Redis lost them, in the store's snapshot.

const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
let cluster: TestCluster;

beforeEach(async () => {
  cluster = await startTestCluster();
});
afterEach(async () => {
  await cluster?.stop();
});

async function connectionLog(deviceIds: readonly string[]) {
  const client = new pg.Client({ connectionString: cluster.db.url });
  await client.connect();
  try {
    const { rows } = await client.query<{ device_id: string; server_id: string; event_type: string; details: Record<string, unknown> }>(
      'select device_id, server_id, event_type, details from device_connection_logs where device_id = any($1::uuid[]) order by id',
      [deviceIds],
    );
    return rows;
  } finally {
    await client.end();
  }
}

const pairings = async (deviceIds: readonly string[]) => (await cluster.redis.redis.hmget(cluster.keys.simPairings, ...deviceIds)).map(Number);

async function linkedCreds(deviceIds: readonly string[]) {
  const raw = await Promise.all(deviceIds.map((d) => cluster.redis.redis.hget(cluster.keys.authState(d), 'creds')));
  return raw.map((r) => (r ? (JSON.parse(r) as { me?: { id: string }; additionalData?: { simulated?: { linkedBy: string } } }) : null));
}

describe('device handover between real server processes', () => {
  it('drain: the next owner resumes every device from the same creds, with no new QR', async () => {
    const a = await cluster.start('dh-a');
    const devices = await cluster.addDevices(5);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['dh-a'])) === 5, 60_000);
    expect(await pairings(devices)).toEqual([1, 1, 1, 1, 1]);
    const before = await linkedCreds(devices);
    expect(before.every((c) => c?.me?.id && c.additionalData?.simulated?.linkedBy === 'dh-a')).toBe(true);

    await cluster.start('dh-b');
    a.signal('SIGTERM');
    await waitUntil(
      async () => (await cluster.connectedCount(devices, ['dh-b'])) === 5,
      30_000,
      async () => `${await cluster.connectedCount(devices, ['dh-b'])}/5 on dh-b`,
    );
    expect(await a.exited).toBe(0);

    // Same creds (the link made on dh-a), and the phone was never asked again.
    expect(await pairings(devices)).toEqual([1, 1, 1, 1, 1]);
    expect((await linkedCreds(devices)).map((c) => c?.me?.id)).toEqual(before.map((c) => c?.me?.id));
    await waitUntil(async () => (await connectionLog(devices)).filter((r) => r.server_id === 'dh-b' && r.event_type === 'connected').length === 5, 10_000);
    const onB = (await connectionLog(devices)).filter((r) => r.server_id === 'dh-b');
    expect(onB.filter((r) => r.event_type === 'connected').map((r) => r.details.session)).toEqual(Array(5).fill('resumed'));
    expect(onB.filter((r) => r.event_type === 'qr' || r.event_type === 'pairing_code')).toEqual([]);
    expect(await cluster.conflicts()).toBe(0);
  });

  it('failover after Redis lost the hot copies: the next owner restores the store snapshot, no new QR', async () => {
    const a = await cluster.start('fo-a');
    const devices = await cluster.addDevices(3);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['fo-a'])) === 3, 60_000);
    // The snapshots (written behind) hold the linked creds.
    await waitUntil(async () => {
      const sessions = await Promise.all(devices.map((d) => cluster.store.getSession(d)));
      return sessions.every((s) => (s?.creds as { me?: unknown } | undefined)?.me !== undefined);
    }, 10_000);
    const before = await linkedCreds(devices);

    await cluster.start('fo-b');
    await cluster.redis.redis.del(...devices.map((d) => cluster.keys.authState(d)));
    a.signal('SIGKILL');
    await waitUntil(
      async () => (await cluster.connectedCount(devices, ['fo-b'])) === 3,
      TTL * 10,
      async () => `${await cluster.connectedCount(devices, ['fo-b'])}/3 on fo-b`,
    );
    expect(await pairings(devices)).toEqual([1, 1, 1]);
    expect((await linkedCreds(devices)).map((c) => c?.me?.id)).toEqual(before.map((c) => c?.me?.id));
    await waitUntil(async () => (await connectionLog(devices)).filter((r) => r.server_id === 'fo-b' && r.event_type === 'connected').length === 3, 10_000);
    const onB = (await connectionLog(devices)).filter((r) => r.server_id === 'fo-b');
    expect(onB.filter((r) => r.event_type === 'session_restored')).toHaveLength(3);
    expect(onB.filter((r) => r.event_type === 'connected').map((r) => r.details.session)).toEqual(Array(3).fill('restored'));
    expect(onB.filter((r) => r.event_type === 'qr')).toEqual([]);
  });
});
