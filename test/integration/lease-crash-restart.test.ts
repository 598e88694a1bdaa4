import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLeaseValue } from '../../src/cluster/lease-store.js';
import { startTestCluster, waitUntil, type TestCluster } from '../../harness/cluster.js';

// pm2 restarts a crashed server at once under the same SERVER_ID. Its predecessor's leases are
// nobody's now (its boot has no connection left in Redis), so the new boot takes them over at
// once, with new tokens, instead of waiting for them to expire.

// Long, so that devices back before it ran out plainly did not wait for the old leases to expire.
const TTL = 10_000;
const DEVICES = 50;
let cluster: TestCluster;

/**
 * Devices whose open simulated socket is the lease holder's own (that boot, that token), the
 * holder not being `deadBoot`: the dead process's leases and sockets look alive until they expire.
 */
async function connectedUnderLease(devices: readonly string[], deadBoot?: string): Promise<number> {
  const [leases, sockets] = await Promise.all([
    cluster.redis.redis.mget(devices.map((d) => cluster.keys.lease(d))),
    cluster.redis.redis.mget(devices.map((d) => cluster.keys.simSocket(d))),
  ]);
  return devices.filter((_, i) => {
    const lease = leases[i] ? parseLeaseValue(leases[i]) : null;
    const [serverId, token, boot] = sockets[i]?.split('#') ?? [];
    return lease !== null && lease.bootId !== deadBoot && serverId === lease.serverId && Number(token) === lease.token && boot?.startsWith(`${lease.bootId}-`);
  }).length;
}

beforeAll(async () => {
  cluster = await startTestCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

describe('crash restart', () => {
  it('a SIGKILLed server restarted under its id takes its devices back at once, with new tokens, and no socket fights', async () => {
    const env = { LEASE_TTL_MS: String(TTL), SIM_KEEPALIVE_TIMEOUT_MS: String(TTL / 2) };
    const first = await cluster.start('cr-a', env);
    const devices = await cluster.addDevices(DEVICES);
    await waitUntil(async () => (await connectedUnderLease(devices)) === DEVICES, 30_000);
    const before = await cluster.redis.redis.mget(devices.map((d) => cluster.keys.lease(d)));
    const deadBoot = parseLeaseValue(before[0]!)!.bootId;
    expect(deadBoot).toMatch(/^[0-9a-f]{12}$/);

    first.signal('SIGKILL');
    await first.exited;
    const killedAt = Date.now();
    const restarted = await cluster.start('cr-a', env);
    const healthyAt = Date.now();
    await waitUntil(async () => (await connectedUnderLease(devices, deadBoot)) === DEVICES, TTL * 3);
    const backAt = Date.now();
    console.log(`crash restart: healthy ${healthyAt - killedAt} ms after the kill, every device back ${backAt - healthyAt} ms after that (TTL ${TTL} ms)`);
    // The old leases had most of a TTL left: nothing waited for them to run out.
    expect(backAt - killedAt).toBeLessThan(TTL - 1000);
    expect(restarted.output()).toContain(`took over ${DEVICES} leases of this server's previous boot ${deadBoot}`);

    const after = await cluster.redis.redis.mget(devices.map((d) => cluster.keys.lease(d)));
    after.forEach((value, i) => {
      const now = parseLeaseValue(value!)!;
      const then = parseLeaseValue(before[i]!)!;
      expect(now.serverId).toBe('cr-a');
      expect(now.bootId).not.toBe(deadBoot);
      expect(now.token).toBeGreaterThan(then.token);
    });
    // The dead process's sockets closed with it: the new ones replaced nothing.
    expect(await cluster.conflicts()).toBe(0);
  });
});
