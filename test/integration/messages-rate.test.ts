import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, waitUntil, type TestCluster } from '../../harness/cluster.js';

// Ban protection across real processes: a device limited to N messages a minute (its own limit,
// set through the API) never has more than N deliveries in any 60-second window of the simulated
// WhatsApp's log, not even when its owner dies mid-run and another server takes over; a device
// without that limit, queued at the same time, is not held up by it.

const KEY = 'rate-internal-key-0123456789abcdef';
const LIMIT = 10;
const WINDOW_MS = 60_000;
const MESSAGES = 15;
const ENV = { INTERNAL_API_KEY: KEY, MESSAGE_RATE_PER_MINUTE: '6000', RATE_LIMIT_PER_MINUTE: '100000', RATE_LIMIT_IP_PER_MINUTE: '100000' };

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster();
  for (const id of ['rate-a', 'rate-b']) await cluster.start(id, ENV);
});
afterAll(async () => {
  await cluster?.stop();
});

interface Delivery {
  text: string;
  waMessageId: string;
  deliveredAt: number;
  serverId: string;
}

const call = async (port: number, method: string, path: string, body?: unknown) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};

describe('per-device rate limit', () => {
  it(`a device limited to ${LIMIT}/min never exceeds ${LIMIT} in any 60 s of the delivery log, across a SIGKILL of its owner`, async () => {
    const [limited, free] = await cluster.addDevices(2);
    await waitUntil(async () => (await cluster.connectedCount([limited!, free!])) === 2, 30_000);
    const ports = [...cluster.servers.values()].map((s) => s.port);
    expect(await call(ports[1]!, 'PUT', `/api/devices/${limited}/rate-limit`, { messagesPerMinute: LIMIT })).toMatchObject({
      status: 200,
      body: { messagesPerMinute: LIMIT, source: 'device' },
    });

    // Both devices' messages accepted at the same moment, through both servers.
    for (let i = 0; i < MESSAGES; i++) {
      for (const deviceId of [limited!, free!]) {
        const res = await call(ports[i % 2]!, 'POST', `/api/devices/${deviceId}/messages`, { to: '4915112345678', type: 'text', text: `${deviceId.slice(0, 4)}-${i}` });
        expect(res.status).toBe(202);
      }
    }
    const logOf = async (deviceId: string): Promise<Delivery[]> =>
      (await cluster.redis.redis.lrange(cluster.keys.simLog(deviceId), 0, -1)).map((line) => JSON.parse(line) as Delivery);

    // The unlimited device is done while the limited one waits for its next window.
    await waitUntil(async () => (await logOf(free!)).length === MESSAGES && (await logOf(limited!)).length === LIMIT, 30_000);
    expect(await logOf(limited!)).toHaveLength(LIMIT);

    const owner = (await cluster.owners([limited!])).get(limited!)!;
    cluster.servers.get(owner)!.signal('SIGKILL');
    await waitUntil(async () => (await logOf(limited!)).length === MESSAGES, WINDOW_MS + 30_000, async () => `${(await logOf(limited!)).length} delivered`);

    const log = await logOf(limited!);
    expect(log.map((d) => d.text)).toEqual(Array.from({ length: MESSAGES }, (_, i) => `${limited!.slice(0, 4)}-${i}`));
    expect(new Set(log.map((d) => d.waMessageId)).size).toBe(MESSAGES);
    // Any window holding LIMIT + 1 deliveries would have its first and last less than 60 s apart.
    for (let i = 0; i + LIMIT < log.length; i++) {
      expect(log[i + LIMIT]!.deliveredAt - log[i]!.deliveredAt).toBeGreaterThanOrEqual(WINDOW_MS);
    }
    const survivors = new Set(log.slice(LIMIT).map((d) => d.serverId));
    expect(survivors.has(owner)).toBe(false);
    console.log(
      `rate: ${LIMIT} sent at once, the 11th ${log[LIMIT]!.deliveredAt - log[0]!.deliveredAt} ms after the 1st (by ${[...survivors].join(', ')} after ${owner} was killed)`,
    );
    expect(await cluster.conflicts()).toBe(0);
  });
});
