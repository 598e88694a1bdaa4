import type { ClusterKeys } from '../cluster/keys.js';
import { markEventsStored, type LoggedEvent } from '../events/event-log.js';
import type { Logger } from '../shared/logger.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { Store, StoreRecord } from '../store/types.js';
import { inboundEventRecord } from './recorder.js';
import type { SyncRecord } from './store-sync.js';

// An inbound event reaches the store before the device goes on to its next one: the event log
// answers the append only once the event is in the store, as the API answers 202 only once a
// message is. WhatsApp will not send again what the socket acknowledged, and Redis can lose its
// data before a write-behind job gets to the store, so an event known only to Redis can be lost
// for good; one in the store is put back by the restore (events/restore.ts).
//
// When the store cannot take it now (an outage), the event goes to the write-behind instead,
// which keeps trying; the device's later events follow it there until it is applied, so the
// store receives each device's events in order. Either way the stored mark
// (`{wa}:event-stored:<deviceId>`) goes up to what the store has and the webhooks are woken:
// they deliver no further than that mark, so a number a receiver saw survives Redis losing its
// data.

/** Events per store call at most (as the write-behind's batches). */
const MAX_BATCH = 500;
/** After a store call failed, how long events go straight to the write-behind before the store is tried again. */
const STORE_RETRY_MS = 1000;

export interface StoredEventsDeps {
  redis: Redis;
  keys: ClusterKeys;
  store: Pick<Store, 'applyRecords'>;
  /** The write-behind's record of an accepted event (WriteBehindRecorder.inboundEvent). */
  writeBehind: (deviceId: string, event: LoggedEvent) => void;
  /** Webhook delivery of the device goes on. */
  wake: (deviceId: string) => void;
  log: Logger;
  /**
   * A store write taking longer goes to the write-behind (a store that hangs rather than refuses
   * would hold the device's events, and the socket's acknowledgements, until it answered). If
   * it lands after all, the write-behind's copy is a duplicate and changes nothing.
   */
  timeoutMs?: number;
}

export interface StoredEvents {
  /**
   * The event log's onAppended: writes the event to the store (or hands it to the write-behind)
   * and resolves once done. Never rejects.
   */
  record(deviceId: string, event: LoggedEvent): Promise<void>;
  /** The write-behind's onApplied: marks what it applied as stored. */
  applied(records: readonly SyncRecord[]): Promise<void>;
}

export function createStoredEvents({ redis, keys, store, writeBehind, wake, log, timeoutMs = 5000 }: StoredEventsDeps): StoredEvents {
  /** Devices with events in the write-behind not yet applied: the last sequence handed to it. */
  const behind = new Map<string, number>();

  /** The store has the device's events up to `sequence`: webhooks may deliver them. */
  const stored = async (deviceId: string, sequence: number) => {
    await markEventsStored(redis, keys, deviceId, sequence);
    wake(deviceId);
  };

  /** Events waiting for the next store write, each with who waits for its outcome. */
  const waiting: Array<{ record: Extract<StoreRecord, { kind: 'inbound_event' }>; kept: (stored: boolean) => void }> = [];

  let writing = false;
  /** After a failed store call, events go straight to the write-behind until then (ms since the epoch). */
  let storeDownUntil = 0;

  /**
   * One store call for every event that came in meanwhile (a burst of status changes, say), one
   * call at a time: while it runs the next batch gathers, so a burst becomes a few large calls
   * rather than many small ones competing for the store's connections.
   */
  const writeWaiting = async () => {
    writing = true;
    const taken = waiting.splice(0, MAX_BATCH);
    let refused: (index: number) => boolean;
    try {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the store did not answer within ${timeoutMs} ms`)), timeoutMs);
      });
      const report = await Promise.race([store.applyRecords(taken.map((w) => w.record)), timeout]).finally(() => clearTimeout(timer));
      // Refused (the device deleted meanwhile, or its sequence holding another event): the
      // write-behind tries again, logs it and keeps it among its failed jobs. The store lists
      // only the first errors; past them, which ones it refused is unknown, so all go.
      const listed = new Set(report.errors.map((e) => e.index));
      refused = report.rejected === 0 ? () => false : report.rejected > listed.size ? () => true : (i) => listed.has(i);
      if (report.rejected > 0) log.warn({ rejected: report.rejected, errors: report.errors }, 'store refused inbound events: handed to the write-behind');
    } catch (err) {
      log.warn({ err, events: taken.length }, 'store unavailable for inbound events: handed to the write-behind');
      refused = () => true;
      // A store that hangs would otherwise hold each following batch for the whole timeout.
      storeDownUntil = Date.now() + STORE_RETRY_MS;
    }
    taken.forEach((w, i) => w.kept(!refused(i)));
    writing = false;
    if (waiting.length > 0) setImmediate(() => void writeWaiting());
  };

  const write = (record: Extract<StoreRecord, { kind: 'inbound_event' }>) =>
    new Promise<boolean>((kept) => {
      if (Date.now() < storeDownUntil) return kept(false);
      waiting.push({ record, kept });
      if (waiting.length === 1 && !writing) setImmediate(() => void writeWaiting());
    });

  return {
    async record(deviceId, event) {
      if (!behind.has(deviceId) && (await write({ ...inboundEventRecord(deviceId, event), at: new Date().toISOString() }))) {
        // Never rejects (see onAppended): the next event or applied batch of the device raises the mark past this one.
        await stored(deviceId, event.sequence).catch((err: unknown) => log.warn({ err, deviceId, sequence: event.sequence }, 'could not mark events stored'));
        return;
      }
      behind.set(deviceId, Math.max(behind.get(deviceId) ?? 0, event.sequence));
      writeBehind(deviceId, event);
    },

    async applied(records) {
      const last = new Map<string, number>();
      for (const record of records) {
        if (record.kind === 'inbound_event') last.set(record.deviceId, Math.max(last.get(record.deviceId) ?? 0, record.sequence));
      }
      await Promise.all(
        [...last].map(([deviceId, sequence]) => {
          if ((behind.get(deviceId) ?? Infinity) <= sequence) behind.delete(deviceId);
          // A failure puts the batch back (store-sync's onApplied), so it is marked again.
          return stored(deviceId, sequence);
        }),
      );
    },
  };
}
