import { readDeviceEvents } from '../event-stream.js';
import { HttpError } from '../errors.js';
import { route, type RouteSpec } from '../routes.js';
import { deviceEventsQuery, deviceIdParams, createDeviceBody, listDevicesQuery } from './schemas.js';
import { deviceView, deviceViews, loadDevice, tellOwner, type ApiDeps } from './context.js';

const COMMON = { 401: 'No or unknown API key', 403: 'The key may not act on this device', 404: 'No such device', 422: 'Invalid id' };

export function deviceRoutes(deps: ApiDeps): RouteSpec[] {
  return [
    route({
      method: 'post',
      path: '/api/devices',
      tag: 'devices',
      summary: 'Create a device (desired state: stopped until connected)',
      access: 'any',
      body: createDeviceBody,
      responses: { 201: 'The device', 400: 'Malformed JSON', 401: COMMON[401], 403: 'A user key creating for another user', 413: 'Body too large', 415: 'Not JSON', 422: 'Invalid body' },
      async handler({ body, caller }) {
        let userId = body.userId;
        if (caller.kind === 'user') {
          if (userId && userId !== caller.userId) throw new HttpError(403, 'forbidden', 'A user API key creates devices for its own user only');
          userId = caller.userId;
        }
        if (!userId) throw new HttpError(422, 'validation_failed', 'The request body is not valid', [{ path: 'body.userId', message: 'is required with the internal key' }]);
        const device = await deps.store.createDevice({
          userId,
          deviceName: body.name,
          connectionMethod: body.connectionMethod,
          phoneForPairing: body.phoneForPairing ?? null,
          webhookUrl: body.webhookUrl ?? null,
        });
        return { status: 201, body: await deviceView(deps, device) };
      },
    }),

    route({
      method: 'get',
      path: '/api/devices',
      tag: 'devices',
      summary: "List devices: a user key's own, or (internal key) one user's or everyone's",
      access: 'any',
      query: listDevicesQuery,
      responses: { 200: '{devices: Device[]}', 401: COMMON[401], 403: 'A user key asking for another user', 422: 'Invalid query' },
      async handler({ query, caller }) {
        let userId = query.userId ?? null;
        if (caller.kind === 'user') {
          if (userId && userId !== caller.userId) throw new HttpError(403, 'forbidden', 'A user API key lists its own devices only');
          userId = caller.userId;
        }
        const devices = await deps.store.listDevices(userId, query.limit);
        return { status: 200, body: { devices: await deviceViews(deps, devices) } };
      },
    }),

    route({
      method: 'get',
      path: '/api/devices/:id',
      tag: 'devices',
      summary: 'A device: status, owner server, lease token and time left',
      access: 'any',
      params: deviceIdParams,
      responses: { 200: 'The device', ...COMMON },
      async handler({ params, caller }) {
        return { status: 200, body: await deviceView(deps, await loadDevice(deps, caller, params.id)) };
      },
    }),

    route({
      method: 'post',
      path: '/api/devices/:id/connect',
      tag: 'devices',
      summary: 'Desired state running: the device is placed on a server now',
      access: 'any',
      params: deviceIdParams,
      responses: { 202: 'The device, on its way', ...COMMON },
      async handler({ params, caller }) {
        await loadDevice(deps, caller, params.id);
        const device = (await deps.store.setDesiredState(params.id, 'running'))!;
        await deps.leases.setWanted([params.id], true);
        await deps.place(params.id);
        return { status: 202, body: await deviceView(deps, device) };
      },
    }),

    route({
      method: 'post',
      path: '/api/devices/:id/disconnect',
      tag: 'devices',
      summary: 'Desired state stopped: the socket closes; the session is kept',
      access: 'any',
      params: deviceIdParams,
      responses: { 202: 'The device, stopping', ...COMMON },
      async handler({ params, caller }) {
        await loadDevice(deps, caller, params.id);
        const device = await stopWanting(deps, params.id);
        await tellOwner(deps, params.id, 'stop');
        return { status: 202, body: await deviceView(deps, device) };
      },
    }),

    route({
      method: 'post',
      path: '/api/devices/:id/logout',
      tag: 'devices',
      summary: 'Log the device out: stopped, and its session cleared (a new QR is needed)',
      access: 'any',
      params: deviceIdParams,
      responses: { 202: 'The device, logging out', ...COMMON },
      async handler({ params, caller }) {
        await loadDevice(deps, caller, params.id);
        const device = await stopWanting(deps, params.id);
        // The owner clears the session under its token; with no owner, clear it here, fenced by
        // the last token handed out, so no earlier owner can write it back.
        if (!(await tellOwner(deps, params.id, 'logout'))) {
          const fence = await deps.leases.fenceOf(params.id);
          await deps.sessions.clearSession(params.id, Math.max(fence, device.leaseEpoch));
        }
        return { status: 202, body: await deviceView(deps, device) };
      },
    }),

    route({
      method: 'delete',
      path: '/api/devices/:id',
      tag: 'devices',
      summary: 'Delete a device (stopped first)',
      access: 'any',
      params: deviceIdParams,
      responses: { 204: 'Deleted', ...COMMON },
      async handler({ params, caller }) {
        await loadDevice(deps, caller, params.id);
        await stopWanting(deps, params.id);
        await tellOwner(deps, params.id, 'stop');
        await deps.store.deleteDevice(params.id);
        await deps.sessions.forget(params.id);
        await deps.events.forget(params.id);
        await deps.webhooks?.forget(params.id);
        await deps.messages.setRateOverride(params.id, null);
        return { status: 204 };
      },
    }),

    route({
      method: 'get',
      path: '/api/devices/:id/events',
      tag: 'devices',
      summary: "The device's inbound events (messages received, acks) after a sequence, oldest first, from any server",
      access: 'any',
      params: deviceIdParams,
      query: deviceEventsQuery,
      responses: { 200: '{events: [{id, type, deviceId, sequence, createdAt, data}], last}', ...COMMON },
      async handler({ params, query, caller }) {
        await loadDevice(deps, caller, params.id);
        const events = await readDeviceEvents(deps, params.id, query.after, query.limit);
        // `last` is where to resume: the last sequence returned, or `after` when nothing newer exists.
        return { status: 200, body: { events, last: events.at(-1)?.sequence ?? query.after } };
      },
    }),

    ...(['qr', 'pairing'] as const).map((kind) =>
      route({
        method: 'get',
        path: kind === 'qr' ? '/api/devices/:id/qr' : '/api/devices/:id/pairing-code',
        tag: 'devices',
        summary: kind === 'qr' ? 'The latest QR code, from whichever server runs the device' : 'The latest pairing code',
        access: 'any',
        params: deviceIdParams,
        responses: { 200: kind === 'qr' ? '{qr, expiresAt}' : '{pairingCode, expiresAt}', ...COMMON, 404: 'No such device, or no code yet (details: status)' },
        async handler({ params, caller }) {
          const device = await deviceView(deps, await loadDevice(deps, caller, params.id));
          const code = await deps.sessions.readLinkCode(params.id, kind);
          if (!code) {
            const what = kind === 'qr' ? 'QR code' : 'pairing code';
            throw new HttpError(404, kind === 'qr' ? 'qr_not_available' : 'pairing_code_not_available', `No ${what} is available for this device now`, {
              status: device.status,
              desiredState: device.desiredState,
            });
          }
          return { status: 200, body: kind === 'qr' ? { qr: code.code, expiresAt: code.expiresAt } : { pairingCode: code.code, expiresAt: code.expiresAt } };
        },
      }),
    ),
  ];
}

/** Desired state stopped, in the store and in Redis's wanted set, and no placement on its way. */
async function stopWanting(deps: ApiDeps, deviceId: string) {
  const device = (await deps.store.setDesiredState(deviceId, 'stopped'))!;
  await deps.leases.setWanted([deviceId], false);
  await deps.leases.cancelPlacement(deviceId);
  return device;
}

