import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboundQueueName } from '../../src/queues/outbound.js';
import { startTestApi, type TestApi } from '../helpers/http-api.js';

// A message is in the store before it is answered 202: the store down answers 503 and queues
// nothing; Redis's copy gone (expired or lost), the store still answers for it. The app reaches
// the store through a TCP proxy the test stops.

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi({}, { storeProxy: true });
});
afterAll(async () => {
  await api?.close();
});

const newDevice = async (): Promise<string> => {
  const res = await api.call('POST', '/api/devices', { body: { userId: randomUUID(), name: 'shop' } });
  expect(res.status).toBe(201);
  return res.body.id;
};
const body = { to: '4915112345678', type: 'text', text: 'hello' };
/** Every key the device's queue or any message record has in Redis. */
const redisTrace = async (deviceId: string) => [
  ...(await api.redis.redis.keys(`${api.keys.bullPrefix}:${outboundQueueName(deviceId)}:*`)),
  ...(await api.redis.redis.keys(api.keys.message('*'))),
];

describe('durable accept', () => {
  it('answers 503 store_unavailable with Retry-After while the store is down, and queues nothing; a retry with the key then sends once', async () => {
    const device = await newDevice();
    const before = new Set(await api.redis.redis.keys(api.keys.message('*')));
    await api.storeProxy!.stop();
    try {
      for (const path of [`/api/devices/${device}/messages`, '/send-message']) {
        const res = await api.call('POST', path, {
          body: path === '/send-message' ? { deviceId: device, targetJid: '4915112345678', messageType: 'text', message: 'hi' } : body,
          headers: { 'idempotency-key': 'order-1' },
        });
        expect(res.status).toBe(503);
        expect(res.body).toEqual({ error: { code: 'store_unavailable', message: expect.any(String) } });
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      }
    } finally {
      await api.storeProxy!.resume();
    }
    expect((await redisTrace(device)).filter((k) => !before.has(k))).toEqual([]);
    const retried = await Promise.all([1, 2].map(() => api.call('POST', `/api/devices/${device}/messages`, { body, headers: { 'idempotency-key': 'order-1' } })));
    expect(retried.map((r) => r.status)).toEqual([202, 202]);
    expect(retried[0]!.body.id).toBe(retried[1]!.body.id);
    expect(await api.store.getMessage(retried[0]!.body.id)).toMatchObject({ deviceId: device, status: 'queued', idempotencyKey: 'order-1' });
  });

  it('reads a message from the store once its Redis record is gone, and a repeated key re-creates it from the store', async () => {
    const device = await newDevice();
    const first = await api.call('POST', `/api/devices/${device}/messages`, { body, headers: { 'idempotency-key': 'order-2' } });
    expect(first.status).toBe(202);
    const id: string = first.body.id;
    const live = (await api.call('GET', `/api/messages/${id}`)).body;
    // Redis lost it all: the record and the job.
    await api.redis.redis.del(api.keys.message(id), ...(await redisTrace(device)));
    const read = await api.call('GET', `/api/messages/${id}`);
    expect(read).toMatchObject({ status: 200, body: { ...live, status: 'queued' } });
    // The same key again, with another text: the first message comes back, its record and job too.
    const again = await api.call('POST', `/api/devices/${device}/messages`, { body: { ...body, text: 'changed' }, headers: { 'idempotency-key': 'order-2' } });
    expect(again.body).toEqual({ id, status: 'queued' });
    expect((await api.call('GET', `/api/messages/${id}`)).body).toEqual(live);
    expect(await api.redis.redis.hget(api.keys.message(id), 'text')).toBe('hello');
    expect(await api.redis.redis.exists(`${api.keys.bullPrefix}:${outboundQueueName(device)}:${id}`)).toBe(1);

    // Finished in the store (its end written behind), gone from Redis: read from the store, and a
    // repeated key queues nothing again.
    await api.store.applyRecords([{ kind: 'message', at: new Date().toISOString(), deviceId: device, messageId: id, status: 'sent', waMessageId: 'WA-9', error: null }]);
    await api.redis.redis.del(api.keys.message(id), ...(await redisTrace(device)));
    expect((await api.call('GET', `/api/messages/${id}`)).body).toMatchObject({ id, status: 'sent', waMessageId: 'WA-9', sentAt: expect.any(String) });
    expect((await api.call('POST', `/api/devices/${device}/messages`, { body, headers: { 'idempotency-key': 'order-2' } })).body).toEqual({ id, status: 'sent' });
    expect(await redisTrace(device)).toEqual([]);
  });
});
