import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { readDeviceCodes } from '../../src/devices/codes.js';
import type { DeviceConnector } from '../../src/devices/connector.js';
import type { InboundMessage, MessageAck } from '../../src/devices/inbound.js';
import { createSimulatedConnector } from '../../src/devices/simulated/connector.js';
import { runtimeSender, withOutboundWork } from '../../src/queues/device-work.js';
import type { LoggedEvent } from '../../src/events/event-log.js';
import { createMessageRecords, waMessageIdFor } from '../../src/queues/messages.js';
import { createOutbound } from '../../src/queues/outbound.js';
import { monotonicNow } from '../../src/shared/clock.js';
import { createDeviceBed, eventually, silentLog, startTestServer, type DeviceBed, type TestServer } from '../helpers/devices.js';

// The device runtime with the simulated WhatsApp, on real Redis and a real store: linking,
// resuming on another server, restoring from the store's snapshot, drops, the QR round limit,
// and what WhatsApp sends the device.

let bed: DeviceBed;
let servers: TestServer[] = [];

beforeAll(async () => {
  bed = await createDeviceBed();
});
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});
afterAll(async () => {
  await bed.cleanup();
});

async function server(serverId: string, env: Record<string, string> = {}) {
  const s = await startTestServer(bed, serverId, { env: { SESSION_SNAPSHOT_DELAY_MS: '20', ...env }, policy: { backoffBaseMs: 50, backoffCapMs: 400 } });
  servers.push(s);
  return s;
}

/** A server whose device layer runs on `connector`. */
async function withConnector(serverId: string, connector: DeviceConnector) {
  const s = await startTestServer(bed, serverId, { connector, env: { SESSION_SNAPSHOT_DELAY_MS: '20' }, policy: { backoffBaseMs: 50, backoffCapMs: 400 } });
  servers.push(s);
  return s;
}

const pairings = async (deviceId: string) => Number((await bed.t.redis.hget(bed.keys.simPairings, deviceId)) ?? 0);
const socketOwner = async (deviceId: string) => (await bed.t.redis.get(bed.keys.simSocket(deviceId)))?.split('#')[0];
const connectedEvents = async (deviceId: string) =>
  (await bed.connectionLog(deviceId)).filter((r) => r.event_type === 'connected').map((r) => ({ server: r.server_id, ...(r.details as { session: string }) }));

/** Stops the device on `from` the way a drain does (socket first, then the lease). */
async function handOver(deviceId: string, from: TestServer) {
  await from.runtime.stop(deviceId, 'drain');
  from.guard.drop(deviceId);
  await bed.t.redis.del(bed.keys.lease(deviceId));
}

