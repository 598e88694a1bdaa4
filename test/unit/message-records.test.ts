import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys } from '../../src/cluster/keys.js';
import { createMessageRecords, waMessageIdFor, type MessageRecords } from '../../src/queues/messages.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';
import { acceptInRedis } from '../helpers/messages.js';

let t: TestRedis;
let records: MessageRecords;
const device = '0b9d3c0e-7a43-4a59-9d53-2f1c4e1f7a10';
const RATE = { limit: 1000, windowMs: 60_000 };

beforeAll(async () => {
  t = await useTestRedis();
  records = createMessageRecords({ redis: t.redis, keys: createClusterKeys(t.prefix), retentionMs: 5_000 });
});
afterAll(async () => {
  await t.cleanup();
});

describe('message records', () => {
  it('creates the record once under the store\'s id and accept time, and never resets an existing one', async () => {
    const id = randomUUID();
    const acceptedAt = new Date(Date.now() - 5000);
    const message = { id, acceptedAt, deviceId: device, to: '4915112345678', type: 'text' as const, text: 'hi' };
    const results = await Promise.all(Array.from({ length: 10 }, () => records.accept(message)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(results.every((r) => r.status === 'queued')).toBe(true);
    expect(await records.get(id)).toMatchObject({ id, status: 'queued', text: 'hi', acceptedAt: acceptedAt.toISOString(), attempts: 0 });
    // Re-created by a restore (or a repeated key) after it was sent: the record keeps `sent`.
    await records.finish(id, device, 'sent', waMessageIdFor(id));
    expect(await records.accept({ ...message, text: 'changed' })).toEqual({ status: 'sent', created: false });
    expect(await records.get(id)).toMatchObject({ status: 'sent', text: 'hi' });
  });

  it('tells onFinished once per message end, never for a repeat', async () => {
    const finished: unknown[] = [];
    const told = createMessageRecords({ redis: t.redis, keys: createClusterKeys(t.prefix), retentionMs: 5_000, onFinished: (f) => finished.push(f) });
    const { id } = await acceptInRedis(told, { deviceId: device, to: '4915112345678', type: 'text', text: 'x' });
    await told.finish(id, device, 'sent', 'WA-1');
    await told.finish(id, device, 'sent', 'WA-1');
    await told.finish(id, device, 'failed', 'late');
    const other = await acceptInRedis(told, { deviceId: device, to: '4915112345678', type: 'text', text: 'y' });
    await told.finish(other.id, device, 'failed', 'invalid number');
    await told.finish(randomUUID(), device, 'sent', 'WA-3');
    expect(finished).toEqual([
      { messageId: id, deviceId: device, status: 'sent', waMessageId: 'WA-1', error: null },
      { messageId: other.id, deviceId: device, status: 'failed', waMessageId: null, error: 'invalid number' },
    ]);
  });

  it('goes queued -> sending -> sent only for the lease holder, and never sends a sent message again', async () => {
    const keys = createClusterKeys(t.prefix);
    const { id } = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'image', mediaUrl: 'https://x.example/a.png', caption: 'c' });
    expect(await records.get(id)).toMatchObject({ id, status: 'queued', type: 'image', caption: 'c', attempts: 0, sentAt: null });
    expect(await records.begin(id, device, 'srv-a', 3, RATE)).toEqual({ outcome: 'not_owner', holder: '' });
    await t.redis.set(keys.lease(device), 'srv-a:3');
    expect(await records.begin(id, device, 'srv-b', 3, RATE)).toEqual({ outcome: 'not_owner', holder: 'srv-a:3' });
    expect(await records.begin(id, device, 'srv-a', 3, RATE)).toEqual({ outcome: 'go', attempt: 1 });
    expect((await records.get(id))?.status).toBe('sending');
    await records.finish(id, device, 'sent', waMessageIdFor(id));
    expect(await records.get(id)).toMatchObject({ status: 'sent', waMessageId: waMessageIdFor(id), attempts: 1 });
    expect(await records.begin(id, device, 'srv-a', 3, RATE)).toEqual({ outcome: 'sent', waMessageId: waMessageIdFor(id) });
    await records.finish(id, device, 'failed', 'late failure');
    expect((await records.get(id))?.status).toBe('sent');
    const ttl = await t.redis.pttl(keys.message(id));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(5_000);
  });

  it('finds a sent message by its WhatsApp id from the moment its send begins, and keeps each receipt time first-come', async () => {
    const keys = createClusterKeys(t.prefix);
    const { id } = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: 'r' });
    expect(await records.sentMessageId(device, waMessageIdFor(id))).toBeNull();
    await t.redis.set(keys.lease(device), 'srv-a:4');
    expect(await records.begin(id, device, 'srv-a', 4, RATE)).toEqual({ outcome: 'go', attempt: 1 });
    expect(await records.sentMessageId(device, waMessageIdFor(id))).toBe(id);
    expect(await records.sentMessageId(randomUUID(), waMessageIdFor(id))).toBeNull();
    expect(await t.redis.pttl(keys.sentMessage(device, waMessageIdFor(id)))).toBeGreaterThan(0);

    expect(await records.get(id)).toMatchObject({ deliveredAt: null, readAt: null });
    expect(await records.recordReceipt(id, 'delivered', 1_000)).toBe(true);
    expect(await records.recordReceipt(id, 'delivered', 2_000)).toBe(false);
    expect(await records.recordReceipt(id, 'read', 3_000)).toBe(true);
    expect(await records.recordReceipt(id, 'played', 4_000)).toBe(false);
    expect(await records.get(id)).toMatchObject({ deliveredAt: new Date(1_000).toISOString(), readAt: new Date(3_000).toISOString() });

    // Read with no delivered receipt before it: it was delivered by then.
    const other = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: 's' });
    expect(await records.recordReceipt(other.id, 'read', 5_000)).toBe(true);
    expect(await records.get(other.id)).toMatchObject({ deliveredAt: new Date(5_000).toISOString(), readAt: new Date(5_000).toISOString() });

    // An expired record is not re-created without a TTL.
    const gone = randomUUID();
    expect(await records.recordReceipt(gone, 'delivered', 1)).toBe(false);
    expect(await t.redis.exists(keys.message(gone))).toBe(0);
  });

  it('keeps a failure with its reason, and derives a stable WhatsApp id', async () => {
    const { id } = await acceptInRedis(records, { deviceId: device, to: '123@g.us', type: 'text', text: 'x' });
    await records.finish(id, device, 'failed', 'invalid number');
    expect(await records.get(id)).toMatchObject({ status: 'failed', error: 'invalid number' });
    expect(waMessageIdFor(id)).toBe(waMessageIdFor(id));
    expect(waMessageIdFor(id)).toMatch(/^3EB0[0-9A-F]{16}$/);
    expect(await records.get('nope')).toBeNull();
    expect(await records.begin('nope', device, 'srv-a', 1, RATE)).toEqual({ outcome: 'missing' });
  });

  it('paces a device with a sliding window: never more than the limit in any window', async () => {
    const keys = createClusterKeys(t.prefix);
    const paced = '7f0d3c0e-7a43-4a59-9d53-2f1c4e1f7a11';
    await t.redis.set(keys.lease(paced), 'srv-a:1');
    const rate = { limit: 3, windowMs: 400 };
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await acceptInRedis(records, { deviceId: paced, to: '4915112345678', type: 'text', text: `p${i}` })).id);
    for (const id of ids.slice(0, 3)) expect((await records.begin(id, paced, 'srv-a', 1, rate)).outcome).toBe('go');
    const waiting = await records.begin(ids[3]!, paced, 'srv-a', 1, rate);
    expect(waiting.outcome).toBe('wait');
    expect((waiting as { ms: number }).ms).toBeGreaterThan(0);
    expect((waiting as { ms: number }).ms).toBeLessThanOrEqual(400);
    // A retry of a message that already holds a slot is not counted twice.
    expect((await records.begin(ids[0]!, paced, 'srv-a', 1, rate)).outcome).toBe('go');
    await new Promise((r) => setTimeout(r, (waiting as { ms: number }).ms + 20));
    expect((await records.begin(ids[3]!, paced, 'srv-a', 1, rate)).outcome).toBe('go');
  });

  it("counts a send's slot from its delivery, so a slow send cannot let the next window start early", async () => {
    const keys = createClusterKeys(t.prefix);
    const slow = '5b1e8f0a-2c3d-4e5f-8a9b-0c1d2e3f4a5b';
    await t.redis.set(keys.lease(slow), 'srv-a:1');
    const rate = { limit: 1, windowMs: 500 };
    const first = (await acceptInRedis(records, { deviceId: slow, to: '4915112345678', type: 'text', text: 's1' })).id;
    const second = (await acceptInRedis(records, { deviceId: slow, to: '4915112345678', type: 'text', text: 's2' })).id;
    expect((await records.begin(first, slow, 'srv-a', 1, rate)).outcome).toBe('go');
    await new Promise((r) => setTimeout(r, 300)); // the send takes 300 ms
    await records.finish(first, slow, 'sent', waMessageIdFor(first), rate.windowMs);
    const waiting = await records.begin(second, slow, 'srv-a', 1, rate);
    // Measured from the delivery, not from when the send began: close to a whole window again.
    expect(waiting.outcome).toBe('wait');
    expect((waiting as { ms: number }).ms).toBeGreaterThan(400);
  });

  it("obeys a device's own limit over the default, read at each send", async () => {
    const keys = createClusterKeys(t.prefix);
    const own = '9c8b7a6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d';
    await t.redis.set(keys.lease(own), 'srv-a:1');
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await acceptInRedis(records, { deviceId: own, to: '4915112345678', type: 'text', text: `o${i}` })).id);
    await records.setRateOverride(own, 2);
    expect(await records.rateOverride(own)).toBe(2);
    expect((await records.begin(ids[0]!, own, 'srv-a', 1, RATE)).outcome).toBe('go');
    expect((await records.begin(ids[1]!, own, 'srv-a', 1, RATE)).outcome).toBe('go');
    expect((await records.begin(ids[2]!, own, 'srv-a', 1, RATE)).outcome).toBe('wait');
    await records.setRateOverride(own, null);
    expect(await records.rateOverride(own)).toBeNull();
    expect((await records.begin(ids[2]!, own, 'srv-a', 1, RATE)).outcome).toBe('go');
  });
});
