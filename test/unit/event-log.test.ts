import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Counter, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { holderId, leaseValue } from '../../src/cluster/lease-value.js';
import { createEventLog, type EventLog, type EventLogOptions, type LoggedEvent, type WafleetEvent } from '../../src/events/event-log.js';
import { eventIdFor } from '../../src/events/ids.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The event log on a real Redis: only the lease holder appends, repeats within the dedup window
// are dropped, sequences run 1, 2, 3... without gaps, and both caps hold. Expiry uses short real
// windows: fake timers do not move Redis's clock.

let t: TestRedis;
let keys: ClusterKeys;

const HOLDER = leaseValue(holderId('srv-a', 'boot-a'), 7);

beforeAll(async () => {
  t = await useTestRedis();
  keys = createClusterKeys(t.prefix);
});
afterAll(async () => {
  await t.cleanup();
});

function staleCounter(): Counter {
  return new Counter({ name: 'test_events_stale_total', help: 'stale events', registers: [new Registry()] });
}

function logWith(options: Partial<EventLogOptions> = {}): EventLog {
  return createEventLog({
    redis: t.redis,
    keys,
    metrics: { staleEvents: staleCounter() },
    dedupMs: 60_000,
    maxLength: 1000,
    retentionMs: 120_000,
    ...options,
  });
}

/** A device whose lease HOLDER holds. */
async function heldDevice(): Promise<string> {
  const deviceId = randomUUID();
  await t.redis.set(keys.lease(deviceId), HOLDER, 'PX', 60_000);
  return deviceId;
}

function received(deviceId: string, waMessageId: string): WafleetEvent {
  return { id: eventIdFor(deviceId, 'message.received', [waMessageId]), type: 'message.received', data: { waMessageId, text: `hi ${waMessageId}` } };
}

async function appendMany(log: EventLog, deviceId: string, count: number, from = 1): Promise<number[]> {
  const sequences: number[] = [];
  for (let i = from; i < from + count; i++) {
    const result = await log.append(deviceId, HOLDER, received(deviceId, `wa-${i}`));
    if (result.outcome !== 'appended') throw new Error(`append ${i}: ${result.outcome}`);
    sequences.push(result.sequence);
  }
  return sequences;
}

const sequencesIn = async (log: EventLog, deviceId: string) => (await log.read(deviceId, 0, 100_000)).map((e) => e.sequence);

