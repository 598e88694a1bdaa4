import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthStateStore, createSnapshotWriter } from '../../src/devices/auth-state/auth-state.js';
import { isLinked } from '../../src/devices/auth-state/codec.js';
import type { DeviceConnector, DeviceSocketEvents, OpenDeviceOptions } from '../../src/devices/connector.js';
import type { InboundMessage } from '../../src/devices/inbound.js';
import { createSimulatedConnector, type SimulatedConnectorOptions } from '../../src/devices/simulated/connector.js';
import { createSimulatedWhatsApp } from '../../src/devices/simulated/inbound.js';
import { createSimHistoryReader } from '../../harness/chaos/sim-history.js';
import { createDeviceBed, eventually, silentLog as log, type DeviceBed } from '../helpers/devices.js';

let bed: DeviceBed;
const connectors: DeviceConnector[] = [];
const connections: Redis[] = [];

async function connector(options: Partial<SimulatedConnectorOptions> = {}): Promise<DeviceConnector> {
  const [redis, subscriber] = [new Redis(bed.t.url), new Redis(bed.t.url)];
  connections.push(redis, subscriber);
  const c = await createSimulatedConnector({
    redis,
    subscriber,
    keys: bed.keys,
    log,
    connectLatencyMs: 5,
    keepAliveTimeoutMs: 300,
    qrIntervalMs: 50,
    ...options,
  });
  connectors.push(c);
  return c;
}

function recorder() {
  const statuses: string[] = [];
  const closes: Array<{ code: number; reason: string }> = [];
  const codes: Array<{ kind: 'qr' | 'pairing'; value: string; ttlMs: number }> = [];
  const inbound: InboundMessage[] = [];
  const events: DeviceSocketEvents = {
    status: (s) => statuses.push(s),
    qr: (value, ttlMs) => codes.push({ kind: 'qr', value, ttlMs }),
    pairingCode: (value, ttlMs) => codes.push({ kind: 'pairing', value, ttlMs }),
    closed: (code, reason) => closes.push({ code, reason }),
    inbound: async (messages) => void inbound.push(...messages),
    acks: async () => undefined,
  };
  return { statuses, closes, codes, inbound, events };
}

/** The device's real shared auth state, under a lease claimed for `serverId`. */
async function authFor(deviceId: string, serverId: string, linked: boolean): Promise<OpenDeviceOptions['auth'] & { token: number }> {
  const token = await bed.claim(deviceId, serverId);
  const redis = new Redis(bed.t.url);
  connections.push(redis);
  const auth = createAuthStateStore({ redis, keys: bed.keys, store: bed.store, snapshots: createSnapshotWriter({ redis, keys: bed.keys, store: bed.store }), log, snapshotDelayMs: 60_000 }).forDevice(deviceId, {
    serverId,
    token,
    guard: () => undefined,
  });
  const { state } = await auth.load();
  if (linked) {
    state.creds.me = { id: '4915112345678:3@s.whatsapp.net' };
    state.creds.account = { details: Buffer.from('linked') };
    await auth.saveCreds();
  }
  return { state, saveCreds: () => auth.saveCreds(), token };
}

const openOptions = (deviceId: string, serverId: string, token: number, auth: OpenDeviceOptions['auth'], events: DeviceSocketEvents, guard: () => void = () => {}) =>
  ({ deviceId, token, serverId, log, events, guard, auth, link: null }) satisfies OpenDeviceOptions;

beforeAll(async () => {
  bed = await createDeviceBed();
});
afterAll(async () => {
  await Promise.all(connectors.map((c) => c.close()));
  for (const connection of connections) connection.disconnect();
  await bed.cleanup();
});

