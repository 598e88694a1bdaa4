import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';
import type { ServerProcess } from '../../harness/processes.js';

// Inbound events through real server processes while devices move: WhatsApp (simulated) sends
// 30 devices messages at a steady rate over 3 servers; one server is SIGKILLed and one drained
// mid-run, and the operator's webhook receiver answers 500 for a while, then hangs past the
// timeout, then comes back. Every message reaches the webhook at least once, every delivery of
// an event carries the same id and a valid signature, each device's sequence is gap-free, and no
// WhatsApp message became two events (which a stale owner's append would be).

const KEY = 'events-internal-key-0123456789abcdef';
const SECRET = 'whsec_events-failover-test-secret';
const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
const DEVICES = 30;
const INJECT_EVERY_MS = 40;
const INJECT_FOR_MS = 15_000;

interface Delivery {
  eventId: string;
  signatureValid: boolean;
  body: { id: string; type: string; deviceId: string; sequence: number; createdAt: string; data: Record<string, unknown> };
  at: number;
}

type ReceiverMode = 'ok' | 'error' | 'hang';

/** The operator's webhook receiver, whose behaviour the test switches. */
async function startReceiver() {
  const deliveries: Delivery[] = [];
  /** Requests the receiver failed on purpose, by how. */
  const failed = { error: 0, hang: 0 };
  let mode: ReceiverMode = 'ok';
  const hanging = new Set<IncomingMessage>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (mode === 'hang') {
        // Never answered: the sender's timeout is what ends it.
        failed.hang += 1;
        hanging.add(req);
        return;
      }
      if (mode === 'error') {
        failed.error += 1;
        res.writeHead(500).end('receiver down');
        return;
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      deliveries.push({ eventId: String(req.headers['x-wafleet-event-id']), signatureValid: verify(raw, String(req.headers['x-wafleet-signature'] ?? '')), body: JSON.parse(raw), at: Date.now() });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    deliveries,
    failed,
    set(next: ReceiverMode) {
      mode = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The receiver's check, as the README tells users to do it. */
function verify(rawBody: string, header: string): boolean {
  const parts = Object.fromEntries(header.split(',').map((part) => part.split('=', 2) as [string, string]));
  if (!parts.t || !parts.v1) return false;
  const expected = createHmac('sha256', SECRET).update(`${parts.t}.${rawBody}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

let cluster: TestCluster;
let receiver: Awaited<ReturnType<typeof startReceiver>>;

beforeEach(async () => {
  cluster = await startTestCluster();
  receiver = await startReceiver();
});
afterEach(async () => {
  await cluster?.stop();
  await receiver?.close();
});

async function call(server: ServerProcess, method: string, path: string, body?: unknown) {
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, any>) : null };
}

describe('inbound events while devices move and the webhook receiver fails', () => {
  it('30 devices over 3 servers, one SIGKILLed and one drained: every message delivered, same id on redelivery, sequences gap-free', async () => {
    const env = {
      INTERNAL_API_KEY: KEY,
      WEBHOOK_URL: receiver.url,
      WEBHOOK_SECRET: SECRET,
      WEBHOOK_TIMEOUT_MS: '1000',
      OUTBOUND_ALLOW_PRIVATE: 'true',
      RATE_LIMIT_PER_MINUTE: '1000000',
      RATE_LIMIT_IP_PER_MINUTE: '1000000',
      MESSAGE_RATE_PER_MINUTE: '6000',
    };
    const servers = await Promise.all(['ev-a', 'ev-b', 'ev-c'].map((id) => cluster.start(id, env)));
    const [victim, drained, survivor] = servers as [ServerProcess, ServerProcess, ServerProcess];
    const devices = await cluster.addDevices(DEVICES);
    await waitUntil(async () => (await cluster.connectedCount(devices)) === DEVICES, 60_000);

    // WhatsApp sends a message every INJECT_EVERY_MS, devices in turn, through whichever servers
    // are up; the disruptions happen on a timetable while it does.
    const injected = new Map<string, string>(); // waMessageId -> deviceId
    const down = new Set<ServerProcess>();
    const started = Date.now();
    const timetable: Array<[number, () => void]> = [
      [2_000, () => receiver.set('error')],
      [4_000, () => (down.add(victim), victim.signal('SIGKILL'))],
      [6_000, () => receiver.set('hang')],
      [8_000, () => (down.add(drained), drained.signal('SIGTERM'))],
      [10_000, () => receiver.set('ok')],
    ];
    for (let n = 0; Date.now() - started < INJECT_FOR_MS; n++) {
      while (timetable.length > 0 && Date.now() - started >= timetable[0]![0]) timetable.shift()![1]();
      const deviceId = devices[n % DEVICES]!;
      for (let attempt = 0; ; attempt++) {
        const up = servers.filter((s) => !down.has(s));
        try {
          const res = await call(up[(n + attempt) % up.length]!, 'POST', `/api/sim/devices/${deviceId}/inbound`, { from: '4915112345678', text: `m${n}` });
          expect(res.status).toBe(202);
          injected.set(String(res.body!.waMessageId), deviceId);
          break;
        } catch (err) {
          // A server going down under the request; WhatsApp's side is in Redis, so another server takes it.
          if (attempt > 5) throw err;
        }
      }
      await new Promise((r) => setTimeout(r, INJECT_EVERY_MS));
    }
    await drained.exited;

    const receivedIds = () => new Set(receiver.deliveries.filter((d) => d.body.type === 'message.received').map((d) => String(d.body.data.waMessageId)));
    await waitUntil(
      async () => [...injected.keys()].every((id) => receivedIds().has(id)),
      TTL * 20,
      () => `${[...injected.keys()].filter((id) => receivedIds().has(id)).length}/${injected.size} delivered to the webhook`,
    );

    // Every delivery signed; one event id, one sequence per WhatsApp message however often it came.
    expect(receiver.deliveries.every((d) => d.signatureValid && d.eventId === d.body.id)).toBe(true);
    const byWaId = new Map<string, Set<string>>();
    for (const d of receiver.deliveries.filter((x) => x.body.type === 'message.received')) {
      const key = String(d.body.data.waMessageId);
      byWaId.set(key, (byWaId.get(key) ?? new Set()).add(`${d.body.id}#${d.body.sequence}`));
    }
    expect([...byWaId.entries()].filter(([, ids]) => ids.size > 1)).toEqual([]);
    expect(new Set(receiver.deliveries.map((d) => d.body.deviceId)).size).toBe(DEVICES);

    // Per device: the log the pull API reads is numbered 1..N with no gap, holds each WhatsApp
    // message once, and every one of its events reached the webhook.
    for (const deviceId of devices) {
      const { body } = await call(survivor, 'GET', `/api/devices/${deviceId}/events?limit=1000`);
      const events = body!.events as Delivery['body'][];
      expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
      const waIds = events.filter((e) => e.type === 'message.received').map((e) => String(e.data.waMessageId));
      expect(new Set(waIds).size).toBe(waIds.length);
      expect(waIds.sort()).toEqual([...injected].filter(([, d]) => d === deviceId).map(([id]) => id).sort());
      await waitUntil(async () => events.every((e) => receiver.deliveries.some((d) => d.body.id === e.id && d.body.sequence === e.sequence)), TTL * 10);
    }
    expect(await cluster.conflicts()).toBe(0);
    // The faults were met: deliveries were refused and timed out, and went through later.
    expect(receiver.failed.error).toBeGreaterThan(0);
    expect(receiver.failed.hang).toBeGreaterThan(0);
    const retried = receiver.deliveries.length - new Set(receiver.deliveries.map((d) => d.body.id)).size;
    console.log(`events: ${injected.size} messages injected in ${INJECT_FOR_MS} ms over ${DEVICES} devices; ${receiver.deliveries.length} webhook deliveries (${retried} repeats), ${receiver.failed.error} answered 500, ${receiver.failed.hang} left hanging`);

    // Receipts of a sent message come back as message.ack and show on the message.
    const deviceId = devices[0]!;
    const sent = await call(survivor, 'POST', `/api/devices/${deviceId}/messages`, { to: '4915112345678', type: 'text', text: 'receipt me' });
    expect(sent.status).toBe(202);
    const messageId = String(sent.body!.id);
    await waitUntil(async () => (await call(survivor, 'GET', `/api/messages/${messageId}`)).body!.status === 'sent', TTL * 5);
    for (const status of ['delivered', 'read']) {
      expect((await call(survivor, 'POST', `/api/sim/messages/${messageId}/receipt`, { status })).status).toBe(202);
    }
    await waitUntil(async () => receiver.deliveries.filter((d) => d.body.type === 'message.ack' && d.body.data.messageId === messageId).length >= 2, TTL * 5);
    const message = (await call(survivor, 'GET', `/api/messages/${messageId}`)).body!;
    expect(message.deliveredAt).toEqual(expect.any(String));
    expect(message.readAt).toEqual(expect.any(String));
  }, 300_000);
});
