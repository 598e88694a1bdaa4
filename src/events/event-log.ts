import type { Counter } from 'prom-client';
import type { ClusterKeys } from '../cluster/keys.js';
import { loadLuaScript, runLua } from '../shared/lua.js';
import type { RedisClient as Redis } from '../shared/redis.js';

// Each device's inbound events (messages, acks, status changes, codes) in a Redis stream, in the
// order its lease holder saw them, numbered 1, 2, 3... without gaps so a reader resuming "after
// N" (the pull API, SSE's Last-Event-ID) notices anything it missed. Only the lease holder
// appends, and an event already appended is dropped: see lua/appendEvent-4.lua.

const appendScript = loadLuaScript(new URL('./lua/', import.meta.url), 'appendEvent-4.lua');
const markStoredScript = loadLuaScript(new URL('./lua/', import.meta.url), 'markEventsStored-1.lua');

/**
 * The store has the device's events up to `sequence` (the write-behind applied them, or the restore
 * read them there). Webhooks deliver no further than this mark: an event Redis could still lose
 * before the store has it is never handed to a receiver, whose numbers must not be given again.
 */
export async function markEventsStored(redis: Redis, keys: ClusterKeys, deviceId: string, sequence: number): Promise<number> {
  return runLua<number>(redis, markStoredScript, [keys.eventStored(deviceId)], [sequence]);
}

/** Every type of event (webhooks subscribe to a list of them). */
export const EVENT_TYPES = ['message.received', 'message.ack', 'device.status', 'device.qr', 'device.pairing_code'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface WafleetEvent {
  /** Deterministic, from what happened (eventIdFor in ids.ts). */
  id: string;
  type: EventType;
  /** Stored as JSON; `undefined` becomes null. */
  data: unknown;
}

export interface LoggedEvent extends WafleetEvent {
  sequence: number;
  /** When the log accepted it: Redis's clock, ms since the epoch. */
  at: number;
}

/**
 * The event as every reader gets it, in the contract's (API.md) fields: the pull API, the event
 * stream, and the body of a webhook delivery.
 */
export interface EventView {
  id: string;
  type: EventType;
  deviceId: string;
  sequence: number;
  /** When the log accepted it (Redis's clock), ISO 8601. */
  createdAt: string;
  data: unknown;
}

export function eventView(deviceId: string, { id, type, sequence, at, data }: LoggedEvent): EventView {
  return { id, type, deviceId, sequence, createdAt: new Date(at).toISOString(), data };
}

export type AppendOutcome = { outcome: 'appended'; sequence: number; at: number } | { outcome: 'duplicate'; sequence: number } | { outcome: 'stale' };

/** What the log counts; metrics/ registers it (a declared need, as cluster/ declares LeaseMetrics). */
export interface EventLogMetrics {
  /** Events refused because the appender no longer held the device's lease. */
  readonly staleEvents: Counter;
}

export interface EventLogOptions {
  redis: Redis;
  keys: ClusterKeys;
  metrics: EventLogMetrics;
  /** How long an event id is remembered, so its repeats are dropped. */
  dedupMs: number;
  /** Entries a device's stream keeps at most. */
  maxLength: number;
  /** Entries older than this are trimmed; at least dedupMs, so a marker never outlives its numbering. */
  retentionMs: number;
  /**
   * Told of each event the log accepted (not of duplicates), in the order the appends were
   * answered; the append answers once what it returns has settled. The store write (which must
   * be done before the socket goes on, see queues/stored-events.ts) and the webhook delivery
   * start from here. A rejection fails the append, which the caller tries again: the repeat is
   * then a duplicate and not told again, so a listener that must not miss an event never rejects.
   */
  onAppended?: (deviceId: string, event: LoggedEvent) => void | Promise<void>;
}

export interface EventLog {
  /**
   * Appends the event unless `holderLeaseValue` (`serverId@bootId:token`) is no longer the
   * device's lease (`stale`, nothing written) or the id was appended within the dedup window
   * (`duplicate`, with the sequence it got then).
   */
  append(deviceId: string, holderLeaseValue: string, event: WafleetEvent): Promise<AppendOutcome>;
  /** The device's last sequence handed out (0: none, or none within the retention). */
  lastSequence(deviceId: string): Promise<number>;
  /** Removes the device's log, numbering and stored mark (the device is deleted). */
  forget(deviceId: string): Promise<void>;
  /** Up to `limit` events with a sequence above `afterSequence`, oldest first (0: from the start). */
  read(deviceId: string, afterSequence: number, limit: number): Promise<LoggedEvent[]>;
}

type AppendReply = ['appended', number, number] | ['duplicate', number] | ['stale'];

export function createEventLog({ redis, keys, metrics, dedupMs, maxLength, retentionMs, onAppended }: EventLogOptions): EventLog {
  return {
    async append(deviceId, holderLeaseValue, { id, type, data }) {
      const reply = await runLua<AppendReply>(
        redis,
        appendScript,
        [keys.lease(deviceId), keys.eventId(id), keys.eventSeq(deviceId), keys.events(deviceId)],
        [holderLeaseValue, id, type, JSON.stringify(data ?? null), dedupMs, maxLength, retentionMs],
      );
      if (reply[0] === 'stale') {
        metrics.staleEvents.inc();
        return { outcome: 'stale' };
      }
      if (reply[0] === 'duplicate') return { outcome: 'duplicate', sequence: reply[1] };
      const [, sequence, at] = reply;
      await onAppended?.(deviceId, { id, type, data: data ?? null, sequence, at });
      return { outcome: 'appended', sequence, at };
    },

    async lastSequence(deviceId) {
      return Number((await redis.get(keys.eventSeq(deviceId))) ?? 0);
    },

    async forget(deviceId) {
      await redis.del(keys.events(deviceId), keys.eventSeq(deviceId), keys.eventStored(deviceId));
    },

    async read(deviceId, afterSequence, limit) {
      const entries = await redis.xrange(keys.events(deviceId), `(${afterSequence}-0`, '+', 'COUNT', limit);
      return entries.map(([entryId, fields]) => {
        // The fields in the order appendEvent-4.lua writes them.
        const [, id, , type, , at, , data] = fields as [string, string, string, EventType, string, string, string, string];
        return { sequence: Number(entryId.slice(0, entryId.indexOf('-'))), id, type, at: Number(at), data: JSON.parse(data) as unknown };
      });
    },
  };
}
