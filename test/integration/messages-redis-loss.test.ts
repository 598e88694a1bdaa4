import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEphemeralRedis } from '../../harness/local-redis.js';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';

// Redis loses its data (stopped without persistence, started empty) while messages are still
// queued: every message answered 202 is still delivered, once, in accept order per device, ahead
// of those accepted after the loss; messages delivered before the loss are not delivered again.
// Real server processes, the simulated WhatsApp, a Redis of the test's own (so it can really be
// restarted) and a real PostgreSQL.

const KEY = 'redis-loss-internal-key-0123456789abcdef';
const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
const ENV = { INTERNAL_API_KEY: KEY, MESSAGE_RATE_PER_MINUTE: '6000', RATE_LIMIT_PER_MINUTE: '1000000', RATE_LIMIT_IP_PER_MINUTE: '1000000' };
const BEFORE = 6;
const AFTER = 3;

let cluster: TestCluster;
let own: Awaited<ReturnType<typeof startEphemeralRedis>>;
let port: number;

beforeAll(async () => {
  port = await freePort();
  own = await startEphemeralRedis(port);
  cluster = await startTestCluster({ redis: `redis://127.0.0.1:${port}` });
});
afterAll(async () => {
  await cluster?.stop();
  await own?.stop();
});

interface Delivery {
  waMessageId: string;
  text: string;
}

describe('outbound messages when Redis loses its data', () => {
  it('delivers every accepted message once, in accept order, after Redis restarts empty', async () => {
    const servers = await Promise.all(['loss-a', 'loss-b'].map((id) => cluster.start(id, ENV)));
    const api = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
      // Any server; retried on the other one (a server may be busy re-seeding after the loss).
      for (let attempt = 0; ; attempt++) {
        const server = servers[attempt % servers.length]!;
        const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
          method,
          headers: { authorization: `Bearer ${KEY}`, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
          body: body ? JSON.stringify(body) : undefined,
        }).catch(() => null);
        if (res && res.status < 500) return res;
        if (attempt > 50) throw new Error(`${method} ${path}: ${res?.status ?? 'no answer'}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    const userId = crypto.randomUUID();
    // `sent` runs before the loss and delivers its first messages; `held` and `late` are not
    // connected yet, so theirs wait in Redis when it goes.
    const devices: string[] = [];
    for (const name of ['sent', 'held', 'late']) {
      const res = await api('POST', '/api/devices', { userId, name });
      expect(res.status).toBe(201);
      devices.push(((await res.json()) as { id: string }).id);
    }
    const [sent] = devices as [string, string, string];
    const accepted = new Map<string, string[]>(devices.map((d) => [d, []]));
    const post = async (deviceId: string, text: string) => {
      const res = await api('POST', `/api/devices/${deviceId}/messages`, { to: '4915112345678', type: 'text', text }, { 'idempotency-key': text });
      expect(res.status).toBe(202);
      accepted.get(deviceId)!.push(text);
    };
    const logOf = async (deviceId: string): Promise<Delivery[]> =>
      (await cluster.redis.redis.lrange(cluster.keys.simLog(deviceId), 0, -1)).map((line) => JSON.parse(line) as Delivery);

    for (let i = 0; i < BEFORE; i++) for (const d of devices) await post(d, `${d.slice(0, 8)}-before-${i}`);
    expect((await api('POST', `/api/devices/${sent}/connect`)).status).toBe(202);
    await waitUntil(async () => (await logOf(sent)).length === BEFORE, TTL * 10, async () => `${(await logOf(sent)).length}/${BEFORE} delivered`);
    // Their ends reached the store (written behind): the restore must not send them again.
    const pending = async () => (await cluster.store.listPendingMessages(null, 1000)).filter((m) => devices.includes(m.deviceId));
    await waitUntil(async () => (await pending()).every((m) => m.deviceId !== sent), 10_000);
    expect((await pending()).length).toBe(BEFORE * 2);
    // The simulated WhatsApp lives in the same Redis: what it delivered so far goes with it.
    const deliveredBefore = new Map(await Promise.all(devices.map(async (d) => [d, await logOf(d)] as const)));

    await own.stop(); // no persistence: every record, job and idempotency key is gone
    own = await startEphemeralRedis(port);
    await waitUntil(
      async () => servers.some((s) => s.output().includes('pending messages put back')),
      TTL * 10,
      () => 'no server restored the pending messages',
    );

    // Accepted after the loss: these go behind the restored ones.
    for (let i = 0; i < AFTER; i++) for (const d of devices) await post(d, `${d.slice(0, 8)}-after-${i}`);
    for (const d of devices.slice(1)) expect((await api('POST', `/api/devices/${d}/connect`)).status).toBe(202);

    const deliveredOf = async (d: string) => [...deliveredBefore.get(d)!, ...(await logOf(d))];
    await waitUntil(
      async () => (await Promise.all(devices.map(async (d) => (await deliveredOf(d)).length >= accepted.get(d)!.length))).every(Boolean),
      TTL * 20,
      async () => (await Promise.all(devices.map(async (d) => `${(await deliveredOf(d)).length}/${accepted.get(d)!.length}`))).join(', '),
    );
    // Anything sent twice would arrive a little later: give it the time to.
    await new Promise((r) => setTimeout(r, 1000));
    for (const d of devices) {
      const log = await deliveredOf(d);
      expect(log.map((e) => e.text)).toEqual(accepted.get(d));
      expect(new Set(log.map((e) => e.waMessageId)).size).toBe(log.length);
    }
    // Their ends reach the store too: nothing is left pending.
    await waitUntil(async () => (await pending()).length === 0, 10_000);
    expect(await cluster.conflicts()).toBe(0);
  }, 240_000);
});
