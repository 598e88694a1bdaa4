import type { OutboundMessage } from '../../queues/messages.js';
import { HttpError } from '../errors.js';
import { route, type RouteSpec } from '../routes.js';
import { loadDevice, type ApiDeps } from './context.js';
import { deviceIdParams, idempotencyKey, messageIdParams, rateLimitBody, seedSendMessageBody, sendMessageBody } from './schemas.js';

// Messages are accepted by any server: recorded (once per idempotency key) and queued on the
// device's own queue, which only the device's lease holder works off.

const COMMON = { 401: 'No or unknown API key', 403: 'The key may not act on this device', 404: 'No such device', 422: 'Invalid request' };

async function accept(deps: ApiDeps, message: OutboundMessage, key: string | undefined) {
  const { id, created } = await deps.messages.accept(message, key);
  const record = await deps.messages.get(id);
  // A repeated key returns the first message; queue it again only if it never got queued (the
  // accepting server died in between). A job id is unique, so this cannot queue it twice.
  if (created || record?.status === 'queued') await deps.enqueueMessage(id, message.deviceId);
  return { id, status: record?.status ?? 'queued' };
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
      responses: { 202: '{id, status}', 400: 'Malformed JSON', ...COMMON, 413: 'Body too large', 415: 'Not JSON' },
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
      responses: { 200: '{id, deviceId, to, type, status, acceptedAt, sentAt, waMessageId, error}', ...COMMON, 404: 'No such message (or no longer kept)' },
      async handler({ params, caller }) {
        const record = await deps.messages.get(params.id);
        if (!record) throw new HttpError(404, 'message_not_found', `No message ${params.id}`);
        if (caller.kind === 'user') await loadDevice(deps, caller, record.deviceId);
        const { id, deviceId, to, type, status, acceptedAt, sentAt, waMessageId, error } = record;
        return { status: 200, body: { id, deviceId, to, type, status, acceptedAt, sentAt, waMessageId, error } };
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
      responses: { 202: '{success: true, messageId}', 400: 'Malformed JSON', ...COMMON, 413: 'Body too large', 415: 'Not JSON' },
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
