import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';
import { startTcpProxy, type TcpProxy } from '../../harness/tcp-proxy.js';

const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
let cluster: TestCluster;
let proxy: TcpProxy;

beforeAll(async () => {
  cluster = await startTestCluster();
  const url = new URL(cluster.redis.url);
  proxy = await startTcpProxy(url.hostname, Number(url.port || 6379));
});
afterAll(async () => {
  await cluster?.stop();
  await proxy?.close();
});

async function health(port: number): Promise<Record<string, unknown>> {
  return (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as Record<string, unknown>;
}

describe('self-fencing', () => {
  it('a server cut off from Redis stops every device before its leases can expire, and resumes once it renews again', async () => {
    // Only this server reaches Redis through the proxy; the test and the store do not.
    const cut = await cluster.start('sf-a', { REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    const devices = await cluster.addDevices(20);
    // A simulated socket shows in Redis from the moment it opens (a new device is linked over it),
    // before the runtime counts it connected: wait for both.
    await waitUntil(async () => (await cluster.connectedCount(devices, ['sf-a'])) === 20 && (await health(cut.port)).activeConnections === 20, 30_000);
    expect(await health(cut.port)).toMatchObject({ status: 'ok', leases: 20, activeConnections: 20 });

    proxy.blackhole(true);
    // Self-fence at 2/3 TTL after the last renewal sent: every device stops, while the leases in
    // Redis are still valid (nobody else could have claimed yet).
    const fencedAfter = await waitUntil(async () => (await health(cut.port)).activeConnections === 0, TTL * 2);
    const leasesLeft = await Promise.all(devices.map((d) => cluster.redis.redis.pttl(cluster.keys.lease(d))));
    console.log(`self-fence: devices stopped ${fencedAfter} ms after the cut; shortest lease then had ${Math.min(...leasesLeft)} ms left`);
    expect(fencedAfter).toBeLessThan(TTL);
    expect(await health(cut.port)).toMatchObject({ status: 'degraded', activeConnections: 0 });
    expect(cut.output()).toContain('self-fenced');

    // A short cut: once it renews again it runs its devices again, nobody having taken them.
    proxy.blackhole(false);
    await waitUntil(async () => {
      const report = await health(cut.port);
      return report.status === 'ok' && report.activeConnections === 20;
    }, TTL * 5);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['sf-a'])) === 20, TTL * 5);

    proxy.blackhole(true);
    const cutAt = Date.now();
    await waitUntil(async () => (await health(cut.port)).activeConnections === 0, TTL * 2);

    // A long cut: the leases expire, and the devices move once a healthy server exists.
    await cluster.start('sf-b');
    await waitUntil(async () => (await cluster.connectedCount(devices, ['sf-b'])) === 20, TTL * 10);
    expect(Date.now() - cutAt).toBeGreaterThanOrEqual(TTL - 200);

    proxy.blackhole(false);
    // The healed server renews again, learns that its leases are lost, and stays out of the way.
    await waitUntil(async () => (await health(cut.port)).status === 'ok', TTL * 5);
    expect(await health(cut.port)).toMatchObject({ leases: 0, activeConnections: 0 });
    expect(await cluster.conflicts()).toBe(0);
    expect(await cluster.connectedCount(devices, ['sf-b'])).toBe(20);
  });
});
