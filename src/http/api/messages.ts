import { randomUUID } from 'node:crypto';
import { acceptedFromStore, type MessageStatus, type OutboundMessage } from '../../queues/messages.js';
import { HttpError } from '../errors.js';
import { route, type RouteSpec } from '../routes.js';
import { loadDevice, type ApiDeps } from './context.js';
import { deviceIdParams, idempotencyKey, messageIdParams, rateLimitBody, seedSendMessageBody, sendMessageBody } from './schemas.js';

// Messages are accepted by any server: recorded in the store (once per idempotency key), then in
// Redis and queued on the device's own queue, which only the device's lease holder works off.

const COMMON = { 401: 'No or unknown API key', 403: 'The key may not act on this device', 404: 'No such device', 422: 'Invalid request' };

/**
 * Durable first: the store records the message (once per idempotency key) before anything is
 * answered, so a message answered 202 survives Redis losing its data (see restore.ts). The store
 * being down fails the call (503 store_unavailable) with nothing queued; the client retries.
 */
async function accept(deps: ApiDeps, message: OutboundMessage, key: string | undefined): Promise<{ id: string; status: MessageStatus }> {
  const accepted = await deps.store.acceptMessage({ ...message, id: randomUUID(), idempotencyKey: key ?? null, idempotencyMs: deps.idempotencyMs });
  const { id } = accepted;
  // Finished by the store's account (a repeated key, long after): nothing to queue.
  if (accepted.status !== 'queued') return { id, status: (await deps.messages.get(id))?.status ?? accepted.status };
  let status = accepted.created ? null : ((await deps.messages.get(id))?.status ?? null);
  if (status === null) {
    // New, or a repeated key whose Redis record went with Redis's data: the working copy is made
    // from what the store accepted first (its payload, its accept time), as the restore would.
    const stored = accepted.created ? null : await deps.store.getMessage(id);
    const source = stored ? acceptedFromStore(stored) : { ...message, id, acceptedAt: accepted.acceptedAt };
    status = (await deps.messages.accept(source)).status;
  }
  // A repeated key returns the first message; it is queued again only if it never got queued
  // (the accepting server died in between). A job id is unique, so this cannot queue it twice.
  if (status === 'queued') await deps.enqueueMessage(id, message.deviceId);
  return { id, status };
}

/** Redis's record: the freshest (it knows `sending`, and an end not yet written behind). */
async function liveMessageView(deps: ApiDeps, messageId: string) {
  const record = await deps.messages.get(messageId);
  if (!record) return null;
  const { id, deviceId, to, type, status, acceptedAt, sentAt, deliveredAt, readAt, waMessageId, error } = record;
  return { id, deviceId, to, type, status, acceptedAt, sentAt, deliveredAt, readAt, waMessageId, error };
}

/** The store's row, once Redis's record expired (retention) or went with Redis's data. */
async function storedMessageView(deps: ApiDeps, messageId: string) {
  const row = await deps.store.getMessage(messageId);
  if (!row) return null;
  return {
    id: row.id,
    deviceId: row.deviceId,
    to: row.to,
    type: row.type,
    status: row.status,
    acceptedAt: row.acceptedAt.toISOString(),
    sentAt: row.status === 'sent' ? (row.finishedAt?.toISOString() ?? null) : null,
    // Receipts reach the store written behind (message_receipt records).
    deliveredAt: row.deliveredAt?.toISOString() ?? null,
    readAt: row.readAt?.toISOString() ?? null,
    waMessageId: row.waMessageId,
    error: row.error,
  };
}

/** The message as GET /api/messages/:id shows it: Redis's record, else the store's row; null if neither has it. */
export async function findMessage(deps: ApiDeps, messageId: string) {
  return (await liveMessageView(deps, messageId)) ?? (await storedMessageView(deps, messageId));
}

async function rateView(deps: ApiDeps, deviceId: string) {
  const own = await deps.messages.rateOverride(deviceId);
  return { deviceId, messagesPerMinute: own ?? deps.defaultRatePerMinute, source: own === null ? 'default' : 'device' };
}

