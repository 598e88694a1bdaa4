import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, waitUntil, type TestCluster } from '../../harness/cluster.js';

const HOLD_MS = 4000;
const REBALANCE_ENV = { REBALANCE_INTERVAL_MS: '1000', REBALANCE_MIN_HOLD_MS: String(HOLD_MS) };
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

describe('rebalance', () => {
  it('one server with 300 devices, two more join: loads converge to within 10% of even, and no device moves twice within the hold time', async () => {
    await cluster.start('rb-a', REBALANCE_ENV);
    const devices = await cluster.addDevices(300);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['rb-a'])) === 300, 60_000);
    await Promise.all([cluster.start('rb-b', REBALANCE_ENV), cluster.start('rb-c', REBALANCE_ENV)]);

    const loads = async () =>
      Promise.all(['rb-a', 'rb-b', 'rb-c'].map((id) => cluster.redis.redis.scard(cluster.keys.owned(id))));
    const tookMs = await waitUntil(
      async () => (await loads()).every((n) => Math.abs(n - 100) <= 10) && (await cluster.connectedCount(devices)) === 300,
      60_000,
      async () => `loads ${(await loads()).join('/')}, ${await cluster.connectedCount(devices)} connected`,
    );
    console.log(`rebalance: loads ${(await loads()).join('/')} after ${tookMs} ms`);
    expect(await cluster.conflicts()).toBe(0);

    // Every arrival of a device on a server is a claim; two arrivals of one device are never
    // closer than the hold time (the first claim is the initial placement).
    await new Promise((r) => setTimeout(r, 1000));
    const client = new pg.Client({ connectionString: cluster.db.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ device_id: string; at: string }>(
        `select device_id, (extract(epoch from created_at) * 1000)::bigint::text as at
         from device_lease_events where event_type = 'claim' order by device_id, created_at`,
      );
      const byDevice = new Map<string, number[]>();
      for (const row of rows) byDevice.set(row.device_id, [...(byDevice.get(row.device_id) ?? []), Number(row.at)]);
      let moved = 0;
      for (const times of byDevice.values()) {
        if (times.length > 1) moved += 1;
        for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(HOLD_MS - 500);
      }
      expect(moved).toBeGreaterThanOrEqual(180);
      const rebalances = await client.query(`select count(*)::int as n from device_lease_events where event_type = 'rebalance'`);
      expect(rebalances.rows[0].n).toBe(moved);
    } finally {
      await client.end();
    }
  });
});
