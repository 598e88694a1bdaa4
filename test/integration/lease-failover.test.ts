import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';

const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

describe('failover', () => {
  it('3 servers with 300 devices: SIGKILL one, and all its devices connect on the others', async () => {
    await Promise.all(['fo-a', 'fo-b', 'fo-c'].map((id) => cluster.start(id)));
    const devices = await cluster.addDevices(300);
    await waitUntil(async () => (await cluster.connectedCount(devices)) === 300, 60_000, async () => `${await cluster.connectedCount(devices)}/300 connected`);

    const owners = await cluster.owners(devices);
    const victimDevices = devices.filter((d) => owners.get(d) === 'fo-a');
    expect(victimDevices.length).toBeGreaterThan(0);
    const tokensBefore = new Map(
      await Promise.all(victimDevices.map(async (d) => [d, Number(await cluster.redis.redis.get(cluster.keys.fence(d)))] as const)),
    );

    cluster.servers.get('fo-a')!.signal('SIGKILL');
    await cluster.servers.get('fo-a')!.exited;
    const lastRenewal = Number(await cluster.redis.redis.hget(cluster.keys.server('fo-a'), 'heartbeatAt'));

    await waitUntil(
      async () => (await cluster.connectedCount(victimDevices, ['fo-b', 'fo-c'])) === victimDevices.length,
      TTL * 10,
      async () => `${await cluster.connectedCount(victimDevices, ['fo-b', 'fo-c'])}/${victimDevices.length} moved`,
    );
    const recoveredAfterMs = Date.now() - lastRenewal;
    console.log(
      `failover: ${victimDevices.length} devices of a SIGKILLed server reconnected ${recoveredAfterMs} ms after its last renewal ` +
        `(TTL ${TTL} ms, target TTL + 1 s = ${TTL + 1000} ms; polled every 50 ms)`,
    );

    // Every device still connected exactly once, on a live server, with a higher token.
    expect(await cluster.connectedCount(devices, ['fo-b', 'fo-c'])).toBe(300);
    for (const d of victimDevices) {
      expect(Number(await cluster.redis.redis.get(cluster.keys.fence(d)))).toBeGreaterThan(tokensBefore.get(d)!);
    }
    expect(await cluster.conflicts()).toBe(0);

    // The record follows: the expiry and the new claims are in device_lease_events, and the
    // store's assignment names a live server with the new epoch.
    await waitUntil(async () => {
      const moved = await Promise.all(victimDevices.map((d) => cluster.store.getDevice(d)));
      return moved.every((d) => d && d.assignedServerId !== 'fo-a' && d.assignedServerId !== null);
    }, 10_000);
    // backend_servers follows the live load within a few seconds (STORE_HEALTH_INTERVAL_MS).
    await waitUntil(async () => {
      const servers = await cluster.store.listServers();
      const load = (id: string) => servers.find((s) => s.id === id)?.currentLoad ?? -1;
      const fresh = servers.filter((s) => s.id !== 'fo-a').every((s) => Date.now() - (s.lastHealthCheck?.getTime() ?? 0) < 5000);
      return fresh && load('fo-b') + load('fo-c') === 300;
    }, 10_000);
  });
});
