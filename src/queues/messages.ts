import { createHash } from 'node:crypto';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import { defineLuaScripts, loadLuaScript, runLua } from '../shared/lua.js';
import type { OUTBOUND_MESSAGE_TYPES, StoredMessage } from '../store/types.js';
import { leaseValue } from '../cluster/lease-value.js';

// Outbound message records in Redis, the working copy of what the store accepted (once per
// idempotency key, see migrations/007_outbound_messages.sql): `queued` ->
// `sending` (the intent, recorded with the sender's token just before the send) -> `sent` or
// `failed`. The record is what GET /api/messages/:id reads, and what keeps a retried job from
// sending twice.

const LUA = new URL('./lua/', import.meta.url);
const scripts = {
  accept: loadLuaScript(LUA, 'acceptMessage-1.lua'),
  begin: loadLuaScript(LUA, 'beginSend-4.lua'),
  finish: loadLuaScript(LUA, 'finishMessage-2.lua'),
  receipt: loadLuaScript(LUA, 'recordReceipt-1.lua'),
};

export { OUTBOUND_MESSAGE_TYPES as MESSAGE_TYPES } from '../store/types.js';
export type MessageType = (typeof OUTBOUND_MESSAGE_TYPES)[number];
export type MessageStatus = 'queued' | 'sending' | 'sent' | 'failed';

export interface OutboundMessage {
  deviceId: string;
  /** A phone number or a JID. */
  to: string;
  type: MessageType;
  text?: string | undefined;
  mediaUrl?: string | undefined;
  caption?: string | undefined;
  fileName?: string | undefined;
}

/** A message the store has accepted: its id and accept time are the store's. */
export interface AcceptedOutboundMessage extends OutboundMessage {
  id: string;
  acceptedAt: Date;
}

/** How a message ended, for the store (written behind, so the restore stops considering it pending). */
export interface MessageFinished {
  messageId: string;
  deviceId: string;
  status: 'sent' | 'failed';
  waMessageId: string | null;
  error: string | null;
}

export interface MessageRecord extends OutboundMessage {
  id: string;
  status: MessageStatus;
  acceptedAt: string;
  sentAt: string | null;
  /** When the recipient's phone had it (the first receipt saying so), or null. */
  deliveredAt: string | null;
  /** When the recipient opened it (or played it), or null. */
  readAt: string | null;
  waMessageId: string | null;
  error: string | null;
  attempts: number;
}

export type BeginSend =
  | { outcome: 'go'; attempt: number }
  | { outcome: 'sent'; waMessageId: string }
  | { outcome: 'not_owner'; holder: string }
  | { outcome: 'wait'; ms: number }
  | { outcome: 'missing' };

export interface MessageRecords {
  /**
   * Creates the Redis record of a message the store accepted (same id, same accept time), unless
   * one exists: then its status, untouched.
   */
  accept(message: AcceptedOutboundMessage): Promise<{ status: MessageStatus; created: boolean }>;
  get(messageId: string): Promise<MessageRecord | null>;
  /**
   * `holder`: the sender's holder id (holderId()); `rate`: sends allowed per `windowMs` for the
   * device (a sliding window).
   */
  begin(messageId: string, deviceId: string, holder: string, token: number, rate: { limit: number; windowMs: number }): Promise<BeginSend>;
  /** `windowMs`: the device's rate window, whose slot for this message moves to the delivery. */
  finish(messageId: string, deviceId: string, outcome: 'sent' | 'failed', detail: string, windowMs?: number): Promise<void>;
  /**
   * Our id of the message the device sent under this WhatsApp id, while its record is retained;
   * null for one we did not send (sent from the phone, or long ago).
   */
  sentMessageId(deviceId: string, waMessageId: string): Promise<string | null>;
  /** Records a receipt's time (see lua/recordReceipt-1.lua); false when nothing new was recorded. */
  recordReceipt(messageId: string, status: 'delivered' | 'read' | 'played', atMs: number): Promise<boolean>;
  /** The device's own messages-per-minute limit, or null when it follows the default. */
  rateOverride(deviceId: string): Promise<number | null>;
  /** Sets (or with null removes) the device's own limit; the next send on any server obeys it. */
  setRateOverride(deviceId: string, perMinute: number | null): Promise<void>;
}

/** The Redis record's source for a message the store holds (the accept path's repeat, the restore). */
export function acceptedFromStore(stored: StoredMessage): AcceptedOutboundMessage {
  const optional = (value: string | null) => value ?? undefined;
  return {
    id: stored.id,
    acceptedAt: stored.acceptedAt,
    deviceId: stored.deviceId,
    to: stored.to,
    type: stored.type,
    text: optional(stored.text),
    mediaUrl: optional(stored.mediaUrl),
    caption: optional(stored.caption),
    fileName: optional(stored.fileName),
  };
}

