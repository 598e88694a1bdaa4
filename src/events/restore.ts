import type { ClusterKeys } from '../cluster/keys.js';
import type { Logger } from '../shared/logger.js';
import { loadLuaScript, runLua } from '../shared/lua.js';
import { markEventsStored } from './event-log.js';
import type { RedisClient as Redis } from '../shared/redis.js';

// After Redis lost its data, each device's event log is put back from the store before claims
// re-open (the Redis reset runs it; see cluster/redis-reset.ts): the numbering goes on from the
// last stored sequence instead of starting again at 1, the events the webhook had not handed on
// are in the stream again (the newest up to its max length), each with the dedup marker it had,
// and so are the markers of older events still within the dedup window, so a message WhatsApp
// delivers again to the next socket is still dropped as a repeat. Events the webhook had handed
// on stay in the store only: the pull API reads them there.
//
// One server runs it under the re-seed lock; should a second run it too (the first died, or
// Redis lost its data again), or the new holder append as soon as claims re-open,
// lua/restoreEvents.lua only ever moves things forward, so that is harmless.
// Events reach the store before their append answers (queues/stored-events.ts); only one the
// store could not take then, whose write-behind job was in the Redis that lost it, is lost, and
// its number is handed out again.

const restoreScript = loadLuaScript(new URL('./lua/', import.meta.url), 'restoreEvents.lua');

/** What the restore reads of the store (src/store's Store has it), declared here as events/ imports no store. */
export interface EventStoreReader {
  listEventCursors(after: string | null, limit: number): Promise<Array<{ deviceId: string; lastSequence: number; webhookSequence: number }>>;
  listEvents(
    deviceId: string,
    afterSequence: number,
    limit: number,
    since?: Date,
  ): Promise<Array<{ sequence: number; id: string; type: string; data: unknown; createdAt: Date }>>;
  listRecentEvents(
    deviceIds: readonly string[],
    since: Date,
    perDevice: number,
  ): Promise<Array<{ deviceId: string; sequence: number; id: string; type: string; data: unknown; createdAt: Date }>>;
}

export interface EventRestoreDeps {
  redis: Redis;
  keys: ClusterKeys;
  store: EventStoreReader;
  log: Logger;
  /** As the event log's (config.events): the dedup window, the stream's max length, the retention. */
  dedupMs: number;
  maxLength: number;
  retentionMs: number;
  /** Devices read per page, and events per page and per script call. */
  pageSize?: number;
  /**
   * Devices whose recent events one store call reads (up to a page of events each), then put
   * back all at once: their script calls share the connection's round trips.
   */
  devicesPerRead?: number;
  /**
   * Told of each device with events its webhook had not handed on (back in its stream now):
   * nothing else would wake their delivery until the device's next event.
   */
  onRestored?: (deviceId: string) => void;
}

export interface EventRestoreReport {
  devices: number;
  /** Entries put back into streams. */
  restored: number;
  /** Dedup markers put back. */
  markers: number;
}

type RestoreReply = [number, number, number];
type Cursor = Awaited<ReturnType<EventStoreReader['listEventCursors']>>[number];
type Event = Awaited<ReturnType<EventStoreReader['listEvents']>>[number];

