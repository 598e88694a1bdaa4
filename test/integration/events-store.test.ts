import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { Counter, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSnapshotWriter } from '../../src/devices/auth-state/auth-state.js';
import { createEventLog, type EventLog, type LoggedEvent } from '../../src/events/event-log.js';
import { eventIdFor } from '../../src/events/ids.js';
import { createWriteBehindRecorder, type WriteBehindRecorder } from '../../src/queues/recorder.js';
import { createStoreSync, type StoreSync } from '../../src/queues/store-sync.js';
import { createDeviceBed, silentLog, type DeviceBed } from '../helpers/devices.js';

// Inbound events and what follows them (receipts, the webhook's progress) reach the store through
// the real write-behind: the event log's onAppended hands each accepted event to the recorder, the
// store-sync queue in Redis carries it, and a worker applies it to PostgreSQL.

let bed: DeviceBed;
let bull: Redis;
let sync: StoreSync;
let recorder: WriteBehindRecorder;
let events: EventLog;

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
  });
  await sync.startWorkers();
  bed.syncs.add(sync);
  recorder = createWriteBehindRecorder(sync, 'srv-a');
  events = createEventLog({
    redis: bed.t.redis,
    keys: bed.keys,
    metrics: { staleEvents: new Counter({ name: 'test_events_stale_total', help: 'stale', registers: [new Registry()] }) },
    dedupMs: 60_000,
    maxLength: 1000,
    retentionMs: 120_000,
    onAppended: (deviceId, event) => recorder.inboundEvent(deviceId, event),
  });
});
afterAll(async () => {
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
