import type { SimulatedWhatsApp } from '../../devices/simulated/inbound.js';
import { toJid } from '../../devices/connector.js';
import { waMessageIdFor } from '../../queues/messages.js';
import { HttpError } from '../errors.js';
import { route, type RouteSpec } from '../routes.js';
import { loadDevice, type ApiDeps } from './context.js';
import { findMessage } from './messages.js';
import { deviceIdParams, messageIdParams, simInboundBody, simReceiptBody } from './schemas.js';

// The simulated WhatsApp's other side, for tests, the bench and the chaos run: what a contact's
// phone would do. Mounted only with DEVICE_DRIVER=simulated (elsewhere these paths are 404), and
// only for the internal key. Any server takes the call; the device's socket, wherever it runs,
// gets the result from the simulated WhatsApp in Redis.

const COMMON = { 401: 'No or unknown API key', 403: 'Not the internal key', 422: 'Invalid request' };

export function simRoutes(deps: ApiDeps, sim: SimulatedWhatsApp): RouteSpec[] {
  return [
    route({
      method: 'post',
      path: '/api/sim/devices/:id/inbound',
      tag: 'simulated WhatsApp',
      summary: 'Simulated WhatsApp only: someone writes to the device; its socket gets the message now or when it next opens',
      access: 'internal',
      params: deviceIdParams,
      body: simInboundBody,
      responses: { 202: '{waMessageId}', 400: 'Malformed JSON', ...COMMON, 404: 'No such device', 413: 'Body too large', 415: 'Not JSON' },
      async handler({ params, body, caller }) {
        await loadDevice(deps, caller, params.id);
        return { status: 202, body: { waMessageId: await sim.sendToDevice(params.id, body.from, body.text) } };
      },
    }),

    route({
      method: 'post',
      path: '/api/sim/messages/:id/receipt',
      tag: 'simulated WhatsApp',
      summary: "Simulated WhatsApp only: the recipient's phone acknowledges a message the device sent (delivered, read)",
      access: 'internal',
      params: messageIdParams,
      body: simReceiptBody,
      responses: { 202: 'Queued for the device', 400: 'Malformed JSON', ...COMMON, 404: 'No such message', 409: 'WhatsApp has not received the message', 413: 'Body too large', 415: 'Not JSON' },
      async handler({ params, body }) {
        const message = await findMessage(deps, params.id);
        if (!message) throw new HttpError(404, 'message_not_found', `No message ${params.id}`);
        const queued = await sim.receipt(message.deviceId, { waMessageId: waMessageIdFor(message.id), chatJid: toJid(message.to), status: body.status });
        if (!queued) throw new HttpError(409, 'message_not_sent', `WhatsApp has not received message ${params.id} yet`);
        return { status: 202 };
      },
    }),
  ];
}