function keyFrom(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  const parsed = idempotencyKey.safeParse(Array.isArray(header) ? header[0] : header);
  if (!parsed.success) {
    throw new HttpError(422, 'validation_failed', 'The Idempotency-Key header is not valid', [{ path: 'headers.idempotency-key', message: parsed.error.issues[0]!.message }]);
  }
  return parsed.data;
}

export function messageRoutes(deps: ApiDeps): RouteSpec[] {
  return [
    route({
      method: 'post',
      path: '/api/devices/:id/messages',
      tag: 'messages',
      summary: "Queue a message on the device's queue; its owner sends it, in order, within its rate limit",
      access: 'any',
      params: deviceIdParams,
      body: sendMessageBody,
      headers: { 'Idempotency-Key': 'A repeated key returns the first message and sends once' },
      responses: { 202: '{id, status}', 400: 'Malformed JSON', ...COMMON, 413: 'Body too large', 415: 'Not JSON', 503: 'The store is unavailable: nothing queued (Retry-After)' },
      async handler({ params, body, caller, req }) {
        await loadDevice(deps, caller, params.id);
        const result = await accept(deps, { deviceId: params.id, ...body }, keyFrom(req.headers['idempotency-key']));
        return { status: 202, body: result };
      },
    }),

    route({
      method: 'get',
      path: '/api/devices/:id/rate-limit',
      tag: 'messages',
      summary: "The device's send rate (messages in any 60-second window) and whether it is its own",
      access: 'any',
      params: deviceIdParams,
      responses: { 200: '{deviceId, messagesPerMinute, source: "device"|"default"}', ...COMMON },
      async handler({ params, caller }) {
        await loadDevice(deps, caller, params.id);
        return { status: 200, body: await rateView(deps, params.id) };
      },
    }),

    route({
      method: 'put',
      path: '/api/devices/:id/rate-limit',
      tag: 'messages',
      summary: "Set the device's own send rate (null: back to the default); the next send on any server obeys it",
      access: 'any',
      params: deviceIdParams,
      body: rateLimitBody,
      responses: { 200: '{deviceId, messagesPerMinute, source}', 400: 'Malformed JSON', ...COMMON, 413: 'Body too large', 415: 'Not JSON' },
      async handler({ params, body, caller }) {
        await loadDevice(deps, caller, params.id);
        await deps.messages.setRateOverride(params.id, body.messagesPerMinute);
        return { status: 200, body: await rateView(deps, params.id) };
      },
    }),

    route({
      method: 'get',
      path: '/api/messages/:id',
      tag: 'messages',
      summary: "A message's status, timestamps and WhatsApp id",
      access: 'any',
      params: messageIdParams,
      responses: { 200: '{id, deviceId, to, type, status, acceptedAt, sentAt, deliveredAt, readAt, waMessageId, error}', ...COMMON, 404: 'No such message' },
      async handler({ params, caller }) {
        const view = await findMessage(deps, params.id);
        if (!view) throw new HttpError(404, 'message_not_found', `No message ${params.id}`);
        if (caller.kind === 'user') await loadDevice(deps, caller, view.deviceId);
        return { status: 200, body: view };
      },
    }),

    route({
      method: 'post',
      path: '/send-message',
      tag: 'messages',
      summary: "The seed's send call, kept for existing clients",
      access: 'any',
      body: seedSendMessageBody,
      headers: { 'Idempotency-Key': 'As for /api/devices/:id/messages' },
      responses: { 202: '{success: true, messageId}', 400: 'Malformed JSON', ...COMMON, 413: 'Body too large', 415: 'Not JSON', 503: 'As for /api/devices/:id/messages' },
      async handler({ body, caller, req }) {
        await loadDevice(deps, caller, body.deviceId);
        const message: OutboundMessage = {
          deviceId: body.deviceId,
          to: body.targetJid,
          type: body.messageType,
          ...(body.messageType === 'text' ? { text: body.message } : { mediaUrl: body.mediaUrl, caption: body.caption ?? body.message }),
        };
        const { id } = await accept(deps, message, keyFrom(req.headers['idempotency-key']));
        return { status: 202, body: { success: true, messageId: id } };
      },
    }),
  ];
}
