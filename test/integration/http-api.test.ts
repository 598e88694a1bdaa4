import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../helpers/http-api.js';
import { eventView } from '../../src/events/event-log.js';

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi();
});
afterAll(async () => {
  await api?.close();
});

async function goLive(serverId: string, capacity = 100): Promise<void> {
  await api.redis.redis
    .multi()
    .hset(api.keys.server(serverId), { capacity, priority: 100, draining: 0, responseTimeMs: 1, heartbeatAt: Date.now() })
    .pexpire(api.keys.server(serverId), 60_000)
    .sadd(api.keys.servers, serverId)
    .exec();
}

async function userKey(userId = randomUUID()): Promise<{ userId: string; key: string; id: string }> {
  const res = await api.call('POST', `/api/users/${userId}/api-keys`, { body: { name: 'test' } });
  expect(res.status).toBe(201);
  return { userId, key: res.body.key, id: res.body.id };
}

async function newDevice(userId: string, extra: Record<string, unknown> = {}): Promise<any> {
  const res = await api.call('POST', '/api/devices', { body: { userId, name: 'shop', ...extra } });
  expect(res.status).toBe(201);
  return res.body;
}

async function inbox(serverId: string): Promise<Array<Record<string, string>>> {
  const entries = await api.redis.redis.xrange(api.keys.inbox(serverId), '-', '+');
  return entries.map(([, fields]) => Object.fromEntries(fields.flatMap((_, i) => (i % 2 === 0 ? [[fields[i], fields[i + 1]]] : []))));
}

describe('public endpoints and conventions', () => {
  it('answers /health, /ready and /openapi.json without a key, with security headers', async () => {
    const health = await api.call('GET', '/health', { key: null });
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'ok', serverId: 'api-test' });
    expect(health.headers.get('x-content-type-options')).toBe('nosniff');
    expect(health.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect((await api.call('GET', '/ready', { key: null })).body).toEqual({ ready: true });

    const doc = await api.call('GET', '/openapi.json', { key: null });
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining(['/api/devices', '/api/devices/{id}', '/api/devices/{id}/qr', '/api/servers/{id}/health-check', '/api/cluster', '/api/users/{userId}/api-keys', '/api/api-keys/{id}']),
    );
    expect(doc.body.paths['/api/devices'].post.requestBody.content['application/json'].schema.additionalProperties).toBe(false);
  });

  it('answers unknown routes with 404 in the error shape', async () => {
    expect(await api.call('GET', '/api/nothing-here')).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
  });

  it('allows CORS only for configured origins', async () => {
    const allowed = await api.call('OPTIONS', '/api/devices', { key: null, headers: { origin: 'https://dashboard.example', 'access-control-request-method': 'POST' } });
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://dashboard.example');
    const refused = await api.call('GET', '/health', { key: null, headers: { origin: 'https://evil.example' } });
    expect(refused.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('authentication', () => {
  it('401 without a key or with an unknown one; 403 for a user key on admin endpoints', async () => {
    expect(await api.call('GET', '/api/devices', { key: null })).toMatchObject({ status: 401, body: { error: { code: 'unauthorized' } } });
    expect((await api.call('GET', '/api/devices', { key: 'wfk_forged' })).status).toBe(401);
    expect((await api.call('GET', '/api/devices', { headers: { authorization: 'Basic abc' }, key: null })).status).toBe(401);
    const { key } = await userKey();
    for (const [method, path] of [
      ['GET', '/api/servers'],
      ['GET', '/api/cluster'],
      ['PUT', '/api/servers/srv-x'],
      ['POST', `/api/users/${randomUUID()}/api-keys`],
      ['DELETE', `/api/api-keys/${randomUUID()}`],
    ] as const) {
      expect((await api.call(method, path, { key, body: {} })).status, `${method} ${path}`).toBe(403);
    }
  });

  it('stores API keys only as hashes; a revoked key stops working', async () => {
    const { key, id, userId } = await userKey();
    expect(key).toMatch(/^wfk_[A-Za-z0-9_-]{43}$/);
    const found = await api.store.findApiKey((await import('../../src/http/auth.js')).hashApiKey(key));
    expect(found).toMatchObject({ id, userId });
    const rows = await fetchRows(`select key_hash from api_keys where id = '${id}'`);
    expect(JSON.stringify(rows)).not.toContain(key);
    expect((await api.call('GET', '/api/devices', { key })).status).toBe(200);
    expect((await api.call('DELETE', `/api/api-keys/${id}`)).status).toBe(204);
    expect((await api.call('DELETE', `/api/api-keys/${id}`)).status).toBe(404);
    expect((await api.call('GET', '/api/devices', { key })).status).toBe(401);
    expect((await api.call('DELETE', '/api/api-keys/not-a-uuid')).status).toBe(422);
  });
});

async function fetchRows(sql: string): Promise<unknown[]> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: api.db.url });
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } finally {
    await client.end();
  }
}

