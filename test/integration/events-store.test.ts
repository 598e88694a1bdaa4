import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { Counter, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEventPruner } from '../../src/cluster/prune-events.js';
import { reseedFences } from '../../src/cluster/redis-reset.js';
import { createSingletonRunner } from '../../src/cluster/singleton.js';
import { createSnapshotWriter } from '../../src/devices/auth-state/auth-state.js';
import { createEventLog, type EventLog, type LoggedEvent } from '../../src/events/event-log.js';
import { eventIdFor } from '../../src/events/ids.js';
import { createEventRestore } from '../../src/events/restore.js';
import { createWriteBehindRecorder, type WriteBehindRecorder } from '../../src/queues/recorder.js';
import { createStoreSync, type StoreSync } from '../../src/queues/store-sync.js';
import { createStoredEvents, type StoredEvents } from '../../src/queues/stored-events.js';
import { createStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { scanKeys } from '../../src/shared/redis.js';
import { createDeviceBed, silentLog, type DeviceBed } from '../helpers/devices.js';

// Inbound events reach the store before their append answers (queues/stored-events.ts), and
// through the real write-behind when the store cannot take them then; what follows them
// (receipts, the webhook's progress) is written behind: the store-sync queue in Redis carries it,
// and a worker applies it to PostgreSQL. After Redis lost its data, each device's log resumes
// from the store.

let bed: DeviceBed;
let bull: Redis;
let sync: StoreSync;
let recorder: WriteBehindRecorder;
let events: EventLog;
let stored: StoredEvents;
/** Whether the event log's store write finds the store down (a real client of a closed port). */
let storeDown = false;
let unreachable: Store;
const woken: string[] = [];
const EVENTS = { dedupMs: 60_000, maxLength: 1000, retentionMs: 120_000 };

beforeAll(async () => {
  bed = await createDeviceBed();
  bull = new Redis(bed.t.url, { maxRetriesPerRequest: null });
  sync = createStoreSync({
    redis: bull,
    keys: bed.keys,
    store: bed.store,
    snapshots: createSnapshotWriter({ redis: bed.t.redis, keys: bed.keys, store: bed.store }),
    log: silentLog,
    retentionMs: 60_000,
    lockDurationMs: 5000,
    onApplied: (records) => stored.applied(records),
  });
  await sync.startWorkers();
  bed.syncs.add(sync);
  recorder = createWriteBehindRecorder(sync, 'srv-a');
  unreachable = await createStore({ kind: 'postgres', databaseUrl: 'postgres://postgres@127.0.0.1:1/none', poolMax: 1 }, { log: silentLog });
  stored = createStoredEvents({
    redis: bed.t.redis,
    keys: bed.keys,
    store: { applyRecords: (records) => (storeDown ? unreachable : bed.store).applyRecords(records) },
    writeBehind: (deviceId, event) => recorder.inboundEvent(deviceId, event),
    wake: (deviceId) => woken.push(deviceId),
    log: silentLog,
  });
  events = createEventLog({
    redis: bed.t.redis,
    keys: bed.keys,
    metrics: { staleEvents: new Counter({ name: 'test_events_stale_total', help: 'stale', registers: [new Registry()] }) },
    ...EVENTS,
    onAppended: (deviceId, event) => stored.record(deviceId, event),
  });
});
afterAll(async () => {
  await unreachable?.close();
  await sync?.close();
  bull?.disconnect();
  await bed?.cleanup();
});

/** A device in the store whose lease srv-a holds; returns its id and the lease value appends carry. */
async function heldDevice(): Promise<{ deviceId: string; holder: string }> {
  const deviceId = await bed.createDevice();
  await bed.claim(deviceId, 'srv-a');
  return { deviceId, holder: (await bed.t.redis.get(bed.keys.lease(deviceId)))! };
}

const received = (deviceId: string, waMessageId: string) =>
  ({ id: eventIdFor(deviceId, 'message.received', [waMessageId]), type: 'message.received', data: { waMessageId, text: `hi ${waMessageId}` } }) as const;

describe('inbound events written behind to the store', () => {
  it('keeps every accepted event with its id, sequence, data and time, and a repeat once', async () => {
    const { deviceId, holder } = await heldDevice();
    const logged: LoggedEvent[] = [];
    for (const wa of ['wa-1', 'wa-2', 'wa-1', 'wa-3']) {
      const outcome = await events.append(deviceId, holder, received(deviceId, wa));
      if (outcome.outcome === 'appended') logged.push((await events.read(deviceId, outcome.sequence - 1, 1))[0]!);
    }
    expect(logged.map((e) => e.sequence)).toEqual([1, 2, 3]);
    await bed.settled();

    const stored = await bed.store.listEvents(deviceId, 0, 100);
    expect(stored).toEqual(logged.map((e) => ({ deviceId, sequence: e.sequence, id: e.id, type: e.type, data: e.data, createdAt: new Date(e.at) })));
  });

  it('has each event in the store when its append answers, so Redis losing everything then loses nothing', async () => {
    const { deviceId, holder } = await heldDevice();
    for (const wa of ['wa-1', 'wa-2']) await events.append(deviceId, holder, received(deviceId, wa));
    // No waiting for the write-behind: it may still be in a Redis that is about to lose its data.
    expect((await bed.store.listEvents(deviceId, 0, 100)).map((e) => e.id)).toEqual(['wa-1', 'wa-2'].map((wa) => received(deviceId, wa).id));
    expect(await bed.t.redis.get(bed.keys.eventStored(deviceId))).toBe('2');
    expect(woken.filter((id) => id === deviceId)).toHaveLength(2);
  });

  it("hands events to the write-behind while the store is down, and the device's later ones after them", async () => {
    const { deviceId, holder } = await heldDevice();
    storeDown = true;
    try {
      for (const wa of ['wa-1', 'wa-2']) expect(await events.append(deviceId, holder, received(deviceId, wa))).toMatchObject({ outcome: 'appended' });
    } finally {
      storeDown = false;
    }
    // The store is back: the next event still goes behind the two queued before it.
    await events.append(deviceId, holder, received(deviceId, 'wa-3'));
    await bed.settled();
    const inStore = await bed.store.listEvents(deviceId, 0, 100);
    expect(inStore.map((e) => [e.sequence, e.id])).toEqual(['wa-1', 'wa-2', 'wa-3'].map((wa, i) => [i + 1, received(deviceId, wa).id]));
    expect(await bed.t.redis.get(bed.keys.eventStored(deviceId))).toBe('3');
    // Applied, and the store is tried again a second after it failed: the device's next event
    // goes straight to the store again.
    await new Promise((r) => setTimeout(r, 1000));
    await events.append(deviceId, holder, received(deviceId, 'wa-4'));
    expect((await bed.store.listEvents(deviceId, 3, 100)).map((e) => e.sequence)).toEqual([4]);
  });

  it('records receipts of a sent message and the webhook progress', async () => {
    const { deviceId } = await heldDevice();
    const { id: messageId } = await bed.store.acceptMessage({ id: randomUUID(), deviceId, idempotencyKey: null, idempotencyMs: 60_000, to: '4915112345678', type: 'text', text: 'hi' });
    const deliveredAt = new Date(Date.UTC(2026, 0, 1, 12, 0, 1));
    const readAt = new Date(Date.UTC(2026, 0, 1, 12, 0, 9));
    recorder.messageReceipt(deviceId, messageId, 'delivered', deliveredAt);
    recorder.messageReceipt(deviceId, messageId, 'read', readAt);
    recorder.webhookProgress(deviceId, 4);
    recorder.webhookProgress(deviceId, 2);
    await bed.settled();

    expect(await bed.store.getMessage(messageId)).toMatchObject({ deliveredAt, readAt });
    expect((await bed.store.listEventCursors(null, 1000)).find((c) => c.deviceId === deviceId)).toEqual({ deviceId, lastSequence: 0, webhookSequence: 4 });
  });
});

/**
 * Redis loses its data: every key of this test's prefix goes, but the write-behind's queues, which
 * carry nothing this test still waits for and whose workers keep running here.
 */
async function loseRedisData(): Promise<void> {
  await scanKeys(bed.t.redis, `*{${bed.t.prefix}}*`, async (found) => {
    const lost = found.filter((key) => !key.startsWith(bed.keys.bullPrefix));
    if (lost.length > 0) await bed.t.redis.unlink(...lost);
  });
}

describe('inbound events after Redis lost its data', () => {
  // Two devices per store read: the devices of every test so far take several batches, each read while the one before is put back.
  const restore = () => createEventRestore({ redis: bed.t.redis, keys: bed.keys, store: bed.store, log: silentLog, ...EVENTS, devicesPerRead: 2 });
  const reseed = () => reseedFences({ redis: bed.t.redis, keys: bed.keys, store: bed.store, leases: bed.leases, log: silentLog, ttlMs: 1000, restoreEvents: restore() }, false);

  it('goes on numbering from the store, puts back what the webhook had not handed on, and still drops repeats', async () => {
    const { deviceId, holder } = await heldDevice();
    for (let i = 1; i <= 5; i++) await events.append(deviceId, holder, received(deviceId, `wa-${i}`));
    const before = await events.read(deviceId, 0, 100);
    recorder.webhookProgress(deviceId, 2);
    await bed.settled();

    await loseRedisData();
    expect(await bed.t.redis.exists(bed.keys.eventSeq(deviceId), bed.keys.events(deviceId))).toBe(0);
    await reseed();
    // A second server noticing the same loss (the marker is there: it does nothing) and a restore
    // run again on its own change nothing either.
    await reseed();
    await restore()();
    // The device's webhook delivery is woken for what is back in the stream, and only for that.
    const woken: string[] = [];
    const idle = await heldDevice();
    await createEventRestore({ redis: bed.t.redis, keys: bed.keys, store: bed.store, log: silentLog, ...EVENTS, onRestored: (id) => woken.push(id) })();
    expect(woken).toContain(deviceId);
    expect(woken).not.toContain(idle.deviceId);

    // The webhook goes on after what it had handed on; the pull API and SSE read the rest.
    expect(await bed.t.redis.get(bed.keys.webhookCursor(deviceId, 'device'))).toBe('2');
    expect(await bed.t.redis.get(bed.keys.webhookCursor(deviceId, 'operator'))).toBe('2');
    expect(await events.read(deviceId, 0, 100)).toEqual(before.slice(2));

    await bed.claim(deviceId, 'srv-a');
    const again = (await bed.t.redis.get(bed.keys.lease(deviceId)))!;
    // WhatsApp delivers an unacknowledged message again to the new socket: still a repeat.
    expect(await events.append(deviceId, again, received(deviceId, 'wa-1'))).toEqual({ outcome: 'duplicate', sequence: 1 });
    expect(await events.append(deviceId, again, received(deviceId, 'wa-4'))).toEqual({ outcome: 'duplicate', sequence: 4 });
    expect(await events.append(deviceId, again, received(deviceId, 'wa-6'))).toMatchObject({ outcome: 'appended', sequence: 6 });
    expect((await events.read(deviceId, 0, 100)).map((e) => e.sequence)).toEqual([3, 4, 5, 6]);
    await bed.settled();
    const stored = await bed.store.listEvents(deviceId, 0, 100);
    expect(stored.map((e) => [e.sequence, e.id])).toEqual([1, 2, 3, 4, 5, 6].map((n) => [n, received(deviceId, `wa-${n}`).id]));
  });

  it('never hands out again a number the webhook saw, even when the store lost that event', async () => {
    const { deviceId } = await heldDevice();
    // Events 1..7 went to the webhook; their own records were still queued when Redis lost its data.
    recorder.webhookProgress(deviceId, 7);
    await bed.settled();
    await loseRedisData();
    await reseed();
    await bed.claim(deviceId, 'srv-a');
    const again = (await bed.t.redis.get(bed.keys.lease(deviceId)))!;
    expect(await events.append(deviceId, again, received(deviceId, 'wa-8'))).toMatchObject({ outcome: 'appended', sequence: 8 });
  });

  it('catches up a Redis that came back behind the store (a replica that missed the newest writes)', async () => {
    const { deviceId, holder } = await heldDevice();
    for (let i = 1; i <= 3; i++) await events.append(deviceId, holder, received(deviceId, `wa-${i}`));
    const replica = await bed.t.redis.dumpBuffer(bed.keys.events(deviceId));
    for (let i = 4; i <= 5; i++) await events.append(deviceId, holder, received(deviceId, `wa-${i}`));
    const before = await events.read(deviceId, 0, 100);
    await bed.settled();

    // The replica had the stream and counter as they were after event 3, and no marker of 4 or 5.
    await loseRedisData();
    await bed.t.redis.restore(bed.keys.events(deviceId), 0, replica);
    await bed.t.redis.set(bed.keys.eventSeq(deviceId), '3');
    await reseed();

    expect(await events.read(deviceId, 0, 100)).toEqual(before);
    await bed.claim(deviceId, 'srv-a');
    const again = (await bed.t.redis.get(bed.keys.lease(deviceId)))!;
    expect(await events.append(deviceId, again, received(deviceId, 'wa-5'))).toEqual({ outcome: 'duplicate', sequence: 5 });
    expect(await events.append(deviceId, again, received(deviceId, 'wa-6'))).toMatchObject({ outcome: 'appended', sequence: 6 });
  });
});

describe('inbound events past the store retention', () => {
  it('are pruned by one server per period, in batches, each device newest kept', async () => {
    const [busy, idle] = [await bed.createDevice(), await bed.createDevice()];
    const day = 86_400_000;
    const record = (deviceId: string, sequence: number, ageMs: number) =>
      ({ kind: 'inbound_event', at: new Date().toISOString(), deviceId, sequence, eventId: `ev-${deviceId}-${sequence}`, type: 'message.received', data: null, createdAt: new Date(Date.now() - ageMs).toISOString() }) as const;
    await bed.store.applyRecords([
      ...[1, 2, 3, 4, 5].map((n) => record(busy, n, (40 - n) * day)),
      record(busy, 6, day),
      record(idle, 1, 50 * day),
      record(idle, 2, 45 * day),
    ]);
    // Two servers' pruners: every server runs the timer, one of them the round.
    const pruner = () => createEventPruner({ store: bed.store, keys: bed.keys, singleton: createSingletonRunner(bed.t.redis), retentionMs: 30 * day, intervalMs: 60_000, log: silentLog, batch: 2 });
    const [a, b] = [pruner(), pruner()];
    expect(await a.round()).toBe(6);
    expect(await b.round()).toBeNull();
    expect((await bed.store.listEvents(busy, 0, 100)).map((e) => e.sequence)).toEqual([6]);
    // The idle device's newest is past the retention too, and kept: its numbering must not restart.
    expect((await bed.store.listEvents(idle, 0, 100)).map((e) => e.sequence)).toEqual([2]);
  });
});