describe('simulated WhatsApp', () => {
  it('kicks the older socket with 440 when a second one opens, and counts the conflict', async () => {
    const { keys } = bed;
    const [a, b] = [await connector(), await connector()];
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    const first = recorder();
    const second = recorder();
    await a.open(openOptions(device, 'srv-a', 1, auth, first.events));
    expect(first.statuses).toEqual(['connecting', 'connected']);
    await b.open(openOptions(device, 'srv-b', 2, auth, second.events));
    await eventually(() => first.closes.length === 1, 3000);
    expect(first.closes[0]!.code).toBe(440);
    expect(second.closes).toEqual([]);
    expect(await bed.t.redis.hget(keys.simConflicts, device)).toBe('1');
    expect(await bed.t.redis.hget(keys.simConnects, device)).toBe('2');
    expect(await bed.t.redis.get(keys.simSocket(device))).toMatch(/^srv-b#2#/);
  });

  it('a socket closed before the next one opens causes no conflict', async () => {
    const { keys } = bed;
    const c = await connector();
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    const socket = await c.open(openOptions(device, 'srv-a', 1, auth, recorder().events));
    await socket.close();
    expect(await bed.t.redis.exists(keys.simSocket(device))).toBe(0);
    await c.open(openOptions(device, 'srv-b', 2, auth, recorder().events));
    expect(await bed.t.redis.hget(keys.simConflicts, device)).toBeNull();
  });

  it('a message whose publish was lost still reaches the socket, at its next keep-alive', async () => {
    const c = await connector();
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    const events = recorder();
    await c.open(openOptions(device, 'srv-a', 1, auth, events.events));
    const unheard = createSimulatedWhatsApp({ redis: bed.t.redis, keys: { ...bed.keys, simInboundChannel: `${bed.keys.simInboundChannel}:nobody` } });
    const waMessageId = await unheard.sendToDevice(device, '15550009999', 'lost publish');
    await eventually(() => events.inbound.length === 1, 3000);
    expect(events.inbound[0]).toMatchObject({ waMessageId, text: 'lost publish', chatJid: '15550009999@s.whatsapp.net' });
    await eventually(async () => (await bed.t.redis.exists(bed.keys.simPending(device))) === 0, 3000);
  });

  it('acknowledges a message only once the device has it, and a socket that closed first leaves it to the next', async () => {
    const c = await connector();
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    const events = recorder();
    // The device is still writing the message to its log and the store.
    let durable: () => void = () => undefined;
    const socket = await c.open(openOptions(device, 'srv-a', 1, auth, { ...events.events, inbound: (messages) => (events.inbound.push(...messages), new Promise<void>((r) => (durable = r))) }));
    const waMessageId = await createSimulatedWhatsApp({ redis: bed.t.redis, keys: bed.keys }).sendToDevice(device, '15550009999', 'held');
    await eventually(() => events.inbound.length === 1, 3000);
    await new Promise((r) => setTimeout(r, 200));
    expect(await bed.t.redis.exists(bed.keys.simPending(device))).toBe(1);
    // The server died before the message was durable: WhatsApp still holds it for the next socket.
    await socket.close();
    durable();
    const next = recorder();
    await c.open(openOptions(device, 'srv-b', 2, auth, next.events));
    await eventually(() => next.inbound.length === 1, 3000);
    expect(next.inbound[0]).toMatchObject({ waMessageId, text: 'held' });
    await eventually(async () => (await bed.t.redis.exists(bed.keys.simPending(device))) === 0, 3000);
  });

  it('stops pinging when the guard refuses, so WhatsApp drops the socket after the keep-alive timeout', async () => {
    const { keys } = bed;
    const c = await connector({ keepAliveTimeoutMs: 150 });
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    let allowed = true;
    const events = recorder();
    await c.open(
      openOptions(device, 'srv-a', 1, auth, events.events, () => {
        if (!allowed) throw new Error('self-fenced');
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(await bed.t.redis.exists(keys.simSocket(device))).toBe(1); // kept alive by pings
    allowed = false;
    await eventually(() => events.closes.length === 1, 3000);
    expect(events.closes[0]).toEqual({ code: 0, reason: 'self-fenced' });
    await eventually(async () => (await bed.t.redis.exists(keys.simSocket(device))) === 0, 3000);
  });

  it('refuses to open when the guard refuses', async () => {
    const c = await connector();
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    await expect(
      c.open(
        openOptions(device, 'srv-a', 1, auth, recorder().events, () => {
          throw new Error('lease lost');
        }),
      ),
    ).rejects.toThrow('lease lost');
  });

  it('shows QR codes to a device that is not linked; the phone links it through the shared auth state, then 515', async () => {
    const c = await connector({ scanAfterCodes: 2 });
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', false);
    const events = recorder();
    await c.open({ ...openOptions(device, 'srv-a', auth.token, auth, events.events), link: { method: 'qr', phone: null } });
    await eventually(() => events.closes.length === 1, 3000);
    expect(events.codes.map((code) => code.kind)).toEqual(['qr', 'qr']);
    expect(events.closes[0]).toEqual({ code: 515, reason: 'restart required' });
    expect(await bed.t.redis.exists(bed.keys.simSocket(device))).toBe(0); // never connected while unlinked
    expect(await bed.t.redis.hget(bed.keys.simPairings, device)).toBe('1');
    // The link is in Redis, where the next socket (on any server) reads it.
    const stored = await createAuthStateStore({ redis: bed.t.redis, keys: bed.keys, store: bed.store, snapshots: createSnapshotWriter({ redis: bed.t.redis, keys: bed.keys, store: bed.store }), log, snapshotDelayMs: 60_000 })
      .forDevice(device, { serverId: 'srv-a', token: auth.token, guard: () => undefined })
      .load();
    expect(isLinked(stored.state.creds)).toBe(true);
    expect((stored.state.creds.additionalData as { simulated: { linkedBy: string } }).simulated.linkedBy).toBe('srv-a');
  });

  it('a device never scanned is given up on after the codes of one socket (408)', async () => {
    const c = await connector({ scanAfterCodes: 0, codesPerSocket: 3, qrIntervalMs: 20 });
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', false);
    const events = recorder();
    await c.open({ ...openOptions(device, 'srv-a', auth.token, auth, events.events), link: { method: 'qr', phone: null } });
    await eventually(() => events.closes.length === 1, 3000);
    expect(events.codes).toHaveLength(3);
    expect(events.closes[0]!.code).toBe(408);
    expect(await bed.t.redis.hget(bed.keys.simPairings, device)).toBeNull();
  });

  it('a pairing-code device is shown one pairing code, not QR codes', async () => {
    const c = await connector({ scanAfterCodes: 2 });
    const device = await bed.createDevice({ connectionMethod: 'pairing', phoneForPairing: '4915112345678' });
    const auth = await authFor(device, 'srv-a', false);
    const events = recorder();
    await c.open({ ...openOptions(device, 'srv-a', auth.token, auth, events.events), link: { method: 'pairing', phone: '4915112345678' } });
    await eventually(() => events.closes.length === 1, 3000);
    expect(events.codes.map((code) => code.kind)).toEqual(['pairing']);
    expect(events.codes[0]!.value).toMatch(/^[0-9A-F]{8}$/);
    expect(events.closes[0]!.code).toBe(515);
  });

  it('drops open sockets at random when asked (428), closing them on its side first', async () => {
    const c = await connector({ dropPerMinute: 1, keepAliveTimeoutMs: 90 });
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    const events = recorder();
    await c.open(openOptions(device, 'srv-a', auth.token, auth, events.events));
    await eventually(() => events.closes.length === 1, 3000);
    expect(events.closes[0]!.code).toBe(428);
    expect(await bed.t.redis.exists(bed.keys.simSocket(device))).toBe(0);
  });

  it('writes what it sees to the history stream: opens (with the kicked socket), closes, deliveries and dropped repeats', async () => {
    const [a, b] = [await connector(), await connector()];
    const device = await bed.createDevice();
    const auth = await authFor(device, 'srv-a', true);
    const first = await a.open(openOptions(device, 'srv-a', 1, auth, recorder().events));
    const second = await b.open(openOptions(device, 'srv-b', 2, auth, recorder().events));
    const message = { to: '4915112345678', type: 'text' as const, text: 'hi' };
    await second.send!(message, 'WA-1');
    await second.send!(message, 'WA-1');
    await second.close();
    await first.close(); // kicked already: WhatsApp logs nothing for it

    const reader = createSimHistoryReader({ redis: bed.t.redis, keys: bed.keys, messageOf: (wa) => (wa === 'WA-1' ? 'msg-1' : undefined) });
    const events = (await reader.read()).filter((e) => 'deviceId' in e && e.deviceId === device);
    const firstId = (events[0] as { socketId: string }).socketId;
    const secondId = (events[1] as { socketId: string }).socketId;
    expect(events.map(({ t: _t, ...rest }) => rest)).toEqual([
      { kind: 'socket_open', deviceId: device, serverId: 'srv-a', token: 1, socketId: firstId, kicked: '' },
      { kind: 'socket_open', deviceId: device, serverId: 'srv-b', token: 2, socketId: secondId, kicked: firstId },
      { kind: 'send', deviceId: device, messageId: 'msg-1', serverId: 'srv-b', token: 2, duplicate: false },
      { kind: 'send', deviceId: device, messageId: 'msg-1', serverId: 'srv-b', token: 2, duplicate: true },
      { kind: 'socket_close', deviceId: device, socketId: secondId, reason: 'closed' },
    ]);
    const times = events.map((e) => e.t);
    expect([...times].sort((x, y) => x - y)).toEqual(times);
    expect(Math.abs(times[0]! - Date.now())).toBeLessThan(60_000);
    // Read entries are trimmed, and a second read starts where the first ended.
    expect(await reader.read()).toEqual([]);
    expect(await bed.t.redis.xlen(bed.keys.simHistory)).toBeLessThanOrEqual(1);
  });
});