describe('devices', () => {
  it('creates a device and answers it in the contract shape', async () => {
    const userId = randomUUID();
    const res = await api.call('POST', '/api/devices', { body: { userId, name: ' Shop ', webhookUrl: 'https://hooks.example/wa' } });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.any(String),
      userId,
      name: 'Shop',
      status: 'disconnected',
      desiredState: 'stopped',
      connectionMethod: 'qr',
      phoneNumber: null,
      assignedServerId: null,
      lease: null,
      lastConnectedAt: null,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });
    expect((await api.call('GET', `/api/devices/${res.body.id}`)).body).toEqual(res.body);
  });

  it('refuses bad bodies: 400 broken JSON, 415 not JSON, 413 too large, 422 schema violations and unknown fields', async () => {
    const userId = randomUUID();
    expect((await api.call('POST', '/api/devices', { rawBody: '{"userId": ', headers: { 'content-type': 'application/json' } })).status).toBe(400);
    expect((await api.call('POST', '/api/devices', { rawBody: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status).toBe(415);
    const huge = await api.call('POST', '/api/devices', { body: { userId, name: 'x'.repeat(300_000) } });
    expect(huge).toMatchObject({ status: 413, body: { error: { code: 'body_too_large' } } });
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ userId, name: 'x', color: 'red' }, 'body'],
      [{ userId, name: '' }, 'body.name'],
      [{ userId: 'nope', name: 'x' }, 'body.userId'],
      [{ userId, name: 'x', connectionMethod: 'pairing' }, 'body.phoneForPairing'],
      [{ userId, name: 'x', connectionMethod: 'pairing', phoneForPairing: '12ab' }, 'body.phoneForPairing'],
      [{ userId, name: 'x', webhookUrl: 'ftp://files.example/x' }, 'body.webhookUrl'],
      [{ userId, name: 'x', webhookUrl: 'javascript:alert(1)' }, 'body.webhookUrl'],
      [{ name: 'x' }, 'body.userId'],
    ];
    for (const [body, path] of cases) {
      const res = await api.call('POST', '/api/devices', { body });
      expect(res.status, JSON.stringify(body)).toBe(422);
      expect(res.body.error.code).toBe('validation_failed');
      expect(res.body.error.details.map((d: { path: string }) => d.path), JSON.stringify(body)).toContain(path);
    }
    expect((await api.call('GET', '/api/devices/not-a-uuid')).status).toBe(422);
    expect((await api.call('GET', `/api/devices/${randomUUID()}`)).body.error.code).toBe('device_not_found');
    expect((await api.call('GET', '/api/devices?limit=0')).status).toBe(422);
    expect((await api.call('GET', '/api/devices?sort=name')).status).toBe(422);
  });

  it('connect places the device on a live server; disconnect stops it on its owner, keeping the session', async () => {
    await goLive('api-srv-1');
    const device = await newDevice(randomUUID());
    const connected = await api.call('POST', `/api/devices/${device.id}/connect`);
    expect(connected).toMatchObject({ status: 202, body: { desiredState: 'running' } });
    expect(await api.redis.redis.sismember(api.keys.wanted, device.id)).toBe(1);
    expect(await inbox('api-srv-1')).toContainEqual({ type: 'place', deviceId: device.id });

    // api-srv-1 claims it, as its coordinator would; the API shows owner, token and time left.
    expect(await api.leases.claim(device.id, 'api-srv-1', 60_000, { viaPlacement: true })).toMatchObject({ outcome: 'claimed' });
    const view = (await api.call('GET', `/api/devices/${device.id}`)).body;
    expect(view.lease).toMatchObject({ serverId: 'api-srv-1', token: 1 });
    expect(view.lease.ttlMs).toBeGreaterThan(50_000);
    expect(view.assignedServerId).toBe('api-srv-1');

    await api.store.saveSession(device.id, { me: 'x' }, {}, 1);
    const stopped = await api.call('POST', `/api/devices/${device.id}/disconnect`);
    expect(stopped).toMatchObject({ status: 202, body: { desiredState: 'stopped' } });
    expect(await api.redis.redis.sismember(api.keys.wanted, device.id)).toBe(0);
    expect(await inbox('api-srv-1')).toContainEqual({ type: 'stop', deviceId: device.id });
    expect((await api.store.getSession(device.id))?.cleared).toBe(false);
  });

  it('logout tells the owner, or clears the session itself (fenced) when nobody runs the device', async () => {
    await goLive('api-srv-2');
    const owned = await newDevice(randomUUID());
    await api.call('POST', `/api/devices/${owned.id}/connect`);
    await api.leases.claim(owned.id, 'api-srv-2', 60_000);
    expect((await api.call('POST', `/api/devices/${owned.id}/logout`)).status).toBe(202);
    expect(await inbox('api-srv-2')).toContainEqual({ type: 'logout', deviceId: owned.id });

    const idle = await newDevice(randomUUID());
    await api.store.saveSession(idle.id, { me: 'y' }, {}, 3);
    await api.redis.redis.set(api.keys.fence(idle.id), 4);
    expect((await api.call('POST', `/api/devices/${idle.id}/logout`)).status).toBe(202);
    expect(await api.store.getSession(idle.id)).toMatchObject({ cleared: true, epoch: 4 });
  });

  it("reads a device's events after a sequence, in pages, from any server; another user's device is 403", async () => {
    const owner = await userKey();
    const device = await newDevice(owner.userId);
    await goLive('api-srv-ev');
    const claim = await api.leases.claim(device.id, 'api-srv-ev', 60_000);
    expect(claim.outcome).toBe('claimed');
    const holderLease = `api-srv-ev:${(claim as { token: number }).token}`;
    for (const waMessageId of ['WA-1', 'WA-2', 'WA-3']) {
      await api.events.append(device.id, holderLease, { id: `ev-${device.id}-${waMessageId}`, type: 'message.received', data: { waMessageId } });
    }
    const first = await api.call('GET', `/api/devices/${device.id}/events?limit=2`, { key: owner.key });
    expect(first.status).toBe(200);
    expect(first.body.events.map((e: { sequence: number; data: { waMessageId: string } }) => [e.sequence, e.data.waMessageId])).toEqual([[1, 'WA-1'], [2, 'WA-2']]);
    expect(first.body.events[0]).toEqual({ id: `ev-${device.id}-WA-1`, type: 'message.received', deviceId: device.id, sequence: 1, createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), data: { waMessageId: 'WA-1' } });
    expect(first.body.last).toBe(2);
    const twin = await api.twin();
    const rest = await api.call('GET', `/api/devices/${device.id}/events?after=${first.body.last}`, { key: owner.key, base: twin });
    expect(rest.body).toMatchObject({ events: [{ sequence: 3, data: { waMessageId: 'WA-3' } }], last: 3 });
    expect((await api.call('GET', `/api/devices/${device.id}/events?after=3`)).body).toEqual({ events: [], last: 3 });
    expect((await api.call('GET', `/api/devices/${device.id}/events?after=-1`)).status).toBe(422);
    expect((await api.call('GET', `/api/devices/${device.id}/events`, { key: (await userKey()).key })).status).toBe(403);
  });

  it('streams a device\'s events as Server-Sent Events from any server, from the next one or after Last-Event-ID', async () => {
    const owner = await userKey();
    const device = await newDevice(owner.userId);
    await goLive('api-srv-sse');
    const claim = await api.leases.claim(device.id, 'api-srv-sse', 60_000);
    const holderLease = `api-srv-sse:${(claim as { token: number }).token}`;
    const append = (n: number) => api.events.append(device.id, holderLease, { id: `sse-${device.id}-${n}`, type: 'message.received', data: { n } });
    await append(1);

    const twin = await api.twin();
    // Without a starting point: only what comes after the stream opened.
    const live = await openStream(`${twin}/api/events/stream?deviceId=${device.id}`, owner.key);
    expect(live.status).toBe(200);
    expect(live.contentType).toMatch(/^text\/event-stream/);
    await append(2);
    await append(3);
    const seen = await live.take(2);
    expect(seen.map((e) => [e.id, e.event])).toEqual([['2', 'message.received'], ['3', 'message.received']]);
    expect(JSON.parse(seen[0]!.data)).toEqual({ id: `sse-${device.id}-2`, type: 'message.received', deviceId: device.id, sequence: 2, createdAt: expect.any(String), data: { n: 2 } });
    live.close();

    // A reconnecting EventSource sends the last id it saw: it gets exactly what followed.
    await append(4);
    const resumed = await openStream(`${api.url}/api/events/stream?deviceId=${device.id}`, owner.key, { 'Last-Event-ID': '2' });
    expect((await resumed.take(2)).map((e) => e.id)).toEqual(['3', '4']);
    resumed.close();
    const fromAfter = await openStream(`${api.url}/api/events/stream?deviceId=${device.id}&after=0`, owner.key);
    expect((await fromAfter.take(4)).map((e) => JSON.parse(e.data).data.n)).toEqual([1, 2, 3, 4]);
    fromAfter.close();

    expect((await api.call('GET', `/api/events/stream?deviceId=${device.id}`, { key: (await userKey()).key })).status).toBe(403);
    expect((await api.call('GET', '/api/events/stream')).status).toBe(422);
    expect((await api.call('GET', `/api/events/stream?deviceId=${randomUUID()}`)).status).toBe(404);
  });

  it("reads a device's events from the store where Redis's stream no longer has them (trimmed or lost), in the same shape, pulled or streamed", async () => {
    const owner = await userKey();
    const device = await newDevice(owner.userId);
    await goLive('api-srv-ev');
    const claim = await api.leases.claim(device.id, 'api-srv-ev', 60_000);
    const holderLease = `api-srv-ev:${(claim as { token: number }).token}`;
    for (let n = 1; n <= 6; n++) await api.events.append(device.id, holderLease, { id: `ev-${device.id}-${n}`, type: 'message.received', data: { n } });
    const all = (await api.events.read(device.id, 0, 100)).map((e) => eventView(device.id, e));
    // The write-behind has brought 1..4 to the store so far.
    await api.store.applyRecords(
      all.slice(0, 4).map((e) => ({ kind: 'inbound_event', at: e.createdAt, deviceId: device.id, sequence: e.sequence, eventId: e.id, type: e.type, data: e.data, createdAt: e.createdAt })),
    );
    const read = async (query: string) => (await api.call('GET', `/api/devices/${device.id}/events?${query}`, { key: owner.key })).body;

    // The stream's cap trimmed 1 and 2: they come from the store, the rest from Redis.
    await api.redis.redis.xtrim(api.keys.events(device.id), 'MINID', '3-0');
    expect(await read('after=0')).toEqual({ events: all, last: 6 });
    expect(await read('after=0&limit=3')).toEqual({ events: all.slice(0, 3), last: 3 });
    expect(await read('after=3')).toEqual({ events: all.slice(3), last: 6 });
    // A stream resumed from before what Redis has is filled in from the store the same way.
    const resumed = await openStream(`${api.url}/api/events/stream?deviceId=${device.id}`, owner.key, { 'Last-Event-ID': '1' });
    expect((await resumed.take(5)).map((e) => JSON.parse(e.data))).toEqual(all.slice(1));
    resumed.close();

    // Redis lost the stream: what the store has is still there; nothing newer is nothing.
    await api.redis.redis.del(api.keys.events(device.id));
    expect(await read('after=1&limit=2')).toEqual({ events: all.slice(1, 3), last: 3 });
    expect(await read('after=4')).toEqual({ events: [], last: 4 });
  });

  it('deletes a device: 204, then 404, its event log and numbering gone', async () => {
    const device = await newDevice(randomUUID());
    await api.redis.redis.set(api.keys.eventSeq(device.id), 7);
    await api.redis.redis.xadd(api.keys.events(device.id), '7-0', 'id', 'e7', 'type', 'device.status', 'at', Date.now(), 'data', '{}');
    expect((await api.call('DELETE', `/api/devices/${device.id}`)).status).toBe(204);
    expect(await api.redis.redis.exists(api.keys.eventSeq(device.id), api.keys.events(device.id))).toBe(0);
    expect((await api.call('GET', `/api/devices/${device.id}`)).status).toBe(404);
    expect((await api.call('DELETE', `/api/devices/${device.id}`)).status).toBe(404);
  });

  it('hands out the latest QR and pairing code from Redis, or 404 with the status', async () => {
    const device = await newDevice(randomUUID());
    const missing = await api.call('GET', `/api/devices/${device.id}/qr`);
    expect(missing).toMatchObject({ status: 404, body: { error: { code: 'qr_not_available', details: { status: 'disconnected' } } } });
    expect((await api.call('GET', `/api/devices/${device.id}/pairing-code`)).body.error.code).toBe('pairing_code_not_available');
    const expiresAt = Date.now() + 20_000;
    await api.redis.redis.set(api.keys.qrCode(device.id), JSON.stringify({ qr: '2@abc,def', expiresAt, refresh: 1, round: 1 }), 'PX', 20_000);
    expect(await api.call('GET', `/api/devices/${device.id}/qr`)).toMatchObject({ status: 200, body: { qr: '2@abc,def', expiresAt: new Date(expiresAt).toISOString() } });
  });

  it("a user key sees and acts on its own devices only: 403 on every endpoint for another user's device", async () => {
    const alice = await userKey();
    const bob = await userKey();
    const mine = (await api.call('POST', '/api/devices', { key: alice.key, body: { name: 'alice phone' } })).body;
    expect(mine.userId).toBe(alice.userId);
    const bobs = await newDevice(bob.userId);
    expect((await api.call('POST', '/api/devices', { key: alice.key, body: { userId: bob.userId, name: 'x' } })).status).toBe(403);
    expect((await api.call('GET', `/api/devices?userId=${bob.userId}`, { key: alice.key })).status).toBe(403);
    const listed = await api.call('GET', '/api/devices', { key: alice.key });
    expect(listed.body.devices.map((d: { id: string }) => d.id)).toEqual([mine.id]);

    for (const [method, path] of [
      ['GET', `/api/devices/${bobs.id}`],
      ['POST', `/api/devices/${bobs.id}/connect`],
      ['POST', `/api/devices/${bobs.id}/disconnect`],
      ['POST', `/api/devices/${bobs.id}/logout`],
      ['DELETE', `/api/devices/${bobs.id}`],
      ['GET', `/api/devices/${bobs.id}/qr`],
      ['GET', `/api/devices/${bobs.id}/pairing-code`],
    ] as const) {
      expect((await api.call(method, path, { key: alice.key })).status, `${method} ${path}`).toBe(403);
    }
    expect(await api.store.getDevice(bobs.id)).toMatchObject({ desiredState: 'stopped' });
    expect(await api.redis.redis.sismember(api.keys.wanted, bobs.id)).toBe(0);
  });
});

