import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';
import type { ServerProcess } from '../../harness/processes.js';

// The API on real server processes: any server answers any call, and work for a device reaches
// whichever server holds it.

const KEY = 'cluster-internal-key-0123456789abcdef';
const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
let cluster: TestCluster;
let a: ServerProcess;
let b: ServerProcess;

async function call(server: ServerProcess, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

beforeAll(async () => {
  cluster = await startTestCluster();
  [a, b] = await Promise.all([cluster.start('api-a', { INTERNAL_API_KEY: KEY }), cluster.start('api-b', { INTERNAL_API_KEY: KEY })]);
});
afterAll(async () => {
  await cluster?.stop();
});

describe('the API across servers', () => {
  it('a device created and connected through one server runs on some server, and a disconnect through the other stops it', async () => {
    const created = await call(a, 'POST', '/api/devices', { userId: randomUUID(), name: 'across' });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect((await call(a, 'POST', `/api/devices/${id}/connect`)).status).toBe(202);
    await waitUntil(async () => (await cluster.connectedCount([id])) === 1, TTL * 5);

    const seenByB = await call(b, 'GET', `/api/devices/${id}`);
    expect(seenByB.body).toMatchObject({ id, desiredState: 'running', status: 'connected' });
    expect(['api-a', 'api-b']).toContain(seenByB.body.lease.serverId);

    expect((await call(b, 'POST', `/api/devices/${id}/disconnect`)).status).toBe(202);
    await waitUntil(async () => (await cluster.redis.redis.exists(cluster.keys.lease(id))) === 0, TTL * 3);
    expect(await cluster.redis.redis.exists(cluster.keys.simSocket(id))).toBe(0);
    // Reconcile does not bring it back: it is no longer wanted.
    await new Promise((r) => setTimeout(r, Number(TEST_LEASE_ENV.RECONCILE_INTERVAL_MS) * 2));
    expect(await cluster.redis.redis.exists(cluster.keys.lease(id))).toBe(0);
    expect((await call(a, 'GET', `/api/devices/${id}`)).body).toMatchObject({ desiredState: 'stopped', lease: null });
  });

  it('a message accepted by one server for a device the other server holds is sent by the holder', async () => {
    const created = await call(a, 'POST', '/api/devices', { userId: randomUUID(), name: 'messaging' });
    const id = created.body.id as string;
    await call(a, 'POST', `/api/devices/${id}/connect`);
    await waitUntil(async () => (await cluster.connectedCount([id])) === 1, TTL * 5);
    const owner = (await cluster.owners([id])).get(id)!;
    const other = owner === 'api-a' ? b : a;
    const accepted = await call(other, 'POST', `/api/devices/${id}/messages`, { to: '4915112345678', type: 'text', text: 'via the other server' });
    expect(accepted.status).toBe(202);
    await waitUntil(async () => (await call(other, 'GET', `/api/messages/${accepted.body.id}`)).body.status === 'sent', TTL * 5);
    const [delivery] = (await cluster.redis.redis.lrange(cluster.keys.simLog(id), 0, -1)).map((line) => JSON.parse(line) as { serverId: string; text: string });
    expect(delivery).toMatchObject({ serverId: owner, text: 'via the other server' });
    const record = (await call(owner === 'api-a' ? a : b, 'GET', `/api/messages/${accepted.body.id}`)).body;
    expect(record).toMatchObject({ status: 'sent', waMessageId: expect.stringMatching(/^3EB0/) });
    await call(a, 'POST', `/api/devices/${id}/disconnect`);
    await waitUntil(async () => (await cluster.redis.redis.exists(cluster.keys.lease(id))) === 0, TTL * 3);
  });

  it('the simulated WhatsApp, reached through the server that does not hold the device, writes to it and acknowledges its message; the events show both', async () => {
    const id = (await call(a, 'POST', '/api/devices', { userId: randomUUID(), name: 'inbound' })).body.id as string;
    await call(a, 'POST', `/api/devices/${id}/connect`);
    await waitUntil(async () => (await cluster.connectedCount([id])) === 1, TTL * 5);
    const other = (await cluster.owners([id])).get(id) === 'api-a' ? b : a;
    const events = async () => (await call(other, 'GET', `/api/devices/${id}/events`)).body.events as Array<{ type: string; data: Record<string, unknown> }>;

    const written = await call(other, 'POST', `/api/sim/devices/${id}/inbound`, { from: '+4915112345678', text: 'hello from a contact' });
    expect(written.status).toBe(202);
    await waitUntil(async () => (await events()).some((e) => e.type === 'message.received'), TTL * 3);
    expect((await events()).find((e) => e.type === 'message.received')!.data).toMatchObject({
      waMessageId: written.body.waMessageId,
      chatJid: '4915112345678@s.whatsapp.net',
      text: 'hello from a contact',
      fromHistory: false,
    });

    const sent = await call(other, 'POST', `/api/devices/${id}/messages`, { to: '4915112345678', type: 'text', text: 'hello back' });
    await waitUntil(async () => (await call(other, 'GET', `/api/messages/${sent.body.id}`)).body.status === 'sent', TTL * 5);
    expect((await call(other, 'POST', `/api/sim/messages/${sent.body.id}/receipt`, { status: 'delivered' })).status).toBe(202);
    await waitUntil(async () => (await events()).some((e) => e.type === 'message.ack'), TTL * 3);
    const { waMessageId } = (await call(other, 'GET', `/api/messages/${sent.body.id}`)).body;
    expect((await events()).find((e) => e.type === 'message.ack')!.data).toMatchObject({ messageId: sent.body.id, waMessageId, chatJid: '4915112345678@s.whatsapp.net', status: 'delivered' });
    await waitUntil(async () => (await call(other, 'GET', `/api/messages/${sent.body.id}`)).body.deliveredAt !== null, TTL * 3);
    expect((await call(a, 'POST', `/api/sim/messages/${sent.body.id}/receipt`, { status: 'read' })).status).toBe(202);
    await waitUntil(async () => (await call(other, 'GET', `/api/messages/${sent.body.id}`)).body.readAt !== null, TTL * 3);
    const receipted = (await call(a, 'GET', `/api/messages/${sent.body.id}`)).body;
    expect(Date.parse(receipted.readAt)).toBeGreaterThanOrEqual(Date.parse(receipted.deliveredAt));
    expect((await events()).filter((e) => e.type === 'message.ack').map((e) => (e.data as { status: string }).status)).toEqual(['delivered', 'read']);
    await call(a, 'POST', `/api/devices/${id}/disconnect`);
    await waitUntil(async () => (await cluster.redis.redis.exists(cluster.keys.lease(id))) === 0, TTL * 3);
  });

  it('an admin drain through one server makes the other hand every device over and stop taking any', async () => {
    const devices = await cluster.addDevices(30);
    await waitUntil(async () => (await cluster.connectedCount(devices)) === 30, 30_000);
    const servers = (await call(b, 'GET', '/api/servers')).body.servers as Array<{ id: string; live: boolean; leases: number }>;
    expect(servers.filter((s) => s.live).map((s) => s.id).sort()).toEqual(['api-a', 'api-b']);
    expect(servers.reduce((sum, s) => sum + s.leases, 0)).toBe(30);

    expect((await call(b, 'POST', '/api/servers/api-a/drain')).status).toBe(202);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['api-b'])) === 30, TTL * 5);
    const health = await fetch(`http://127.0.0.1:${a.port}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'draining', leases: 0, draining: true });
    // Drained, it holds nothing, so the record of it may go; the live one may not.
    expect((await call(b, 'DELETE', '/api/servers/api-b')).status).toBe(409);
    expect((await call(b, 'DELETE', '/api/servers/api-a')).status).toBe(204);
    expect(await cluster.conflicts()).toBe(0);
  });
});