/**
 * WhatsApp's id for our message, derived from ours: a resend after a crash carries the same id,
 * and WhatsApp (like the simulated one) drops a message id it has already seen.
 */
export function waMessageIdFor(messageId: string): string {
  return `3EB0${createHash('sha256').update(messageId).digest('hex').slice(0, 16).toUpperCase()}`;
}

export function createMessageRecords({
  redis,
  keys,
  retentionMs,
  onFinished,
}: {
  redis: Redis;
  keys: ClusterKeys;
  /** How long a finished (sent or failed) record stays readable. */
  retentionMs: number;
  /** Told once per message that ends (not for a repeat): the write-behind records it in the store. */
  onFinished?: (finished: MessageFinished) => void;
}): MessageRecords {
  defineLuaScripts(redis, Object.values(scripts));

  return {
    async accept(message) {
      const fields: Array<string> = ['deviceId', message.deviceId, 'to', message.to, 'type', message.type];
      for (const name of ['text', 'mediaUrl', 'caption', 'fileName'] as const) {
        const value = message[name];
        if (value !== undefined && value !== null) fields.push(name, value);
      }
      const [status, created] = await runLua<[string, number]>(redis, scripts.accept, [keys.message(message.id)], [message.id, message.acceptedAt.getTime(), ...fields]);
      return { status: status as MessageStatus, created: created === 1 };
    },

    async get(messageId) {
      const raw = await redis.hgetall(keys.message(messageId));
      if (!raw.id) return null;
      const at = (ms: string | undefined) => (ms ? new Date(Number(ms)).toISOString() : null);
      return {
        id: raw.id,
        deviceId: raw.deviceId!,
        to: raw.to!,
        type: raw.type as MessageType,
        text: raw.text,
        mediaUrl: raw.mediaUrl,
        caption: raw.caption,
        fileName: raw.fileName,
        status: raw.status as MessageStatus,
        acceptedAt: at(raw.acceptedAt)!,
        sentAt: at(raw.sentAt),
        deliveredAt: at(raw.deliveredAt),
        readAt: at(raw.readAt),
        waMessageId: raw.waMessageId ?? null,
        error: raw.error ?? null,
        attempts: Number(raw.attempts ?? 0),
      };
    },

    async begin(messageId, deviceId, holder, token, rate) {
      const [outcome, value] = await runLua<[string, string | number]>(
        redis,
        scripts.begin,
        [keys.message(messageId), keys.lease(deviceId), keys.sendTimes(deviceId), keys.rateOverrides],
        [leaseValue(holder, token), messageId, rate.limit, rate.windowMs, deviceId],
      );
      if (outcome === 'go') {
        // Before the send, so even WhatsApp's first receipt finds whose message it is.
        await redis.set(keys.sentMessage(deviceId, waMessageIdFor(messageId)), messageId, 'PX', retentionMs);
        return { outcome, attempt: Number(value) };
      }
      if (outcome === 'sent') return { outcome, waMessageId: String(value) };
      if (outcome === 'not_owner') return { outcome, holder: String(value) };
      if (outcome === 'wait') return { outcome, ms: Number(value) };
      return { outcome: 'missing' };
    },

    async finish(messageId, deviceId, outcome, detail, windowMs = 0) {
      const recorded = await runLua<number>(redis, scripts.finish, [keys.message(messageId), keys.sendTimes(deviceId)], [outcome, detail, retentionMs, windowMs]);
      if (recorded === 1) {
        onFinished?.({ messageId, deviceId, status: outcome, waMessageId: outcome === 'sent' ? detail : null, error: outcome === 'failed' ? detail : null });
      }
    },

    sentMessageId: (deviceId, waMessageId) => redis.get(keys.sentMessage(deviceId, waMessageId)),

    async recordReceipt(messageId, status, atMs) {
      return (await runLua<number>(redis, scripts.receipt, [keys.message(messageId)], [status, atMs])) === 1;
    },

    async rateOverride(deviceId) {
      const value = await redis.hget(keys.rateOverrides, deviceId);
      return value === null ? null : Number(value);
    },

    async setRateOverride(deviceId, perMinute) {
      if (perMinute === null) await redis.hdel(keys.rateOverrides, deviceId);
      else await redis.hset(keys.rateOverrides, deviceId, perMinute);
    },
  };
}