describe('messages', () => {
  const waiting = async (deviceId: string) => {
    const { Queue } = await import('bullmq');
    const { outboundQueueName } = await import('../../src/queues/outbound.js');
    const queue = new Queue(outboundQueueName(deviceId), { connection: api.redis.redis, prefix: api.keys.bullPrefix });
    try {
      return (await queue.getJobs(['waiting', 'delayed', 'active'])).map((j) => j.id);
    } finally {
      await queue.close();
    }
  };

  it('accepts a message (202) onto the device queue and reads it back by id', async () => {
    const device = await newDevice(randomUUID());
    const res = await api.call('POST', `/api/devices/${device.id}/messages`, { body: { to: '+4915112345678', type: 'text', text: 'hello' } });
    expect(res).toMatchObject({ status: 202, body: { id: expect.any(String), status: 'queued' } });
    expect(await waiting(device.id)).toEqual([res.body.id]);
    const read = await api.call('GET', `/api/messages/${res.body.id}`);
    expect(read.body).toEqual({
      id: res.body.id,
      deviceId: device.id,
      to: '+4915112345678',
      type: 'text',
      status: 'queued',
      acceptedAt: expect.any(String),
      sentAt: null,
      deliveredAt: null,
      readAt: null,
      waMessageId: null,
      error: null,
    });
    expect((await api.call('GET', `/api/messages/${randomUUID()}`)).status).toBe(404);
  });

  it("reads a message's receipts from the store once Redis's record is gone", async () => {
    const device = await newDevice(randomUUID());
    const res = await api.call('POST', `/api/devices/${device.id}/messages`, { body: { to: '+4915112345678', type: 'text', text: 'hello' } });
    const receipt = (status: 'delivered' | 'read', receivedAt: string) => ({ kind: 'message_receipt', at: receivedAt, deviceId: device.id, messageId: res.body.id, status, receivedAt }) as const;
    await api.store.applyRecords([receipt('delivered', '2026-01-01T12:00:01.000Z'), receipt('read', '2026-01-01T12:00:09.000Z')]);
    await api.redis.redis.del(api.keys.message(res.body.id));
    const read = await api.call('GET', `/api/messages/${res.body.id}`);
    expect(read.body).toMatchObject({ id: res.body.id, status: 'queued', deliveredAt: '2026-01-01T12:00:01.000Z', readAt: '2026-01-01T12:00:09.000Z' });
  });

  it('one idempotency key, sent twice and concurrently to two servers, yields one message and one job', async () => {
    const device = await newDevice(randomUUID());
    const twin = await api.twin();
    const body = { to: '4915112345678@s.whatsapp.net', type: 'image', mediaUrl: 'https://cdn.example/a.png', caption: 'look' };
    const headers = { 'idempotency-key': 'order-4711' };
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => api.call('POST', `/api/devices/${device.id}/messages`, { body, headers, base: i % 2 ? twin : undefined })),
    );
    expect(answers.map((a) => a.status)).toEqual([202, 202, 202, 202, 202, 202]);
    expect(new Set(answers.map((a) => a.body.id)).size).toBe(1);
    expect(await waiting(device.id)).toEqual([answers[0]!.body.id]);
  });

  it('refuses invalid messages with 422 and details', async () => {
    const device = await newDevice(randomUUID());
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ to: '12', type: 'text', text: 'x' }, 'body.to'],
      [{ to: '4915112345678', type: 'text' }, 'body.text'],
      [{ to: '4915112345678', type: 'image' }, 'body.mediaUrl'],
      [{ to: '4915112345678', type: 'video', mediaUrl: 'ftp://x/y.mp4' }, 'body.mediaUrl'],
      [{ to: '4915112345678', type: 'sticker', text: 'x' }, 'body.type'],
      [{ to: '4915112345678', type: 'text', text: 'x'.repeat(5000) }, 'body.text'],
      [{ to: '4915112345678', type: 'text', text: 'x', priority: 1 }, 'body'],
    ];
    for (const [body, path] of cases) {
      const res = await api.call('POST', `/api/devices/${device.id}/messages`, { body });
      expect(res.status, JSON.stringify(body)).toBe(422);
      expect(res.body.error.details.map((d: { path: string }) => d.path)).toContain(path);
    }
    const badKey = await api.call('POST', `/api/devices/${device.id}/messages`, { body: { to: '4915112345678', type: 'text', text: 'x' }, headers: { 'idempotency-key': 'has spaces' } });
    expect(badKey.status).toBe(422);
    expect((await api.call('POST', `/api/devices/${randomUUID()}/messages`, { body: { to: '4915112345678', type: 'text', text: 'x' } })).status).toBe(404);
    expect(await waiting(device.id)).toEqual([]);
  });

  it("keeps the seed's POST /send-message working", async () => {
    const device = await newDevice(randomUUID());
    const res = await api.call('POST', '/send-message', { body: { deviceId: device.id, targetJid: '4915112345678@s.whatsapp.net', messageType: 'text', message: 'hi' } });
    expect(res).toMatchObject({ status: 202, body: { success: true, messageId: expect.any(String) } });
    expect((await api.call('GET', `/api/messages/${res.body.messageId}`)).body).toMatchObject({ type: 'text', to: '4915112345678@s.whatsapp.net' });
    const media = await api.call('POST', '/send-message', { body: { deviceId: device.id, targetJid: '4915112345678', messageType: 'document', mediaUrl: 'https://x.example/a.pdf', message: 'invoice' } });
    expect(media.status).toBe(202);
    expect((await api.call('POST', '/send-message', { body: { deviceId: device.id, targetJid: '4915112345678', messageType: 'image' } })).status).toBe(422);
  });

  it("a user key cannot message another user's device or read its messages", async () => {
    const alice = await userKey();
    const bob = await userKey();
    const bobs = await newDevice(bob.userId);
    const sent = await api.call('POST', `/api/devices/${bobs.id}/messages`, { key: bob.key, body: { to: '4915112345678', type: 'text', text: 'mine' } });
    expect(sent.status).toBe(202);
    expect((await api.call('POST', `/api/devices/${bobs.id}/messages`, { key: alice.key, body: { to: '4915112345678', type: 'text', text: 'x' } })).status).toBe(403);
    expect((await api.call('POST', '/send-message', { key: alice.key, body: { deviceId: bobs.id, targetJid: '4915112345678', message: 'x' } })).status).toBe(403);
    expect((await api.call('GET', `/api/messages/${sent.body.id}`, { key: alice.key })).status).toBe(403);
    expect((await api.call('GET', `/api/messages/${sent.body.id}`, { key: bob.key })).status).toBe(200);
    expect(await waiting(bobs.id)).toEqual([sent.body.id]);
  });

  it("sets a device's own send rate, reads it back, resets it, and refuses bad values and other users", async () => {
    const owner = await userKey();
    const other = await userKey();
    const device = await newDevice(owner.userId);
    const path = `/api/devices/${device.id}/rate-limit`;
    expect((await api.call('GET', path, { key: owner.key })).body).toEqual({ deviceId: device.id, messagesPerMinute: 20, source: 'default' });
    const set = await api.call('PUT', path, { key: owner.key, body: { messagesPerMinute: 7 } });
    expect(set).toMatchObject({ status: 200, body: { deviceId: device.id, messagesPerMinute: 7, source: 'device' } });
    // Where every server's send script reads it.
    expect(await api.redis.redis.hget(api.keys.rateOverrides, device.id)).toBe('7');
    for (const bad of [{ messagesPerMinute: 0 }, { messagesPerMinute: 1.5 }, { messagesPerMinute: 'fast' }, {}, { messagesPerMinute: 5, burst: 2 }]) {
      expect((await api.call('PUT', path, { key: owner.key, body: bad })).status).toBe(422);
    }
    expect((await api.call('PUT', path, { key: other.key, body: { messagesPerMinute: 100 } })).status).toBe(403);
    expect((await api.call('GET', `/api/devices/${randomUUID()}/rate-limit`)).status).toBe(404);
    expect((await api.call('GET', path, { key: owner.key })).body).toMatchObject({ messagesPerMinute: 7 });
    expect((await api.call('PUT', path, { key: owner.key, body: { messagesPerMinute: null } })).body).toMatchObject({ messagesPerMinute: 20, source: 'default' });
    expect(await api.redis.redis.hexists(api.keys.rateOverrides, device.id)).toBe(0);
  });
});

