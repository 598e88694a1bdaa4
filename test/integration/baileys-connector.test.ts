import type { AddressInfo } from 'node:net';
import { Boom } from '@hapi/boom';
import type { WAMessage, WASocket } from '@whiskeysockets/baileys';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { createBaileysConnector } from '../../src/devices/baileys/connector.js';
import { readDeviceCodes } from '../../src/devices/codes.js';
import type { ReconnectPolicy } from '../../src/devices/reconnect-policy.js';
import { createDeviceBed, eventually, silentLog, startTestServer, type DeviceBed, type TestServer } from '../helpers/devices.js';

// The baileys connector, offline: Baileys' own socket against a local WebSocket server that
// refuses, drops, or accepts and then says nothing (so the socket stays up until the test ends it
// with a DisconnectReason, as WhatsApp would). Everything else is real: Redis, the store, leases.

type Mode = 'refuse' | 'drop' | 'hold';

let bed: DeviceBed;
let wss: WebSocketServer;
let mode: Mode = 'hold';
/** Upgrade attempts the server saw (refused ones included). */
let attempts = 0;
let servers: TestServer[] = [];

const POLICY: Partial<ReconnectPolicy> = { backoffBaseMs: 100, backoffCapMs: 1600, conflictLimit: 3, qrMaxRounds: 2 };

beforeAll(async () => {
  bed = await createDeviceBed();
  wss = new WebSocketServer({
    port: 0,
    host: '127.0.0.1',
    verifyClient: (_info, done) => {
      attempts += 1;
      if (mode === 'refuse') done(false, 503, 'Service Unavailable');
      else done(true);
    },
  });
  await new Promise((resolve) => wss.once('listening', resolve));
  wss.on('connection', (ws) => {
    if (mode === 'drop') ws.close();
    // 'hold': read the client hello and answer nothing.
  });
});
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});
afterAll(async () => {
  await new Promise((resolve) => wss.close(resolve));
  await bed.cleanup();
});

