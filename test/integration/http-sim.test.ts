import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../harness/local-redis.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { spawnServer, stopAll, type ServerProcess } from '../../harness/processes.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';
import { waMessageIdFor } from '../../src/queues/messages.js';
import { INTERNAL_KEY, startTestApi, type TestApi } from '../helpers/http-api.js';

// The simulated WhatsApp's routes: what a contact's phone does, for tests, the bench and the chaos
// run. The internal key only, bodies validated, and absent (404) from a server on the real driver.

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi({}, { sim: true });
});
afterAll(async () => {
  await api.close();
});

async function newDevice(): Promise<string> {
  const res = await api.call('POST', '/api/devices', { body: { userId: randomUUID(), name: 'sim' } });
  expect(res.status).toBe(201);
  return res.body.id as string;
}

async function pending(deviceId: string): Promise<Array<Record<string, string>>> {
  const entries = (await api.redis.redis.xrange(api.keys.simPending(deviceId), '-', '+')) as Array<[string, string[]]>;
  return entries.map(([, raw]) => Object.fromEntries(raw.flatMap((v, i) => (i % 2 === 0 ? [[v, raw[i + 1]]] : []))) as Record<string, string>);
}

describe('the simulated WhatsApp routes', () => {
  it('need the internal key: none is 401, a user key 403', async () => {
    const userId = randomUUID();
    const key = (await api.call('POST', `/api/users/${userId}/api-keys`, { body: { name: 'test' } })).body.key as string;
    const device = (await api.call('POST', '/api/devices', { body: { name: 'own' }, key })).body.id as string;
    for (const [path, body] of [
      [`/api/sim/devices/${device}/inbound`, { from: '+15550001111', text: 'hi' }],
      [`/api/sim/messages/${randomUUID()}/receipt`, { status: 'read' }],
    ] as const) {
      expect((await api.call('POST', path, { body, key: null })).status).toBe(401);
      const forbidden = await api.call('POST', path, { body, key });
      expect(forbidden.status).toBe(403);
      expect(forbidden.body.error.code).toBe('forbidden');
    }
    expect(await api.redis.redis.exists(api.keys.simPending(device))).toBe(0);
  });

  it.each([
    ['no sender', { text: 'hi' }, 'body.from'],
    ['a sender that is not a phone number', { from: 'alice', text: 'hi' }, 'body.from'],
    ['a sender of 5 digits', { from: '12345', text: 'hi' }, 'body.from'],
    ['no text', { from: '15550001111' }, 'body.text'],
    ['an empty text', { from: '15550001111', text: '' }, 'body.text'],
    ['a text of 4097 characters', { from: '15550001111', text: 'x'.repeat(4097) }, 'body.text'],
    ['an unknown field', { from: '15550001111', text: 'hi', pushName: 'Al' }, 'body'],
  ])('inbound with %s is 422', async (_name, body, path) => {
    const device = await newDevice();
    const res = await api.call('POST', `/api/sim/devices/${device}/inbound`, { body });
    expect(res.status).toBe(422);
    expect(res.body.error.details.map((d: { path: string }) => d.path)).toContain(path);
    expect(await api.redis.redis.exists(api.keys.simPending(device))).toBe(0);
  });

  it.each([
    ['no status', {}],
    ['a status WhatsApp does not send here', { status: 'played' }],
    ['an unknown field', { status: 'read', at: 1 }],
  ])('a receipt with %s is 422', async (_name, body) => {
    expect((await api.call('POST', `/api/sim/messages/${randomUUID()}/receipt`, { body })).status).toBe(422);
  });

  it('ids that are not UUIDs are 422; an unknown device or message is 404', async () => {
    expect((await api.call('POST', '/api/sim/devices/nope/inbound', { body: { from: '15550001111', text: 'hi' } })).status).toBe(422);
    expect((await api.call('POST', '/api/sim/messages/nope/receipt', { body: { status: 'read' } })).status).toBe(422);
    const device = await api.call('POST', `/api/sim/devices/${randomUUID()}/inbound`, { body: { from: '15550001111', text: 'hi' } });
    expect(device.status).toBe(404);
    expect(device.body.error.code).toBe('device_not_found');
    const message = await api.call('POST', `/api/sim/messages/${randomUUID()}/receipt`, { body: { status: 'read' } });
    expect(message.status).toBe(404);
    expect(message.body.error.code).toBe('message_not_found');
  });

  it('inbound: 202 with the WhatsApp id, and the simulated WhatsApp holds the message for the device', async () => {
    const device = await newDevice();
    const res = await api.call('POST', `/api/sim/devices/${device}/inbound`, { body: { from: '+15550001111', text: 'hello' } });
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ waMessageId: expect.stringMatching(/^3A[0-9A-F]{18}$/) });
    expect(await pending(device)).toEqual([{ k: 'message', m: res.body.waMessageId, f: '15550001111', x: 'hello', t: expect.stringMatching(/^\d+000$/) }]);
  });

  it('a receipt: 409 until WhatsApp has the message, then 202, held for the device that sent it', async () => {
    const device = await newDevice();
    const accepted = await api.call('POST', `/api/devices/${device}/messages`, { body: { to: '+4915112345678', type: 'text', text: 'hi' } });
    expect(accepted.status).toBe(202);
    const messageId = accepted.body.id as string;
    const early = await api.call('POST', `/api/sim/messages/${messageId}/receipt`, { body: { status: 'delivered' } });
    expect(early.status).toBe(409);
    expect(early.body.error.code).toBe('message_not_sent');

    // What the simulated WhatsApp records when the device's socket sends the message.
    await api.redis.redis.sadd(api.keys.simSeen(device), waMessageIdFor(messageId));
    expect((await api.call('POST', `/api/sim/messages/${messageId}/receipt`, { body: { status: 'read' } })).status).toBe(202);
    expect(await pending(device)).toEqual([{ k: 'receipt', m: waMessageIdFor(messageId), c: '4915112345678@s.whatsapp.net', r: 'read', t: expect.any(String) }]);
  });
});

describe('a server on the baileys driver', () => {
  let redis: TestRedis;
  let db: TestDatabase;
  const processes: ServerProcess[] = [];

  beforeAll(async () => {
    [redis, db] = await Promise.all([useTestRedis(), createTestDatabase()]);
  });
  afterAll(async () => {
    await stopAll(processes);
    await db.drop();
    await redis.cleanup();
  });

  it('has no simulated WhatsApp routes: 404, and none in its OpenAPI document', async () => {
    const port = await freePort();
    const server = spawnServer(
      { DEVICE_DRIVER: 'baileys', SERVER_ID: 'srv-wa', REDIS_URL: redis.url, WAFLEET_KEY_PREFIX: redis.prefix, STORE: 'postgres', DATABASE_URL: db.url, INTERNAL_API_KEY: INTERNAL_KEY },
      port,
    );
    processes.push(server);
    await server.waitForHealth();
    const post = (path: string, body: unknown) =>
      fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { authorization: `Bearer ${INTERNAL_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post(`/api/sim/devices/${randomUUID()}/inbound`, { from: '15550001111', text: 'hi' })).status).toBe(404);
    expect((await post(`/api/sim/messages/${randomUUID()}/receipt`, { status: 'read' })).status).toBe(404);
    const document = (await (await fetch(`http://127.0.0.1:${port}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(document.paths).filter((p) => p.startsWith('/api/sim/'))).toEqual([]);
    expect(Object.keys(document.paths)).toContain('/api/devices/{id}/events');
  });
});