describe('append', () => {
  it('numbers a device’s events 1, 2, 3... and stores them as given, stamped by Redis', async () => {
    const log = logWith();
    const device = await heldDevice();
    const other = await heldDevice();
    expect(await appendMany(log, device, 3)).toEqual([1, 2, 3]);
    expect(await appendMany(log, other, 2)).toEqual([1, 2]);

    const [seconds] = await t.redis.time();
    const events = await log.read(device, 0, 10);
    expect(events.map(({ at: _at, ...rest }) => rest)).toEqual([1, 2, 3].map((i) => ({ sequence: i, ...received(device, `wa-${i}`) })));
    for (const event of events) expect(Math.abs(event.at - Number(seconds) * 1000)).toBeLessThan(5000);
    expect((await t.redis.xrange(keys.events(device), '-', '+')).map(([id]) => id)).toEqual(['1-0', '2-0', '3-0']);
  });

  it('refuses an appender whose lease value is not the device’s, writes nothing and uses no sequence number', async () => {
    const staleEvents = staleCounter();
    const log = logWith({ metrics: { staleEvents } });
    const device = await heldDevice();
    const unheld = randomUUID();
    await appendMany(log, device, 1);

    const refused = [
      [device, leaseValue(holderId('srv-a', 'boot-a'), 6)], // an older token
      [device, leaseValue(holderId('srv-a', 'boot-b'), 7)], // another start of the same server
      [device, leaseValue(holderId('srv-b', 'boot-a'), 7)], // another server
      [unheld, HOLDER], // nobody holds it
    ] as const;
    for (const [deviceId, value] of refused) {
      expect(await log.append(deviceId, value, received(deviceId, 'wa-stale'))).toEqual({ outcome: 'stale' });
    }
    expect((await staleEvents.get()).values[0]?.value).toBe(4);
    expect(await sequencesIn(log, device)).toEqual([1]);
    expect(await t.redis.exists(keys.events(unheld), keys.eventSeq(unheld), keys.eventId(received(unheld, 'wa-stale').id))).toBe(0);
    // The refused event was not remembered as seen: the holder appends it, as the next number.
    expect(await log.append(device, HOLDER, received(device, 'wa-stale'))).toEqual({ outcome: 'appended', sequence: 2, at: expect.any(Number) });
  });

  it('drops an event id appended before, answering with its first sequence', async () => {
    const log = logWith();
    const device = await heldDevice();
    await appendMany(log, device, 2);
    const before = await t.redis.xrange(keys.events(device), '-', '+');
    // A new owner after failover sees the same WhatsApp message again, with other data.
    const again = { ...received(device, 'wa-1'), data: { redelivered: true } };
    const newOwner = leaseValue(holderId('srv-b', 'boot-b'), 8);
    await t.redis.set(keys.lease(device), newOwner, 'PX', 60_000);
    expect(await log.append(device, newOwner, again)).toEqual({ outcome: 'duplicate', sequence: 1 });
    expect(await t.redis.xrange(keys.events(device), '-', '+')).toEqual(before);
    expect(await log.append(device, newOwner, received(device, 'wa-3'))).toEqual({ outcome: 'appended', sequence: 3, at: expect.any(Number) });
  });

  it('tells onAppended of each accepted event as read back, and of no duplicate or stale one', async () => {
    const told: Array<[string, LoggedEvent]> = [];
    const log = logWith({ onAppended: (deviceId, event) => void told.push([deviceId, event]) });
    const device = await heldDevice();
    await appendMany(log, device, 2);
    await log.append(device, HOLDER, received(device, 'wa-1'));
    await log.append(device, leaseValue(holderId('srv-x', 'boot-x'), 1), received(device, 'wa-9'));
    expect(told).toEqual((await log.read(device, 0, 10)).map((event) => [device, event]));
    expect(told.map(([, event]) => event.sequence)).toEqual([1, 2]);
  });

  it('answers an append only once onAppended has settled (the event is in the store by then)', async () => {
    let settle: () => void = () => undefined;
    const log = logWith({ onAppended: () => new Promise<void>((r) => (settle = r)) });
    const device = await heldDevice();
    let answered = false;
    const append = log.append(device, HOLDER, received(device, 'wa-1')).then((outcome) => ((answered = true), outcome));
    await sleep(100);
    expect(answered).toBe(false);
    settle();
    expect(await append).toMatchObject({ outcome: 'appended', sequence: 1 });
  });

  it('appends the same id again once the dedup window has passed', async () => {
    const log = logWith({ dedupMs: 500 });
    const device = await heldDevice();
    await appendMany(log, device, 1);
    const pttl = await t.redis.pttl(keys.eventId(received(device, 'wa-1').id));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(500);
    expect((await log.append(device, HOLDER, received(device, 'wa-1'))).outcome).toBe('duplicate');
    await sleep(550);
    expect(await log.append(device, HOLDER, received(device, 'wa-1'))).toEqual({ outcome: 'appended', sequence: 2, at: expect.any(Number) });
  });

  it('gives 200 concurrent appends over 4 connections the sequences 1..200, each once', async () => {
    const connections = Array.from({ length: 4 }, () => t.redis.duplicate());
    try {
      const logs = connections.map((redis) => logWith({ redis }));
      const device = await heldDevice();
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => logs[i % logs.length]!.append(device, HOLDER, received(device, `wa-${i}`))),
      );
      const sequences = results.map((r) => (r.outcome === 'appended' ? r.sequence : -1)).sort((a, b) => a - b);
      expect(sequences).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      expect(await sequencesIn(logs[0]!, device)).toEqual(sequences);
    } finally {
      for (const redis of connections) redis.disconnect();
    }
  });
});

