import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';
import type { ServerProcess } from '../../harness/processes.js';

// Messages through real server processes and the simulated WhatsApp while devices move mid-run
// (a server SIGKILLed, a server drained with SIGTERM, a server joining and rebalance moving
// devices to it): every accepted message is delivered exactly once (by WhatsApp message id, in
// the simulated delivery log), in the order it was accepted for its device.

const KEY = 'messages-internal-key-0123456789abcdef';
const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
// 10,000 messages per run: 100 devices x 100.
const DEVICES = 100;
const PER_DEVICE = 100;
const ENV = {
  INTERNAL_API_KEY: KEY,
  MESSAGE_RATE_PER_MINUTE: '6000',
  RATE_LIMIT_PER_MINUTE: '1000000',
  RATE_LIMIT_IP_PER_MINUTE: '1000000',
  REBALANCE_INTERVAL_MS: '1000',
  REBALANCE_MIN_HOLD_MS: '1000',
};
let cluster: TestCluster;
let servers: ServerProcess[] = [];

beforeEach(async () => {
  cluster = await startTestCluster();
});
afterEach(async () => {
  await cluster?.stop();
  servers = [];
});

interface Delivery {
  waMessageId: string;
  text: string;
  deliveredAt: number;
}

type Disruption = 'SIGKILL' | 'SIGTERM' | 'rebalance';

describe('outbound messages while devices move', () => {
  it.each<[Disruption, number, number]>([
    ['SIGKILL', DEVICES, PER_DEVICE],
    ['SIGTERM', DEVICES, PER_DEVICE],
    ['rebalance', DEVICES, PER_DEVICE],
  ])('%s halfway through: %i devices x %i messages on 3 servers, each delivered once, in order', async (disruption, DEVICES, PER_DEVICE) => {
    // For a rebalance the third server joins halfway; otherwise all three run from the start.
    const initial = disruption === 'rebalance' ? ['msg-a', 'msg-b'] : ['msg-a', 'msg-b', 'msg-c'];
    servers = await Promise.all(initial.map((id) => cluster.start(id, ENV)));
    const devices = await cluster.addDevices(DEVICES);
    await waitUntil(async () => (await cluster.connectedCount(devices)) === DEVICES, 60_000);
    const victim = 'msg-a';

    // Each device's messages are posted one after another (so "the order accepted" is defined),
    // devices in parallel, through all three servers in turn; the victim dies halfway.
    const accepted = new Map<string, Array<{ id: string; text: string; at: number }>>();
    let posted = 0;
    let killed = false;
    // Posting pauses while a joining server comes up and rebalance hands it its first devices,
    // so the second half of the messages really crosses a move.
    let gate: Promise<unknown> = Promise.resolve();
    const started = Date.now();
    await Promise.all(
      devices.map(async (deviceId, d) => {
        const list: Array<{ id: string; text: string; at: number }> = [];
        accepted.set(deviceId, list);
        for (let i = 0; i < PER_DEVICE; i++) {
          await gate;
          const text = `${deviceId.slice(0, 8)}-${i}`;
          let res: Response | undefined;
          for (let attempt = 0; attempt < 5 && !res; attempt++) {
            const alive = servers.filter((s) => !(killed && disruption !== 'rebalance' && s === servers[0]));
            const server = alive[(d + i + attempt) % alive.length]!;
            try {
              res = await fetch(`http://127.0.0.1:${server.port}/api/devices/${deviceId}/messages`, {
                method: 'POST',
                headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'idempotency-key': text },
                body: JSON.stringify({ to: '4915112345678', type: 'text', text }),
              });
            } catch {
              // The victim died under this request: the idempotency key makes the retry safe.
              await new Promise((r) => setTimeout(r, 100));
            }
          }
          expect(res!.status).toBe(202);
          list.push({ id: ((await res!.json()) as { id: string }).id, text, at: Date.now() });
          posted += 1;
          if (!killed && posted >= (DEVICES * PER_DEVICE) / 2) {
            killed = true;
            if (disruption === 'rebalance') {
              gate = cluster
                .start('msg-c', ENV)
                .then(() => waitUntil(async () => (await cluster.redis.redis.scard(cluster.keys.owned('msg-c'))) > 0, 30_000));
            } else servers[0]!.signal(disruption);
          }
        }
      }),
    );
    const acceptedIn = Date.now() - started;

    const logOf = async (deviceId: string): Promise<Delivery[]> =>
      (await cluster.redis.redis.lrange(cluster.keys.simLog(deviceId), 0, -1)).map((line) => JSON.parse(line) as Delivery);
    await waitUntil(
      async () => (await Promise.all(devices.map(logOf))).every((log) => log.length >= PER_DEVICE),
      TTL * 20,
      async () => `${(await Promise.all(devices.map(logOf))).reduce((n, l) => n + l.length, 0)}/${DEVICES * PER_DEVICE} delivered`,
    );
    const finished = Date.now();

    const latencies: number[] = [];
    for (const deviceId of devices) {
      const log = await logOf(deviceId);
      const expected = accepted.get(deviceId)!;
      // Exactly once, and in the order accepted.
      expect(log.map((entry) => entry.text)).toEqual(expected.map((m) => m.text));
      expect(new Set(log.map((entry) => entry.waMessageId)).size).toBe(PER_DEVICE);
      // Both ends by Redis's clock: accepted (the record) to delivered (the simulated log).
      const acceptedAt = await Promise.all(expected.map((m) => cluster.redis.redis.hget(cluster.keys.message(m.id), 'acceptedAt')));
      log.forEach((entry, i) => latencies.push(entry.deliveredAt - Number(acceptedAt[i])));
    }
    latencies.sort((x, y) => x - y);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))];
    console.log(
      `messages: ${DEVICES * PER_DEVICE} accepted in ${acceptedIn} ms, all delivered after ${finished - started} ms ` +
        `(${Math.round((DEVICES * PER_DEVICE * 1000) / (finished - started))}/s); accept-to-send p50 ${pct(50)} ms, p99 ${pct(99)} ms; ` +
        (disruption === 'rebalance' ? 'msg-c joined halfway' : `${victim} got ${disruption} halfway`),
    );
    expect(await cluster.conflicts()).toBe(0);
    if (disruption === 'rebalance') {
      // Rebalance did move devices mid-stream: the new server delivered some of the messages.
      const senders = new Set((await Promise.all(devices.map(logOf))).flat().map((entry) => (entry as Delivery & { serverId: string }).serverId));
      expect(senders.has('msg-c')).toBe(true);
    }
  }, 600_000);
});
