import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseGuard } from '../../src/cluster/lease-guard.js';
import { createMessageRecords } from '../../src/queues/messages.js';
import { createOutbound, PermanentSendError, type MessageSender } from '../../src/queues/outbound.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';
import { acceptInRedis } from '../helpers/messages.js';

let t: TestRedis;
const connections: Redis[] = [];
const log = pino({ level: 'silent' });

beforeAll(async () => {
  t = await useTestRedis();
});
afterAll(async () => {
  for (const c of connections) c.disconnect();
  await t.cleanup();
});

async function until(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

function setup(send: MessageSender['send'], ratePerMinute = 1000, rateWindowMs = 60_000) {
  const sender: MessageSender = { ready: () => true, send };
  const redis = new Redis(t.url, { maxRetriesPerRequest: null });
  connections.push(redis);
  const keys = createClusterKeys(t.prefix);
  const records = createMessageRecords({ redis, keys, retentionMs: 60_000 });
  const guard = createLeaseGuard({ clock: () => performance.now(), selfFenceMs: 60_000 });
  guard.renewed(performance.now());
  const outbound = createOutbound({
    redis,
    keys,
    records,
    guard,
    sender,
    log,
    serverId: 'srv-a',
    ratePerMinute,
    rateWindowMs,
    delayMs: [0, 0],
    attempts: 3,
    lockDurationMs: 5000,
    retentionMs: 60_000,
  });
  return { redis, keys, records, guard, outbound };
}

describe('outbound queue per device', () => {
  it('retries a failing send at the head of the line: later messages wait, and order holds', async () => {
    const sent: string[] = [];
    let failures = 2;
    const { keys, records, guard, outbound } = setup(async (_d, _t, message) => {
      if (message.text === 'first' && failures-- > 0) throw new Error('network hiccup');
      sent.push(message.text!);
    });
    const device = randomUUID();
    await t.redis.set(keys.lease(device), 'srv-a:1');
    guard.hold(device, 1);
    const first = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: 'first' });
    const second = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: 'second' });
    await outbound.enqueue(first.id, device);
    await outbound.enqueue(second.id, device);
    outbound.startDevice(device, 1);
    await until(async () => sent.length === 2);
    expect(sent).toEqual(['first', 'second']);
    expect(await records.get(first.id)).toMatchObject({ status: 'sent', attempts: 3 });
    await outbound.close();
  });


  it('sends a device\'s messages in the order accepted, once each, only under its lease', async () => {
    const sent: string[] = [];
    const { keys, records, guard, outbound } = setup(async (_deviceId, _token, message) => {
      sent.push(message.text!);
    });
    const device = randomUUID();
    await t.redis.set(keys.lease(device), 'srv-a:4');
    guard.hold(device, 4);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const { id } = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: `m${i}` });
      await outbound.enqueue(id, device);
      await outbound.enqueue(id, device); // a repeated enqueue is the same job
      ids.push(id);
    }
    outbound.startDevice(device, 4);
    await until(async () => sent.length === 20);
    expect(sent).toEqual(ids.map((_, i) => `m${i}`));
    await until(async () => (await records.get(ids[19]!))?.status === 'sent');
    await outbound.close();
  });

  it('puts restored messages first in accept order, page after page, and re-adds a job that finished as missing', async () => {
    const sent: string[] = [];
    const { keys, records, guard, outbound } = setup(async (_d, _t, message) => {
      sent.push(message.text!);
    });
    const device = randomUUID();
    const text = ['a', 'b', 'c', 'd', 'late'];
    const ids = text.map(() => randomUUID());
    // Redis lost its data, but `a`'s job survived (a replica had it) and ran, finding no record:
    // it finished as `missing` without sending.
    await outbound.enqueue(ids[0]!, device);
    await t.redis.set(keys.lease(device), 'srv-a:1');
    guard.hold(device, 1);
    outbound.startDevice(device, 1);
    await until(async () => (await t.redis.zscore(`${keys.bullPrefix}:wa-out-${device}:completed`, ids[0]!)) !== null);
    await outbound.stopDevice(device);
    // `late` is accepted after the loss, before the restore.
    await records.accept({ id: ids[4]!, acceptedAt: new Date(), deviceId: device, to: '4915112345678', type: 'text', text: 'late' });
    await outbound.enqueue(ids[4]!, device);
    // Now the restore, as queues/restore.ts runs it: records back, jobs back, two pages in order.
    for (let i = 0; i < 4; i++) {
      await records.accept({ id: ids[i]!, acceptedAt: new Date(), deviceId: device, to: '4915112345678', type: 'text', text: text[i] });
      await outbound.requeue(ids[i]!, device);
    }
    await outbound.enqueue(ids[4]!, device); // still the one job
    const anchor = await outbound.orderWaiting(device, '', [ids[0]!, ids[1]!]);
    expect(anchor).toBe(ids[1]);
    expect(await outbound.orderWaiting(device, anchor, [ids[2]!, ids[3]!])).toBe(ids[3]);
    // Repeated by a second server: the same order.
    expect(await outbound.orderWaiting(device, '', ids.slice(0, 4))).toBe(ids[3]);
    outbound.startDevice(device, 2);
    guard.hold(device, 2);
    await t.redis.set(keys.lease(device), 'srv-a:2');
    await until(async () => sent.length === 5);
    expect(sent).toEqual(['a', 'b', 'c', 'd', 'late']);
    await outbound.close();
  });

  it('fails a permanent error at once with its reason, and leaves a message of a lost lease for the next owner', async () => {
    const sent: string[] = [];
    const { keys, records, guard, outbound } = setup(async (_d, _t, message) => {
      if (message.to === '000') throw new PermanentSendError('invalid number');
      sent.push(message.text!);
    });
    const device = randomUUID();
    await t.redis.set(keys.lease(device), 'srv-a:1');
    guard.hold(device, 1);
    const bad = await acceptInRedis(records, { deviceId: device, to: '000', type: 'text', text: 'bad' });
    await outbound.enqueue(bad.id, device);
    outbound.startDevice(device, 1);
    await until(async () => (await records.get(bad.id))?.status === 'failed');
    expect((await records.get(bad.id))?.error).toBe('invalid number');
    await outbound.stopDevice(device);

    // The lease moves to srv-b: a message queued meanwhile waits, untouched, in the device's queue.
    await t.redis.set(keys.lease(device), 'srv-b:2');
    const later = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: 'later' });
    await outbound.enqueue(later.id, device);
    await new Promise((r) => setTimeout(r, 300));
    expect(sent).toEqual([]);
    expect((await records.get(later.id))?.status).toBe('queued');
    await outbound.close();
  });

  it('never sends more than the limit in any window (sliding, checked in the send log)', async () => {
    const sent: number[] = [];
    const windowMs = 1000;
    const { keys, records, guard, outbound } = setup(async () => {
      sent.push(Date.now());
    }, 3, windowMs);
    const device = randomUUID();
    await t.redis.set(keys.lease(device), 'srv-a:1');
    guard.hold(device, 1);
    for (let i = 0; i < 8; i++) await outbound.enqueue((await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: `r${i}` })).id, device);
    outbound.startDevice(device, 1);
    await until(async () => sent.length === 8, 20_000);
    // Any window starting at a send holds at most 3 sends (a little slack for clock reads).
    for (const start of sent) expect(sent.filter((at) => at >= start && at < start + windowMs - 20).length).toBeLessThanOrEqual(3);
    expect(sent[7]! - sent[0]!).toBeGreaterThanOrEqual(2 * windowMs - 50);
    await outbound.close();
  });

  it('a device retired here (dropped from the guard) leaves its queued messages waiting for a later owner', async () => {
    const sent: string[] = [];
    const { keys, records, guard, outbound } = setup(async (_d, _t, message) => {
      sent.push(message.text!);
    });
    const device = randomUUID();
    await t.redis.set(keys.lease(device), 'srv-a:1');
    guard.hold(device, 1);
    outbound.startDevice(device, 1);
    guard.drop(device, 1);
    const { id } = await acceptInRedis(records, { deviceId: device, to: '4915112345678', type: 'text', text: 'after retirement' });
    await outbound.enqueue(id, device);
    await new Promise((r) => setTimeout(r, 1500));
    expect(sent).toEqual([]);
    expect((await records.get(id))?.status).toBe('queued');
    const base = `${keys.bullPrefix}:wa-out-${device}`;
    expect(await t.redis.lrange(`${base}:wait`, 0, -1)).toEqual([id]);
    // Nothing works the queue any more: its worker went with the device.
    const { Queue } = await import('bullmq');
    const queue = new Queue(`wa-out-${device}`, { connection: t.redis, prefix: keys.bullPrefix });
    expect(await queue.getWorkersCount()).toBe(0);
    await queue.close();
    await outbound.close();
  });
});