export function createEventRestore({
  redis,
  keys,
  store,
  log,
  dedupMs,
  maxLength,
  retentionMs,
  pageSize = 500,
  devicesPerRead = 100,
  onRestored,
}: EventRestoreDeps): () => Promise<EventRestoreReport> {
  /** `toStream`: which of `events` go back into the stream (the others get their dedup marker only). */
  const put = async (cursor: Cursor, events: Event[], toStream: (event: Event) => boolean): Promise<RestoreReply> => {
    const { deviceId } = cursor;
    // A webhook that handed on more than the store has (those events' records were lost with
    // Redis) saw those numbers: they are not handed out again.
    const floor = Math.max(cursor.lastSequence, cursor.webhookSequence);
    const args: Array<string | number> = [floor, cursor.webhookSequence, retentionMs, dedupMs, maxLength];
    for (const e of events) args.push(e.sequence, e.id, e.type, e.createdAt.getTime(), JSON.stringify(e.data ?? null), toStream(e) ? '1' : '0');
    return runLua<RestoreReply>(
      redis,
      restoreScript,
      [
        keys.eventSeq(deviceId),
        keys.events(deviceId),
        // Both webhook targets (src/webhooks: the device's own, the operator's) go on from where the store says both had got to.
        keys.webhookCursor(deviceId, 'device'),
        keys.webhookCursor(deviceId, 'operator'),
        ...events.map((e) => keys.eventId(e.id)),
      ],
      args,
    );
  };

  /** `recent`: the device's first page of events since `since` (the start of the dedup window). */
  const restoreDevice = async (cursor: Cursor, recent: Event[], since: Date, report: EventRestoreReport): Promise<void> => {
    // The stream gets what the webhook had not handed on, the newest max-length of it.
    const streamFrom = Math.max(cursor.webhookSequence, cursor.lastSequence - maxLength, 0);
    // Older events still within the dedup window get their markers back (sequence order is time order).
    const afterStreamFrom = (e: Event) => e.sequence > streamFrom;
    // Most devices: one page within the dedup window holds every event the restore needs (the
    // markers' and the stream's), put back in one call. This runs before claims re-open, so its
    // round trips are the fleet's recovery time.
    const needsNone = streamFrom >= cursor.lastSequence;
    if (recent.length < pageSize && (needsNone || (recent[0] !== undefined && recent[0].sequence <= streamFrom + 1))) {
      const [added, markers] = await put(cursor, recent, afterStreamFrom);
      report.restored += added;
      report.markers += markers;
      await finish(cursor, recent.filter(afterStreamFrom).length, report);
      return;
    }
    for (let after = 0; after < streamFrom; ) {
      const page = (await store.listEvents(cursor.deviceId, after, pageSize, since)).filter((e) => e.sequence <= streamFrom);
      if (page.length === 0) break;
      report.markers += (await put(cursor, page, () => false))[1];
      after = page[page.length - 1]!.sequence;
    }
    let after = streamFrom;
    let undelivered = 0;
    for (;;) {
      const page = await store.listEvents(cursor.deviceId, after, pageSize);
      // Also with no events: the counter and the webhook cursor are put back all the same.
      const [added, markers] = await put(cursor, page, () => true);
      report.restored += added;
      undelivered += page.length;
      report.markers += markers;
      if (page.length < pageSize) break;
      after = page[page.length - 1]!.sequence;
    }
    await finish(cursor, undelivered, report);
  };

  const finish = async (cursor: Cursor, undelivered: number, report: EventRestoreReport): Promise<void> => {
    // The store has them all: webhooks may deliver up to its last.
    await markEventsStored(redis, keys, cursor.deviceId, cursor.lastSequence);
    report.devices += 1;
    // Also when another server's restore put them back first: waking twice costs one look.
    if (undelivered > 0) onRestored?.(cursor.deviceId);
  };

  /** A batch of devices with their recent events, read in one store call. */
  const readBatch = async (devices: Cursor[]) => {
    const since = new Date(Date.now() - dedupMs);
    const recent = new Map<string, Event[]>();
    for (const event of await store.listRecentEvents(devices.map((c) => c.deviceId), since, pageSize)) {
      const of = recent.get(event.deviceId);
      if (of) of.push(event);
      else recent.set(event.deviceId, [event]);
    }
    return { devices, since, recent };
  };

  return async () => {
    const report: EventRestoreReport = { devices: 0, restored: 0, markers: 0 };
    let after: string | null = null;
    for (;;) {
      const page = await store.listEventCursors(after, pageSize);
      if (page.length === 0) break;
      // The next batch is read from the store while this one's scripts run.
      let next: ReturnType<typeof readBatch> | undefined = readBatch(page.slice(0, devicesPerRead));
      for (let i = 0; next; i += devicesPerRead) {
        const { devices, since, recent } = await next;
        next = i + devicesPerRead < page.length ? readBatch(page.slice(i + devicesPerRead, i + 2 * devicesPerRead)) : undefined;
        // A failed read must not go unhandled while this batch's scripts run; it fails the restore when awaited.
        next?.catch(() => undefined);
        await Promise.all(devices.map((cursor) => restoreDevice(cursor, recent.get(cursor.deviceId) ?? [], since, report)));
      }
      after = page[page.length - 1]!.deviceId;
    }
    if (report.devices > 0) log.warn(report, 'event logs put back from the store after Redis lost its data');
    return report;
  };
}
