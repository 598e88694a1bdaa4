import { createHash, randomUUID } from 'node:crypto';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import { defineLuaScripts, loadLuaScript, runLua } from '../shared/lua.js';

// Outbound message records in Redis: accepted once per idempotency key, then `queued` ->
// `sending` (the intent, recorded with the sender's token just before the send) -> `sent` or
// `failed`. The record is what GET /api/messages/:id reads, and what keeps a retried job from
// sending twice.

const LUA = new URL('./lua/', import.meta.url);
const scripts = {
  accept: loadLuaScript(LUA, 'acceptMessage-2.lua'),
  begin: loadLuaScript(LUA, 'beginSend-4.lua'),
  finish: loadLuaScript(LUA, 'finishMessage-2.lua'),
};

export const MESSAGE_TYPES = ['text', 'image', 'video', 'document'] as const;
export type MessageType = (typeof MESSAGE_TYPES)[number];
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

export interface MessageRecord extends OutboundMessage {
  id: string;
  status: MessageStatus;
  acceptedAt: string;
  sentAt: string | null;
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
  /** Records the message, or returns the first one accepted with the same idempotency key. */
  accept(message: OutboundMessage, idempotencyKey?: string): Promise<{ id: string; created: boolean }>;
  get(messageId: string): Promise<MessageRecord | null>;
  /** `rate`: sends allowed per `windowMs` for the device (a sliding window). */
  begin(messageId: string, deviceId: string, serverId: string, token: number, rate: { limit: number; windowMs: number }): Promise<BeginSend>;
  /** `windowMs`: the device's rate window, whose slot for this message moves to the delivery. */
  finish(messageId: string, deviceId: string, outcome: 'sent' | 'failed', detail: string, windowMs?: number): Promise<void>;
  /** The device's own messages-per-minute limit, or null when it follows the default. */
  rateOverride(deviceId: string): Promise<number | null>;
  /** Sets (or with null removes) the device's own limit; the next send on any server obeys it. */
  setRateOverride(deviceId: string, perMinute: number | null): Promise<void>;
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
  idempotencyMs,
  retentionMs,
}: {
  redis: Redis;
  keys: ClusterKeys;
  /** How long a repeated idempotency key returns the first message. */
  idempotencyMs: number;
  /** How long a finished (sent or failed) record stays readable. */
  retentionMs: number;
}): MessageRecords {
  defineLuaScripts(redis, Object.values(scripts));

  return {
    async accept(message, idempotencyKey) {
      const id = randomUUID();
      const fields: Array<string> = ['deviceId', message.deviceId, 'to', message.to, 'type', message.type];
      for (const name of ['text', 'mediaUrl', 'caption', 'fileName'] as const) {
        const value = message[name];
        if (value !== undefined) fields.push(name, value);
      }
      const [messageId, created] = await runLua<[string, number]>(
        redis,
        scripts.accept,
        [idempotencyKey ? keys.idempotency(message.deviceId, idempotencyKey) : keys.idempotency(message.deviceId, `none:${id}`), keys.message(id)],
        [id, idempotencyMs, idempotencyKey ? '1' : '0', ...fields],
      );
      return { id: messageId, created: created === 1 };
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
        waMessageId: raw.waMessageId ?? null,
        error: raw.error ?? null,
        attempts: Number(raw.attempts ?? 0),
      };
    },

    async begin(messageId, deviceId, serverId, token, rate) {
      const [outcome, value] = await runLua<[string, string | number]>(
        redis,
        scripts.begin,
        [keys.message(messageId), keys.lease(deviceId), keys.sendTimes(deviceId), keys.rateOverrides],
        [`${serverId}:${token}`, messageId, rate.limit, rate.windowMs, deviceId],
      );
      if (outcome === 'go') return { outcome, attempt: Number(value) };
      if (outcome === 'sent') return { outcome, waMessageId: String(value) };
      if (outcome === 'not_owner') return { outcome, holder: String(value) };
      if (outcome === 'wait') return { outcome, ms: Number(value) };
      return { outcome: 'missing' };
    },

    async finish(messageId, deviceId, outcome, detail, windowMs = 0) {
      await runLua(redis, scripts.finish, [keys.message(messageId), keys.sendTimes(deviceId)], [outcome, detail, retentionMs, windowMs]);
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