describe('servers and cluster (admin)', () => {
  let target: Server;
  let targetUrl: string;
  beforeAll(async () => {
    target = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok' }));
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((r) => target.close(r));
  });

  it('registers, updates, health-checks, drains and removes servers', async () => {
    const put = await api.call('PUT', '/api/servers/adm-1', { body: { name: 'Admin one', url: targetUrl, type: 'vps', maxCapacity: 50, priority: 5 } });
    expect(put).toMatchObject({ status: 200, body: { id: 'adm-1', name: 'Admin one', url: targetUrl, maxCapacity: 50, priority: 5, live: false, leases: 0 } });
    expect((await api.call('PATCH', '/api/servers/adm-1', { body: { priority: 7 } })).body).toMatchObject({ priority: 7, maxCapacity: 50 });
    expect((await api.call('PATCH', '/api/servers/adm-1', { body: {} })).status).toBe(422);
    expect((await api.call('PATCH', '/api/servers/adm-nope', { body: { priority: 1 } })).status).toBe(404);
    expect((await api.call('PUT', '/api/servers/admin', { body: { name: 'x', url: targetUrl, type: 'vps', maxCapacity: 1, priority: 1 } })).status).toBe(422);
    expect((await api.call('PUT', '/api/servers/..%2Fetc', { body: { name: 'x', url: targetUrl, type: 'vps', maxCapacity: 1, priority: 1 } })).status).toBe(422);
    expect((await api.call('PUT', '/api/servers/adm-1', { body: { name: 'x', url: targetUrl, type: 'mainframe', maxCapacity: 1, priority: 1 } })).status).toBe(422);

    const check = await api.call('POST', '/api/servers/adm-1/health-check');
    expect(check).toMatchObject({ status: 200, body: { healthy: true } });
    expect(check.body.responseTimeMs).toBeGreaterThanOrEqual(0);
    expect((await api.store.getServer('adm-1'))?.lastHealthCheck).toBeInstanceOf(Date);

    expect((await api.call('POST', '/api/servers/adm-1/drain')).status).toBe(409);
    await goLive('adm-1');
    expect((await api.call('POST', '/api/servers/adm-1/drain')).status).toBe(202);
    expect(await inbox('adm-1')).toContainEqual({ type: 'drain' });

    await api.redis.redis.sadd(api.keys.owned('adm-1'), randomUUID());
    expect(await api.call('DELETE', '/api/servers/adm-1')).toMatchObject({ status: 409, body: { error: { code: 'server_holds_leases', details: { leases: 1 } } } });
    await api.redis.redis.del(api.keys.owned('adm-1'));
    expect((await api.call('DELETE', '/api/servers/adm-1')).status).toBe(204);
    expect((await api.call('DELETE', '/api/servers/adm-1')).status).toBe(404);
  });

  it('records a failed health check, and limits health-check triggers more strictly (429 with Retry-After)', async () => {
    await api.call('PUT', '/api/servers/adm-2', { body: { name: 'two', url: 'http://127.0.0.1:1', type: 'vps', maxCapacity: 5, priority: 1 } });
    const first = await api.call('POST', '/api/servers/adm-2/health-check');
    expect(first.body).toMatchObject({ healthy: false, responseTimeMs: null });
    expect((await api.store.getServer('adm-2'))?.healthCheckFailures).toBe(1);
    await api.call('POST', '/api/servers/adm-2/health-check');
    await api.call('POST', '/api/servers/adm-2/health-check');
    const limited = await api.call('POST', '/api/servers/adm-2/health-check');
    expect(limited).toMatchObject({ status: 429, body: { error: { code: 'rate_limited' } } });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('GET /api/servers and /api/cluster show live state, devices by status and recent events', async () => {
    await goLive('adm-3', 40);
    await api.call('PUT', '/api/servers/adm-3', { body: { name: 'three', url: targetUrl, type: 'cloud', maxCapacity: 40, priority: 2 } });
    const servers = (await api.call('GET', '/api/servers')).body.servers;
    expect(servers.find((s: { id: string }) => s.id === 'adm-3')).toMatchObject({ live: true, draining: false, leases: 0, type: 'cloud' });
    await api.store.appendLeaseEvent({ deviceId: randomUUID(), serverId: 'adm-3', eventType: 'expire', epoch: 9 });
    const cluster = (await api.call('GET', '/api/cluster')).body;
    expect(cluster.devices.total).toBeGreaterThan(0);
    expect(cluster.devices.byStatus.disconnected).toBeGreaterThan(0);
    expect(cluster.recentEvents[0]).toMatchObject({ serverId: 'adm-3', eventType: 'expire', epoch: 9 });
  });
});

describe('rate limits', () => {
  it('per key, shared by every server: the 6th call within the minute is 429, whichever server answers it', async () => {
    const limited = await startTestApi({ perKeyPerMinute: 5 });
    try {
      const twin = await limited.twin();
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) statuses.push((await limited.call('GET', '/api/servers', { base: i % 2 ? twin : undefined })).status);
      expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    } finally {
      await limited.close();
    }
  });

  it('per IP, even for unknown keys', async () => {
    const limited = await startTestApi({ perIpPerMinute: 3 });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await limited.call('GET', '/api/devices', { key: `wfk_guess_${i}` })).status);
      expect(statuses).toEqual([401, 401, 401, 429]);
    } finally {
      await limited.close();
    }
  });
});

interface SseEvent {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

/** An open Server-Sent Events response, read as it arrives; `take(n)` waits for the next n events. */
async function openStream(url: string, key: string, headers: Record<string, string> = {}) {
  const abort = new AbortController();
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}`, ...headers }, signal: abort.signal });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  const parsed: SseEvent[] = [];
  return {
    status: res.status,
    contentType: res.headers.get('content-type') ?? '',
    async take(count: number): Promise<SseEvent[]> {
      const deadline = Date.now() + 10_000;
      while (parsed.length < count) {
        if (Date.now() > deadline) throw new Error(`only ${parsed.length} of ${count} events arrived`);
        const { value, done } = await reader.read();
        if (done) throw new Error('the stream ended');
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = new Map<string, string>();
          for (const line of block.split('\n')) {
            const colon = line.indexOf(':');
            if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
          }
          if (fields.has('data')) parsed.push({ id: fields.get('id'), event: fields.get('event'), data: fields.get('data')! });
        }
      }
      return parsed.splice(0, count);
    },
    close: () => abort.abort(),
  };
}
