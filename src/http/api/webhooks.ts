import { WebhooksUnavailableError, type WebhookRegistry } from '../../webhooks/index.js';
import type { Caller } from '../auth.js';
import { HttpError } from '../errors.js';
import { route, type RouteSpec } from '../routes.js';
import { loadDevice, type ApiDeps } from './context.js';
import { deviceIdParams, putWebhookBody } from './schemas.js';

// A device's own webhook: where its events are POSTed, signed with a secret shown once.
// Delivery itself is src/webhooks/; these routes register, remove and report dead letters.

const COMMON = { 401: 'No or unknown API key', 403: 'The key may not act on this device', 404: 'No such device', 422: 'Invalid id' };
const UNAVAILABLE = 'Webhooks are not available: no WEBHOOK_SECRET_KEY or INTERNAL_API_KEY to encrypt secrets with';

/** The registry, once the device is known to exist and be the caller's. */
async function registryFor(deps: ApiDeps, caller: Caller, deviceId: string): Promise<WebhookRegistry> {
  if (!deps.webhooks) throw new HttpError(503, 'webhooks_unavailable', 'Webhooks are not set up on this server');
  await loadDevice(deps, caller, deviceId);
  return deps.webhooks;
}

export function webhookRoutes(deps: ApiDeps): RouteSpec[] {
  return [
    route({
      method: 'put',
      path: '/api/devices/:id/webhook',
      tag: 'webhooks',
      summary: "Register or replace the device's webhook; answers a new signing secret, shown only this once (calling again rotates it)",
      access: 'any',
      params: deviceIdParams,
      body: putWebhookBody,
      responses: {
        200: '{url, events (null: every type), secret}',
        ...COMMON,
        400: 'Malformed JSON',
        415: 'Not JSON',
        422: 'Invalid id or body: not http(s), an address the server may not reach, an unknown event type',
        503: UNAVAILABLE,
      },
      async handler({ params, body, caller }) {
        const registry = await registryFor(deps, caller, params.id);
        const problem = await registry.screenUrl(body.url);
        if (problem) throw new HttpError(422, 'validation_failed', 'The request body is not valid', [{ path: 'body.url', message: problem }]);
        try {
          const put = await registry.put(params.id, { url: body.url, events: body.events ?? null });
          if (!put) throw new HttpError(404, 'device_not_found', `No device ${params.id}`);
          return { status: 200, body: put, headers: { 'cache-control': 'no-store' } };
        } catch (err) {
          if (err instanceof WebhooksUnavailableError) throw new HttpError(503, err.code, err.message);
          throw err;
        }
      },
    }),

    route({
      method: 'delete',
      path: '/api/devices/:id/webhook',
      tag: 'webhooks',
      summary: "Remove the device's webhook (and the webhookUrl it was created with); its events are no longer POSTed",
      access: 'any',
      params: deviceIdParams,
      responses: { 204: 'Removed (or there was none)', ...COMMON, 503: 'Webhooks are not set up on this server' },
      async handler({ params, caller }) {
        await (await registryFor(deps, caller, params.id)).remove(params.id);
        return { status: 204 };
      },
    }),

    route({
      method: 'get',
      path: '/api/devices/:id/webhook/failures',
      tag: 'webhooks',
      summary: "Deliveries to the device's webhook given up on after WEBHOOK_RETRY_HOURS, newest first (kept a week, 1000 at most)",
      access: 'any',
      params: deviceIdParams,
      responses: { 200: '{failures: [{eventId, type, attempts, lastError, lastAttemptAt}]}', ...COMMON, 503: 'Webhooks are not set up on this server' },
      async handler({ params, caller }) {
        return { status: 200, body: { failures: await (await registryFor(deps, caller, params.id)).failures(params.id) } };
      },
    }),
  ];
}