describe('device runtime (simulated WhatsApp)', () => {
  it('a new device is shown a QR code any server can read, is linked, and connects; moved to another server it resumes with no new QR', async () => {
    const a = await server('srv-a', { SIM_QR_INTERVAL_MS: '300' });
    const deviceId = await bed.createDevice();
    await a.start(deviceId);
    await eventually(async () => (await readDeviceCodes(bed.t.redis, bed.keys, deviceId)).qr !== null, 10_000);
    expect((await readDeviceCodes(bed.t.redis, bed.keys, deviceId)).qr!.qr).toMatch(new RegExp(`^sim-qr:${deviceId}:1:`));
    await eventually(async () => (await socketOwner(deviceId)) === 'srv-a', 10_000);
    expect(await pairings(deviceId)).toBe(1);
    await eventually(async () => (await connectedEvents(deviceId)).length === 1);
    expect((await connectedEvents(deviceId))[0]).toMatchObject({ server: 'srv-a', session: 'linked' });
    expect(await readDeviceCodes(bed.t.redis, bed.keys, deviceId)).toEqual({ qr: null, pairing: null });
    const types = (await bed.connectionLog(deviceId)).map((r) => r.event_type);
    expect(types).toEqual(expect.arrayContaining(['connecting', 'qr', 'restart_required', 'connected']));
    const credsOnA = await bed.t.redis.hget(bed.keys.authState(deviceId), 'creds');

    const b = await server('srv-b');
    await handOver(deviceId, a);
    await b.start(deviceId);
    await eventually(async () => (await socketOwner(deviceId)) === 'srv-b', 10_000);
    await eventually(async () => (await connectedEvents(deviceId)).length === 2);
    expect((await connectedEvents(deviceId))[1]).toMatchObject({ server: 'srv-b', session: 'resumed' });
    expect(await pairings(deviceId)).toBe(1);
    expect((await bed.connectionLog(deviceId)).filter((r) => r.event_type === 'qr')).toHaveLength(1);
    expect(await bed.t.redis.hget(bed.keys.authState(deviceId), 'creds')).toBe(credsOnA);
    expect(await bed.t.redis.hget(bed.keys.simConflicts, deviceId)).toBeNull();
  });

  it("the device's status changes and its QR code reach its event log, in order", async () => {
    const a = await server('srv-a', { SIM_QR_INTERVAL_MS: '300' });
    const log = a.events;
    const deviceId = await bed.createDevice();
    await a.start(deviceId);
    await eventually(async () => (await log.read(deviceId, 0, 100)).some((e) => e.type === 'device.status' && (e.data as { status: string }).status === 'connected'), 10_000);
    const events = await log.read(deviceId, 0, 100);
    expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
    const qr = events.find((e) => e.type === 'device.qr')!;
    expect((qr.data as { qr: string }).qr).toMatch(new RegExp(`^sim-qr:${deviceId}:1:`));
    expect(Date.parse((qr.data as { expiresAt: string }).expiresAt)).toBeGreaterThan(qr.at);
    const statuses = events.filter((e) => e.type === 'device.status').map((e) => (e.data as { status: string }).status);
    expect(statuses.at(-1)).toBe('connected');
    expect(statuses).toContain('qr');
    // The QR code was shown before the device connected.
    expect(qr.sequence).toBeLessThan(events.findLast((e) => e.type === 'device.status')!.sequence);

  });

  it('a socket the guard closed is opened again when the device is started again under the same token', async () => {
    // The simulated socket checks the guard at every keep-alive tick (a fifth of a second here).
    const a = await server('srv-a', { SIM_KEEPALIVE_TIMEOUT_MS: '600' });
    const deviceId = await bed.createDevice();
    const token = await a.start(deviceId);
    await eventually(async () => a.runtime.describe(deviceId)?.connected === true, 10_000);

    a.guard.revoke();
    await eventually(async () => (await socketOwner(deviceId)) === undefined, 5000);
    // The device still counts as running: nothing but a new start opens its socket again.
    expect(a.runtime.isRunning(deviceId)).toBe(true);
    expect(a.runtime.describe(deviceId)?.connected).toBe(false);

    a.guard.renewed(monotonicNow());
    a.runtime.start(deviceId, token);
    await eventually(async () => a.runtime.describe(deviceId)?.connected === true && (await socketOwner(deviceId)) === 'srv-a', 10_000);
    // A repeated start of a running device opens nothing more.
    a.runtime.start(deviceId, token);
    await new Promise((r) => setTimeout(r, 300));
    expect(Number(await bed.t.redis.hget(bed.keys.simConnects, deviceId))).toBe(2);
  });

  it('Redis copy deleted, snapshot present: the device restores from the snapshot and needs no QR', async () => {
    const a = await server('srv-a');
    const deviceId = await bed.createDevice();
    await a.start(deviceId);
    await eventually(async () => (await socketOwner(deviceId)) === 'srv-a', 10_000);
    const linkedCreds = JSON.parse((await bed.t.redis.hget(bed.keys.authState(deviceId), 'creds'))!) as { me: { id: string } };
    await eventually(async () => ((await bed.store.getSession(deviceId))?.creds as { me?: unknown } | undefined)?.me !== undefined);

    await handOver(deviceId, a);
    await bed.t.redis.del(bed.keys.authState(deviceId)); // Redis lost the hot copy
    const b = await server('srv-b');
    await b.start(deviceId);
    await eventually(async () => (await socketOwner(deviceId)) === 'srv-b', 10_000);
    await eventually(async () => (await connectedEvents(deviceId)).length === 2);
    expect((await connectedEvents(deviceId))[1]).toMatchObject({ server: 'srv-b', session: 'restored' });
    const restored = (await bed.connectionLog(deviceId)).filter((r) => r.event_type === 'session_restored');
    expect(restored).toHaveLength(1);
    expect(restored[0]!.server_id).toBe('srv-b');
    expect(await pairings(deviceId)).toBe(1);
    const creds = JSON.parse((await bed.t.redis.hget(bed.keys.authState(deviceId), 'creds'))!) as { me: { id: string } };
    expect(creds.me.id).toBe(linkedCreds.me.id);
  });

  it('random drops: the socket comes back by itself, resumed, with no new QR', async () => {
    const a = await server('srv-a', { SIM_DROP_PER_MINUTE: '1', SIM_KEEPALIVE_TIMEOUT_MS: '150' });
    const deviceId = await bed.createDevice();
    await a.start(deviceId);
    await eventually(async () => (await connectedEvents(deviceId)).length >= 3, 20_000);
    const log = await bed.connectionLog(deviceId);
    const drops = log.filter((r) => r.event_type === 'disconnected' && (r.details as { code: number }).code === 428);
    expect(drops.length).toBeGreaterThanOrEqual(2);
    expect((drops[0]!.details as { connectedForMs: number }).connectedForMs).toBeGreaterThanOrEqual(0);
    expect((await connectedEvents(deviceId)).slice(1).every((e) => e.session === 'resumed')).toBe(true);
    expect(await pairings(deviceId)).toBe(1);
    expect(log.filter((r) => r.event_type === 'qr')).toHaveLength(1);
    // Users see each drop as a device.status event with its code and when the next try is due.
    const dropped = (await a.events.read(deviceId, 0, 100)).filter((e) => e.type === 'device.status' && (e.data as { status: string }).status === 'disconnected');
    expect(dropped.length).toBeGreaterThanOrEqual(2);
    expect(dropped[0]!.data).toMatchObject({ code: 428, nextRetryAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
  });

  it('a device never scanned stops after the QR round limit: disconnected with a reason, desired state stopped', async () => {
    const a = await server('srv-a', { SIM_SCAN_AFTER_CODES: '0', SIM_QR_INTERVAL_MS: '20', DEVICE_QR_MAX_ROUNDS: '2' });
    const deviceId = await bed.createDevice();
    await a.start(deviceId);
    await eventually(() => !a.runtime.isRunning(deviceId), 15_000);
    await eventually(async () => (await bed.store.getDevice(deviceId))?.status === 'disconnected');
    const device = await bed.store.getDevice(deviceId);
    expect(device).toMatchObject({ desiredState: 'stopped' });
    expect(device!.errorMessage).toMatch(/not linked: 2 rounds \(10 codes\)/);
    const qr = (await bed.connectionLog(deviceId)).filter((r) => r.event_type === 'qr');
    expect(qr).toHaveLength(10);
    expect(qr.at(-1)!.details).toMatchObject({ refresh: 10, round: 2, maxRounds: 2 });
    expect(await bed.t.redis.exists(bed.keys.lease(deviceId))).toBe(0);
    expect(await pairings(deviceId)).toBe(0);
  });

  it('a device that stops for good by itself is reported to subscribers, and its outbound worker stops with it', async () => {
    const a = await server('srv-a', { SIM_SCAN_AFTER_CODES: '0', SIM_QR_INTERVAL_MS: '20', DEVICE_QR_MAX_ROUNDS: '1' });
    const bull = new Redis(bed.t.url, { maxRetriesPerRequest: null });
    const outbound = createOutbound({
      redis: bull, keys: bed.keys, records: createMessageRecords({ redis: a.redis, keys: bed.keys, retentionMs: 60_000 }), guard: a.guard,
      sender: runtimeSender(a.runtime), log: silentLog, serverId: 'srv-a', ratePerMinute: 60, delayMs: [0, 0], attempts: 3, lockDurationMs: 5000, retentionMs: 60_000,
    });
    try {
      const runtime = withOutboundWork(a.runtime, outbound);
      const retired: Array<[string, number]> = [];
      runtime.onRetired((deviceId, token) => retired.push([deviceId, token]));
      const deviceId = await bed.createDevice();
      const token = await bed.claim(deviceId, 'srv-a');
      a.guard.hold(deviceId, token);
      runtime.start(deviceId, token);
      expect(outbound.devices()).toEqual([deviceId]);
      await eventually(() => retired.length > 0, 15_000);
      expect(retired).toEqual([[deviceId, token]]);
      expect(outbound.devices()).toEqual([]);
      expect(await bed.t.redis.exists(bed.keys.lease(deviceId))).toBe(0);
    } finally {
      await outbound.close();
      bull.disconnect();
    }
  });

  it('logout on request: unlinked, session cleared in Redis and the store, logged_out', async () => {
    const a = await server('srv-a');
    const deviceId = await bed.createDevice();
    const token = await a.start(deviceId);
    await eventually(async () => (await socketOwner(deviceId)) === 'srv-a', 10_000);
    await eventually(async () => (await bed.store.getSession(deviceId)) !== null);
    expect(await a.runtime.logout(deviceId, token, 'logged out through the API')).toEqual({ redis: true, store: true });
    expect(a.runtime.isRunning(deviceId)).toBe(false);
    expect(await socketOwner(deviceId)).toBeUndefined();
    expect(await bed.t.redis.exists(bed.keys.authState(deviceId))).toBe(0);
    expect((await bed.store.getSession(deviceId))?.cleared).toBe(true);
    expect(await bed.t.redis.hget(bed.keys.deviceStatus(deviceId), 'status')).toBe('logged_out');
    await eventually(async () => (await bed.connectionLog(deviceId)).some((r) => r.event_type === 'logged_out'));
  });

  it('a device started while its server is self-fenced opens by itself once the fence lifts', async () => {
    const a = await server('srv-a');
    const deviceId = await bed.createDevice();
    // No renewal for longer than the self-fence deadline: the guard refuses every use of a lease.
    a.guard.revoke();
    expect(a.guard.isFenced()).toBe(true);
    await a.start(deviceId);
    await new Promise((r) => setTimeout(r, 300));
    expect(await socketOwner(deviceId)).toBeUndefined();
    expect(a.runtime.isRunning(deviceId)).toBe(true);
    // A renewal lifts the fence; nobody starts the device again, yet it connects.
    a.guard.renewed(monotonicNow());
    await eventually(async () => (await socketOwner(deviceId)) === 'srv-a', 10_000);
  });
});

/** A simulated WhatsApp connector whose process dies each time between reporting messages and acknowledging them. */
async function dyingBeforeAck(): Promise<DeviceConnector> {
  const [redis, subscriber] = [new Redis(bed.t.url), new Redis(bed.t.url)];
  const inner = await createSimulatedConnector({ redis, subscriber, keys: bed.keys, log: silentLog, connectLatencyMs: 5, keepAliveTimeoutMs: 600, qrIntervalMs: 100 });
  return {
    kind: 'simulated',
    open: (options) =>
      inner.open({
        ...options,
        events: {
          ...options.events,
          inbound(messages) {
            void options.events.inbound(messages);
            throw new Error('the process died before its socket acknowledged');
          },
        },
      }),
    async close() {
      await inner.close();
      redis.disconnect();
      subscriber.disconnect();
    },
  };
}

async function connected(s: TestServer, deviceId: string) {
  await eventually(() => s.runtime.describe(deviceId)?.connected === true, 10_000);
}

const logged = async (s: TestServer, deviceId: string, type: LoggedEvent['type']) => (await s.events.read(deviceId, 0, 1000)).filter((e) => e.type === type);
const received = async (s: TestServer, deviceId: string) => (await logged(s, deviceId, 'message.received')).map((e) => e.data as InboundMessage);
const acked = async (s: TestServer, deviceId: string) => (await logged(s, deviceId, 'message.ack')).map((e) => e.data as MessageAck);

/** The sockets the simulated WhatsApp delivered the message to, in order (its history stream). */
async function deliveredTo(deviceId: string, waMessageId: string): Promise<string[]> {
  const entries = (await bed.t.redis.xrange(bed.keys.simHistory, '-', '+')) as Array<[string, string[]]>;
  return entries
    .map(([, raw]) => Object.fromEntries(raw.flatMap((v, i) => (i % 2 === 0 ? [[v, raw[i + 1]]] : []))) as Record<string, string>)
    .filter((f) => f.k === 'inbound' && f.d === deviceId && f.m === waMessageId)
    .map((f) => f.s!);
}

// What the simulated WhatsApp sends a device reaches the device's event log once, whether the
// device had a socket then or not, and also when the socket that got it died before acknowledging it.
describe('device runtime: inbound from the simulated WhatsApp', () => {
  it('a message written to a connected device reaches its event log once, as WhatsApp describes it', async () => {
    const a = await server('srv-a');
    const deviceId = await bed.createDevice();
    await a.start(deviceId);
    await connected(a, deviceId);

    const waMessageId = await a.sim!.sendToDevice(deviceId, '+15550001111', 'hello there');
    await eventually(async () => (await received(a, deviceId)).length === 1, 5000);
    const [message] = await received(a, deviceId);
    expect(message).toEqual({
      waMessageId,
      chatJid: '15550001111@s.whatsapp.net',
      senderJid: '15550001111@s.whatsapp.net',
      pushName: null,
      participant: null,
      timestampMs: expect.any(Number),
      type: 'text',
      text: 'hello there',
      media: null,
      quotedMessageId: null,
      reaction: null,
      fromHistory: false,
    });
    expect(message!.timestampMs! % 1000).toBe(0);
    // Acknowledged: WhatsApp holds nothing more, and the socket it went to is on record.
    await eventually(async () => (await bed.t.redis.exists(bed.keys.simPending(deviceId))) === 0, 5000);
    expect(await deliveredTo(deviceId, waMessageId)).toEqual([await bed.t.redis.get(bed.keys.simSocket(deviceId))]);
    await new Promise((r) => setTimeout(r, 500));
    expect(await received(a, deviceId)).toHaveLength(1);
  });

  it('messages written while the device has no socket are held, bounded, and arrive in order when it opens', async () => {
    const a = await server('srv-a');
    const deviceId = await bed.createDevice();
    const first = await a.sim!.sendToDevice(deviceId, '15550002222', 'one');
    const second = await a.sim!.sendToDevice(deviceId, '15550002222', 'two');
    expect(first).not.toBe(second);
    expect(await bed.t.redis.xlen(bed.keys.simPending(deviceId))).toBe(2);
    expect(await bed.t.redis.pttl(bed.keys.simPending(deviceId))).toBeGreaterThan(0);

    // A new device: linked by the simulated phone first, then its socket gets what waited.
    await a.start(deviceId);
    await eventually(async () => (await received(a, deviceId)).length === 2, 10_000);
    expect((await received(a, deviceId)).map((m) => [m.waMessageId, m.text])).toEqual([
      [first, 'one'],
      [second, 'two'],
    ]);
  });

  it('a socket that dies before acknowledging leaves the message to the next socket, on another server: same id, once in the log', async () => {
    const a = await withConnector('srv-a', await dyingBeforeAck());
    const b = await server('srv-b');
    const deviceId = await bed.createDevice();
    await a.start(deviceId);
    await connected(a, deviceId);
    const socketOnA = await bed.t.redis.get(bed.keys.simSocket(deviceId));

    const waMessageId = await a.sim!.sendToDevice(deviceId, '15550003333', 'are you there?');
    await eventually(async () => (await received(a, deviceId)).length === 1, 5000);
    // Reported, never acknowledged: WhatsApp still holds it.
    expect(await bed.t.redis.xlen(bed.keys.simPending(deviceId))).toBe(1);

    await handOver(deviceId, a);
    await b.start(deviceId);
    await connected(b, deviceId);
    const socketOnB = await bed.t.redis.get(bed.keys.simSocket(deviceId));
    await eventually(async () => (await bed.t.redis.exists(bed.keys.simPending(deviceId))) === 0, 5000);

    const deliveries = await deliveredTo(deviceId, waMessageId);
    expect(deliveries[0]).toBe(socketOnA);
    expect(deliveries.at(-1)).toBe(socketOnB);
    expect((await received(b, deviceId)).map((m) => m.waMessageId)).toEqual([waMessageId]);
  });

  it("receipts of the device's messages reach its log as acks, also when it had no socket then; a message WhatsApp never got has none", async () => {
    const a = await server('srv-a');
    const b = await server('srv-b');
    const deviceId = await bed.createDevice();
    const token = await a.start(deviceId);
    await connected(a, deviceId);
    const waMessageId = waMessageIdFor('6f1c0d9e-5b7a-4c1e-9f0a-2d3b4c5d6e7f');
    await a.runtime.send(deviceId, token, { to: '15550004444', type: 'text', text: 'ping' }, waMessageId);

    const chatJid = '15550004444@s.whatsapp.net';
    expect(await a.sim!.receipt(deviceId, { waMessageId, chatJid, status: 'delivered' })).toBe(true);
    await eventually(async () => (await acked(a, deviceId)).length === 1, 5000);
    // Sent past the message records (no send began there), so no message of ours is named.
    expect((await acked(a, deviceId))[0]).toEqual({ messageId: null, waMessageId, chatJid, status: 'delivered', recipientJid: null, atMs: expect.any(Number) });

    await handOver(deviceId, a);
    expect(await a.sim!.receipt(deviceId, { waMessageId, chatJid, status: 'read' })).toBe(true);
    await b.start(deviceId);
    await eventually(async () => (await acked(b, deviceId)).length === 2, 10_000);
    expect((await acked(b, deviceId)).map((ack) => ack.status)).toEqual(['delivered', 'read']);

    expect(await a.sim!.receipt(deviceId, { waMessageId: waMessageIdFor('never-sent'), chatJid, status: 'read' })).toBe(false);
  });
});
