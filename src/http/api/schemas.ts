import { z } from 'zod';
import { serverIdProblems } from '../../config/identity.js';
import { SERVER_TYPES } from '../../store/types.js';
import { EVENT_TYPES } from '../../events/event-log.js';

// The zod schemas of every path parameter, query and body of the API. They validate requests
// and, through routes.ts, generate the OpenAPI document. Objects are strict: unknown fields are
// refused, so a typo in a client is an error, not a silently ignored field.

export const uuid = z.uuid({ error: 'must be a UUID' });

export const phoneNumber = z
  .string()
  .regex(/^\+?[1-9]\d{6,14}$/, 'must be a phone number in international form: 7-15 digits, an optional leading +');

export const jid = z
  .string()
  .max(128)
  .regex(/^(\d{5,20}(:\d{1,3})?@s\.whatsapp\.net|[\d-]{5,40}@g\.us|\d{5,20}@lid)$/, 'must be a WhatsApp JID (…@s.whatsapp.net, …@g.us or …@lid)');

export const httpUrl = z
  .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
  .max(2048, 'must be at most 2048 characters');

export const serverId = z
  .string()
  .max(128, 'must be at most 128 characters')
  .superRefine((id, ctx) => {
    for (const problem of serverIdProblems(id)) ctx.addIssue({ code: 'custom', message: problem });
  });

export const deviceIdParams = z.strictObject({ id: uuid });
export const serverIdParams = z.strictObject({ id: serverId });
export const userIdParams = z.strictObject({ userId: uuid });
export const apiKeyIdParams = z.strictObject({ id: uuid });

export const createDeviceBody = z
  .strictObject({
    userId: uuid.optional().describe('Required with the internal key; implied by a user key'),
    name: z.string().trim().min(1, 'must not be empty').max(100, 'must be at most 100 characters'),
    connectionMethod: z.enum(['qr', 'pairing']).default('qr'),
    phoneForPairing: phoneNumber.optional(),
    webhookUrl: httpUrl.optional(),
  })
  .superRefine((body, ctx) => {
    if (body.connectionMethod === 'pairing' && !body.phoneForPairing) {
      ctx.addIssue({ code: 'custom', path: ['phoneForPairing'], message: 'is required when connectionMethod is pairing' });
    }
  });

export const listDevicesQuery = z.strictObject({
  userId: uuid.optional().describe('With the internal key: whose devices (all when absent)'),
  limit: z.coerce.number({ error: 'must be a number' }).int().min(1).max(1000).default(100),
});

export const deviceEventsQuery = z.strictObject({
  after: z.coerce.number({ error: 'must be a number' }).int().min(0).default(0).describe('The last sequence the caller has; events after it are returned (0: from the oldest kept)'),
  limit: z.coerce.number({ error: 'must be a number' }).int().min(1).max(1000).default(100),
});

export const eventStreamQuery = z.strictObject({
  deviceId: uuid,
  after: z.coerce.number({ error: 'must be a number' }).int().min(0).optional().describe('Start after this sequence (Last-Event-ID wins when both are given); absent: with the next event'),
});

/**
 * A device's webhook. Whether the URL's address may be reached (not loopback, private, link-local
 * or metadata, unless OUTBOUND_ALLOW_PRIVATE) needs DNS, so the handler checks that after this.
 */
export const putWebhookBody = z.strictObject({
  url: httpUrl.describe('Where the events are POSTed'),
  events: z
    .array(z.enum(EVENT_TYPES, { error: `must be one of ${EVENT_TYPES.join(', ')}` }))
    .min(1, 'must name at least one event type (leave it out for every type)')
    .max(EVENT_TYPES.length)
    .refine((types) => new Set(types).size === types.length, 'must not name a type twice')
    .optional()
    .describe('The event types to deliver; every type when left out'),
});

const serverFields = {
  name: z.string().trim().min(1).max(200),
  url: httpUrl,
  type: z.enum(SERVER_TYPES),
  region: z.string().trim().min(1).max(64),
  maxCapacity: z.number({ error: 'must be a number' }).int().min(1).max(100_000),
  priority: z.number({ error: 'must be a number' }).int().min(0).max(1000),
};

export const putServerBody = z.strictObject({ ...serverFields, region: serverFields.region.optional() });

export const patchServerBody = z
  .strictObject(serverFields)
  .partial()
  .refine((body) => Object.keys(body).length > 0, 'must change at least one field');

export const createApiKeyBody = z.strictObject({
  name: z.string().trim().min(1).max(100).optional(),
});

export type CreateDeviceBody = z.infer<typeof createDeviceBody>;

export const messageIdParams = z.strictObject({ id: uuid });

export const simInboundBody = z.strictObject({
  from: phoneNumber.describe('Who writes to the device'),
  text: z.string().min(1, 'must not be empty').max(4096, 'must be at most 4096 characters'),
});

export const simReceiptBody = z.strictObject({
  status: z.enum(['delivered', 'read']).describe("How far the recipient's phone got with the message"),
});

export const idempotencyKey = z
  .string()
  .regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'must be 1-128 characters of A-Z a-z 0-9 _ . : -');

const recipient = z.union([phoneNumber, jid], { error: 'must be a phone number in international form or a WhatsApp JID' });

function checkContent(body: { type: string; text?: string | undefined; mediaUrl?: string | undefined; fileName?: string | undefined }, ctx: z.RefinementCtx) {
  if (body.type === 'text' && !body.text) ctx.addIssue({ code: 'custom', path: ['text'], message: 'is required for a text message' });
  if (body.type !== 'text' && !body.mediaUrl) ctx.addIssue({ code: 'custom', path: ['mediaUrl'], message: `is required for a ${body.type} message` });
  if (body.type === 'text' && body.mediaUrl) ctx.addIssue({ code: 'custom', path: ['mediaUrl'], message: 'is only for image, video and document messages' });
}

export const sendMessageBody = z
  .strictObject({
    to: recipient,
    type: z.enum(['text', 'image', 'video', 'document']),
    text: z.string().min(1).max(4096, 'must be at most 4096 characters').optional(),
    mediaUrl: httpUrl.optional(),
    caption: z.string().max(1024, 'must be at most 1024 characters').optional(),
    fileName: z.string().min(1).max(255).optional(),
  })
  .superRefine(checkContent);

/** A device's own send rate; null goes back to MESSAGE_RATE_PER_MINUTE. */
export const rateLimitBody = z.strictObject({
  messagesPerMinute: z.number().int().min(1).max(10_000).nullable(),
});

/** The seed's POST /send-message body, kept for existing clients. */
export const seedSendMessageBody = z
  .strictObject({
    deviceId: uuid,
    targetJid: recipient,
    messageType: z.enum(['text', 'image', 'video', 'document']).default('text'),
    message: z.string().max(4096).optional(),
    mediaUrl: httpUrl.optional(),
    caption: z.string().max(1024).optional(),
  })
  .superRefine((body, ctx) => checkContent({ type: body.messageType, text: body.message, mediaUrl: body.mediaUrl }, ctx));