async function baileysServer(serverId: string, policy: Partial<ReconnectPolicy> = POLICY) {
  const sockets: WASocket[] = [];
  const connector = createBaileysConnector({
    log: silentLog,
    waWebSocketUrl: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/ws/chat`,
    // Long enough that a held socket stays up until the test ends it.
    connectTimeoutMs: 60_000,
    logLevel: 'silent',
    historySync: false,
    onSocket: (_deviceId, socket) => sockets.push(socket),
  });
  const server = await startTestServer(bed, serverId, { connector, policy, env: { SESSION_SNAPSHOT_DELAY_MS: '20' } });
  servers.push(server);
  return { server, sockets };
}

async function events(deviceId: string, type?: string) {
  const rows = await bed.connectionLog(deviceId);
  return type ? rows.filter((r) => r.event_type === type) : rows;
}

const liveStatus = (deviceId: string) => bed.t.redis.hget(bed.keys.deviceStatus(deviceId), 'status');

async function waitForOpenSocket(sockets: WASocket[], count: number) {
  await eventually(() => sockets.length >= count && sockets[count - 1]!.ws.isOpen, 15_000, () => ({ sockets: sockets.length }));
  return sockets[count - 1]!;
}

describe('baileys connector against a local WebSocket server', () => {
  it.each([
    ['refuses the upgrade (503)', 'refuse', 503],
    ['drops every connection (428)', 'drop', 428],
  ] as const)('a server that %s: connecting, the close code mapped, growing back-off, and no retry once the lease is gone', async (_what, serverMode, code) => {
    mode = serverMode;
    const { server } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    const startedWith = attempts;
    await server.start(deviceId);

    await eventually(async () => (await events(deviceId, 'reconnecting')).length >= 4, 30_000);
    const log = await bed.connectionLog(deviceId);
    expect(log[0]!.event_type).toBe('connecting');
    const closes = log.filter((r) => r.event_type === 'disconnected');
    expect(closes.length).toBeGreaterThanOrEqual(3);
    for (const close of closes) expect(close.details).toMatchObject({ code, action: 'backoff' });
    const backoffs = log.filter((r) => r.event_type === 'reconnecting').map((r) => r.details as { attempt: number; delayMs: number; ceilingMs: number });
    expect(backoffs.slice(0, 4).map((b) => b.attempt)).toEqual([1, 2, 3, 4]);
    expect(backoffs.slice(0, 4).map((b) => b.ceilingMs)).toEqual([100, 200, 400, 800]);
    // Jittered, yet growing: each delay is above the one two attempts before it.
    expect(backoffs[2]!.delayMs).toBeGreaterThan(backoffs[0]!.delayMs);
    expect(backoffs[3]!.delayMs).toBeGreaterThan(backoffs[1]!.delayMs);
    expect(await liveStatus(deviceId)).toMatch(/^(connecting|disconnected)$/);
    expect(JSON.parse((await bed.t.redis.hget(bed.keys.deviceStatus(deviceId), 'detail'))!)).toMatchObject({ code });
    expect(attempts - startedWith).toBeGreaterThanOrEqual(4);

    // Another server takes the lease: the next reconnect finds out and never dials again.
    await bed.steal(deviceId, 'srv-b');
    const atSteal = attempts;
    await eventually(() => !server.runtime.isRunning(deviceId), 10_000);
    await new Promise((r) => setTimeout(r, 2500)); // longer than the cap: a retry would have run
    expect(attempts - atSteal).toBeLessThanOrEqual(1); // at most a dial already under way
    const stopped = await events(deviceId, 'stopped');
    expect(stopped.at(-1)?.details).toMatchObject({ reason: 'lease taken by another server' });
  });

  it('515: a new socket at once, no back-off', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    await server.start(deviceId);
    const first = await waitForOpenSocket(sockets, 1);
    await first.end(new Boom('Stream Errored (restart required)', { statusCode: 515 }));
    await waitForOpenSocket(sockets, 2);
    await eventually(async () => (await events(deviceId, 'restart_required')).length === 1);
    expect(await events(deviceId, 'reconnecting')).toEqual([]);
    expect((await events(deviceId, 'disconnected'))[0]!.details).toMatchObject({ code: 515, action: 'restart' });
    expect(server.runtime.isRunning(deviceId)).toBe(true);
    expect(sockets).toHaveLength(2);
  });

  it('408: back off with jitter, then a new socket', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    await server.start(deviceId);
    const first = await waitForOpenSocket(sockets, 1);
    await first.end(new Boom('Connection was lost', { statusCode: 408 }));
    await waitForOpenSocket(sockets, 2);
    const [backoff] = await events(deviceId, 'reconnecting');
    expect(backoff!.details).toMatchObject({ attempt: 1, code: 408, ceilingMs: 100 });
    expect((backoff!.details as { delayMs: number }).delayMs).toBeGreaterThanOrEqual(50);
    expect((await events(deviceId, 'disconnected'))[0]!.details).toMatchObject({ code: 408, action: 'backoff' });
    expect(server.runtime.isRunning(deviceId)).toBe(true);
  });

  it('440 while holding the lease: conflict and back off, never fight; stopped and reported after repeated conflicts', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    const token = await server.start(deviceId);

    for (let n = 1; n <= 2; n++) {
      const socket = await waitForOpenSocket(sockets, n);
      await socket.end(new Boom('Stream Errored (conflict)', { statusCode: 440 }));
      await eventually(async () => (await liveStatus(deviceId)) === 'conflict');
      const conflicts = await events(deviceId, 'conflict');
      expect(conflicts).toHaveLength(n);
      expect(conflicts[n - 1]!.details).toMatchObject({ code: 440, count: n });
      const backoffs = await events(deviceId, 'reconnecting');
      expect(backoffs[n - 1]!.details).toMatchObject({ attempt: n, code: 440 });
    }
    // The third conflict within the window: stop for good and report.
    const third = await waitForOpenSocket(sockets, 3);
    await third.end(new Boom('Stream Errored (conflict)', { statusCode: 440 }));
    await eventually(() => !server.runtime.isRunning(deviceId));
    expect((await events(deviceId, 'conflict')).at(-1)!.details).toMatchObject({ count: 3, stopped: true });
    expect(await bed.t.redis.exists(bed.keys.lease(deviceId))).toBe(0); // released
    const device = await bed.store.getDevice(deviceId);
    expect(device?.desiredState).toBe('stopped');
    await eventually(async () => (await bed.store.getDevice(deviceId))?.status === 'conflict');
    expect((await bed.store.getDevice(deviceId))?.errorMessage).toMatch(/replaced by another socket 3 times/);
    expect(server.guard.tokenOf(deviceId)).toBeUndefined();
    await new Promise((r) => setTimeout(r, 500));
    expect(sockets).toHaveLength(3);
    void token;
  });

  it('440 after the lease moved: no conflict status, no reconnect', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    await server.start(deviceId);
    const socket = await waitForOpenSocket(sockets, 1);
    // The coordinator would drop the token when the heartbeat learns of the loss.
    await bed.steal(deviceId, 'srv-b');
    server.guard.drop(deviceId);
    await socket.end(new Boom('Stream Errored (conflict)', { statusCode: 440 }));
    await new Promise((r) => setTimeout(r, 1000));
    expect(await events(deviceId, 'conflict')).toEqual([]);
    expect(await events(deviceId, 'reconnecting')).toEqual([]);
    expect(sockets).toHaveLength(1);
    expect(await liveStatus(deviceId)).not.toBe('conflict');
  });

  it.each([401, 403, 419])('%i: the session is cleared (fenced) in Redis and the store, logged_out, desired state stopped, lease released', async (code) => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    const token = await server.start(deviceId);
    const socket = await waitForOpenSocket(sockets, 1);
    await eventually(async () => (await bed.store.getSession(deviceId)) !== null); // the snapshot exists
    expect(await bed.t.redis.exists(bed.keys.authState(deviceId))).toBe(1);

    await socket.end(new Boom('Connection Failure', { statusCode: code }));
    await eventually(() => !server.runtime.isRunning(deviceId));
    expect(await bed.t.redis.exists(bed.keys.authState(deviceId))).toBe(0);
    const session = await bed.store.getSession(deviceId);
    expect(session).toMatchObject({ cleared: true, epoch: token });
    expect(await liveStatus(deviceId)).toBe('logged_out');
    await eventually(async () => (await events(deviceId, 'stopped')).length === 1);
    const types = (await bed.connectionLog(deviceId)).map((r) => r.event_type);
    expect(types.slice(types.indexOf('disconnected'))).toEqual(['disconnected', 'session_cleared', 'logged_out', 'stopped']);
    expect((await events(deviceId, 'logged_out'))[0]!.details).toMatchObject({ code });
    const device = await bed.store.getDevice(deviceId);
    expect(device).toMatchObject({ desiredState: 'stopped', status: 'logged_out' });
    expect(await bed.t.redis.exists(bed.keys.lease(deviceId))).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(sockets).toHaveLength(1);
  });

  it('411: stops with error, no reconnect', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    await server.start(deviceId);
    const socket = await waitForOpenSocket(sockets, 1);
    await socket.end(new Boom('Multi-device beta not joined', { statusCode: 411 }));
    await eventually(() => !server.runtime.isRunning(deviceId));
    expect(await liveStatus(deviceId)).toBe('error');
    expect((await events(deviceId, 'error'))[0]!.details).toMatchObject({ code: 411 });
    expect(await bed.t.redis.exists(bed.keys.authState(deviceId))).toBe(1); // the session is kept
    expect((await bed.store.getDevice(deviceId))?.desiredState).toBe('stopped');
    expect(sockets).toHaveLength(1);
  });

  it('QR codes are published for any server to read (never logged), counted, and a device never scanned stops after the round limit', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    await server.start(deviceId);

    for (let round = 1; round <= 2; round++) {
      const socket = await waitForOpenSocket(sockets, round);
      // What Baileys emits when WhatsApp sends pair-device refs.
      socket.ev.emit('connection.update', { qr: `2@ref-${round}-a,noise,identity,adv` });
      socket.ev.emit('connection.update', { qr: `2@ref-${round}-b,noise,identity,adv` });
      await eventually(async () => (await readDeviceCodes(bed.t.redis, bed.keys, deviceId)).qr?.qr === `2@ref-${round}-b,noise,identity,adv`);
      const { qr } = await readDeviceCodes(bed.t.redis, bed.keys, deviceId);
      expect(qr).toMatchObject({ refresh: round * 2, round });
      expect(qr!.expiresAt).toBeGreaterThan(Date.now());
      expect(qr!.expiresAt).toBeLessThanOrEqual(Date.now() + 20_000 + 1000);
      expect(await bed.t.redis.pttl(bed.keys.qrCode(deviceId))).toBeGreaterThan(0);
      expect(await liveStatus(deviceId)).toBe('qr');
      // The refs ran out (Baileys ends the socket with 408).
      await socket.end(new Boom('QR refs attempts ended', { statusCode: 408 }));
    }
    await eventually(() => !server.runtime.isRunning(deviceId));
    const qrEvents = await events(deviceId, 'qr');
    expect(qrEvents.map((e) => (e.details as { refresh: number }).refresh)).toEqual([1, 2, 3, 4]);
    expect(JSON.stringify(await bed.connectionLog(deviceId))).not.toContain('2@ref-');
    expect(await liveStatus(deviceId)).toBe('disconnected');
    await eventually(async () => (await bed.store.getDevice(deviceId))?.status === 'disconnected');
    const device = await bed.store.getDevice(deviceId);
    expect(device).toMatchObject({ desiredState: 'stopped' });
    expect(device!.errorMessage).toMatch(/not linked: 2 rounds \(4 codes\)/);
    expect(await readDeviceCodes(bed.t.redis, bed.keys, deviceId)).toEqual({ qr: null, pairing: null });
    expect(sockets).toHaveLength(2);
  });

  it('a pairing-code device asks Baileys for a pairing code and publishes it', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice({ connectionMethod: 'pairing', phoneForPairing: '4915112345678' });
    await server.start(deviceId);
    const socket = await waitForOpenSocket(sockets, 1);
    socket.ev.emit('connection.update', { qr: '2@ref-1,noise,identity,adv' });
    await eventually(async () => (await readDeviceCodes(bed.t.redis, bed.keys, deviceId)).pairing !== null);
    const { pairing, qr } = await readDeviceCodes(bed.t.redis, bed.keys, deviceId);
    expect(qr).toBeNull();
    expect(pairing!.pairingCode).toMatch(/^[A-Z0-9]{8}$/);
    expect(await liveStatus(deviceId)).toBe('pairing');
    expect(await events(deviceId, 'pairing_code')).toHaveLength(1);
    expect(JSON.stringify(await bed.connectionLog(deviceId))).not.toContain(pairing!.pairingCode);
    // Baileys wrote the pending pairing into the creds, through the fenced auth state.
    const creds = JSON.parse((await bed.t.redis.hget(bed.keys.authState(deviceId), 'creds'))!) as { pairingCode?: string };
    expect(creds.pairingCode).toBe(pairing!.pairingCode);
  });

  it("what WhatsApp sends back becomes the device's events, in order and once each; a server that lost the lease adds none", async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    await server.start(deviceId);
    const socket = await waitForOpenSocket(sockets, 1);
    const log = server.events;
    const chat = '4915112345678@s.whatsapp.net';
    const text = (id: string, body: string): WAMessage => ({ key: { remoteJid: chat, fromMe: false, id }, messageTimestamp: 1_764_700_000, pushName: 'Ada', message: { conversation: body } });

    socket.ev.emit('messages.upsert', { type: 'notify', messages: [text('WA-1', 'hello'), text('WA-2', 'again')] });
    // WhatsApp delivering a message again (as it does to a new socket after a failover) adds nothing.
    socket.ev.emit('messages.upsert', { type: 'notify', messages: [text('WA-1', 'hello')] });
    socket.ev.emit('message-receipt.update', [{ key: { remoteJid: chat, fromMe: true, id: 'OUT-1' }, receipt: { userJid: chat, receiptTimestamp: 1_764_700_001 } }]);
    const messageEvents = async () => (await log.read(deviceId, 0, 100)).filter((e) => e.type.startsWith('message.'));
    await eventually(async () => (await messageEvents()).length >= 3);
    await new Promise((r) => setTimeout(r, 300)); // a repeat appended late would show now
    const events = await messageEvents();
    expect(events.map((e) => [e.type, (e.data as { waMessageId: string }).waMessageId])).toEqual([
      ['message.received', 'WA-1'],
      ['message.received', 'WA-2'],
      ['message.ack', 'OUT-1'],
    ]);
    expect(events[1]!.sequence).toBeGreaterThan(events[0]!.sequence);
    expect(events[2]!.sequence).toBeGreaterThan(events[1]!.sequence);
    expect(events[0]!.data).toMatchObject({ chatJid: chat, senderJid: chat, pushName: 'Ada', type: 'text', text: 'hello' });
    expect(events[2]!.data).toMatchObject({ status: 'delivered', atMs: 1_764_700_001_000 });

    // The lease moves while the old socket still reports (an owner that has not noticed yet):
    // the log refuses its event, and the refusal is counted.
    await bed.steal(deviceId, 'srv-b');
    socket.ev.emit('messages.upsert', { type: 'notify', messages: [text('WA-3', 'late')] });
    await eventually(async () => ((await server.metrics.staleEvents.get()).values[0]?.value ?? 0) >= 1);
    expect((await messageEvents()).map((e) => (e.data as { waMessageId: string }).waMessageId)).toEqual(['WA-1', 'WA-2', 'OUT-1']);
  });

  it('stopping the device closes the socket without logging out; the session stays', async () => {
    mode = 'hold';
    const { server, sockets } = await baileysServer('srv-a');
    const deviceId = await bed.createDevice();
    await server.start(deviceId);
    const socket = await waitForOpenSocket(sockets, 1);
    await server.runtime.stop(deviceId, 'lease lost');
    expect(socket.ws.isOpen).toBe(false);
    expect(await bed.t.redis.exists(bed.keys.authState(deviceId))).toBe(1);
    expect(await events(deviceId, 'disconnected')).toEqual([]);
    expect(await liveStatus(deviceId)).not.toBe('logged_out');
  });
});