describe('read', () => {
  it('returns exactly the events after a sequence, oldest first, at most the limit', async () => {
    const log = logWith();
    const device = await heldDevice();
    await appendMany(log, device, 10);
    expect((await log.read(device, 4, 3)).map((e) => e.sequence)).toEqual([5, 6, 7]);
    expect((await log.read(device, 7, 100)).map((e) => e.sequence)).toEqual([8, 9, 10]);
    expect((await log.read(device, 0, 2)).map((e) => e.id)).toEqual([received(device, 'wa-1').id, received(device, 'wa-2').id]);
    expect(await log.read(device, 10, 100)).toEqual([]);
    expect(await log.read(randomUUID(), 0, 100)).toEqual([]);
  });
});

describe('bounds', () => {
  it('keeps at most the max length, the newest', async () => {
    const log = logWith({ maxLength: 5 });
    const device = await heldDevice();
    await appendMany(log, device, 12);
    expect(await t.redis.xlen(keys.events(device))).toBe(5);
    expect(await sequencesIn(log, device)).toEqual([8, 9, 10, 11, 12]);
  });

  it('trims entries older than the retention and lets an idle device’s stream expire, its numbering going on where it was', async () => {
    const log = logWith({ dedupMs: 300, retentionMs: 300 });
    const device = await heldDevice();
    await appendMany(log, device, 3);
    const pttl = await t.redis.pttl(keys.events(device));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(300);
    await sleep(350);
    // Idle for the whole retention: its events and markers are gone, its numbering is not.
    expect(await t.redis.exists(keys.events(device), keys.eventId(received(device, 'wa-1').id))).toBe(0);
    expect(await t.redis.get(keys.eventSeq(device))).toBe('3');
    expect(await appendMany(log, device, 1, 4)).toEqual([4]);

    // Margins of half a second, so a loaded machine's slow steps do not change the outcome.
    const busyLog = logWith({ retentionMs: 1000 });
    const busy = await heldDevice();
    await appendMany(busyLog, busy, 3);
    await sleep(500);
    await appendMany(busyLog, busy, 1, 4); // refreshes the stream's expiry; entries 1-3 are still young
    await sleep(600);
    await appendMany(busyLog, busy, 1, 5); // 1-3 are past the retention now, 4 is not
    expect(await sequencesIn(busyLog, busy)).toEqual([4, 5]);
  });

  it('trims a backlog of old entries a few per append, the cost of each append bounded', async () => {
    const log = logWith({ retentionMs: 1000 });
    const device = await heldDevice();
    await appendMany(log, device, 20);
    // The keys live on past the retention, as steady appends would keep them, so the next append
    // finds 20 entries past it.
    await t.redis.pexpire(keys.events(device), 60_000);
    await t.redis.pexpire(keys.eventSeq(device), 60_000);
    await sleep(1100);
    await appendMany(log, device, 1, 21);
    expect(await sequencesIn(log, device)).toEqual(Array.from({ length: 13 }, (_, i) => i + 9));
    await appendMany(log, device, 2, 22);
    expect(await sequencesIn(log, device)).toEqual([21, 22, 23]);
  });
});

describe('sequence after the counter is lost', () => {
  it('goes on from the stream, never backwards, even when trimming emptied the stream', async () => {
    const log = logWith();
    const device = await heldDevice();
    await appendMany(log, device, 3);
    await t.redis.del(keys.eventSeq(device));
    expect(await appendMany(log, device, 1, 4)).toEqual([4]);

    await t.redis.xtrim(keys.events(device), 'MAXLEN', 0);
    await t.redis.del(keys.eventSeq(device));
    expect(await appendMany(log, device, 1, 5)).toEqual([5]);
    expect(await sequencesIn(log, device)).toEqual([5]);
  });
});
