import type { z } from 'zod';
import type { ServerConfiguration } from '../../store/types.js';
import { generateApiKey, hashApiKey } from '../auth.js';
import { HttpError } from '../errors.js';
import { route, type RouteSpec } from '../routes.js';
import { serverViews, type ApiDeps } from './context.js';
import { apiKeyIdParams, createApiKeyBody, patchServerBody, putServerBody, serverIdParams, userIdParams } from './schemas.js';

// Admin endpoints: the internal API key only (a user key gets 403).

const ADMIN = { 401: 'No or unknown API key', 403: 'Not the internal key' };
const RECENT_EVENTS = 50;

/** The API's field names (the contract, GET /openapi.json) to the store's. */
function configurationFrom(body: Partial<z.infer<typeof putServerBody>>): ServerConfiguration {
  return {
    serverName: body.name,
    serverUrl: body.url,
    serverType: body.type,
    region: body.region,
    maxCapacity: body.maxCapacity,
    priority: body.priority,
  };
}

export function adminRoutes(deps: ApiDeps, options: { healthCheckPerMinute: number }): RouteSpec[] {
  const getServer = async (id: string) => {
    const server = await deps.store.getServer(id);
    if (!server) throw new HttpError(404, 'server_not_found', `No server ${id}`);
    return server;
  };
  const viewOf = async (id: string) => (await serverViews(deps, [await getServer(id)]))[0]!;

  return [
    route({
      method: 'get',
      path: '/api/servers',
      tag: 'servers',
      summary: 'Servers with live state: load, capacity, health, draining, lease count',
      access: 'internal',
      responses: { 200: '{servers: Server[]}', ...ADMIN },
      async handler() {
        return { status: 200, body: { servers: await serverViews(deps, await deps.store.listServers()) } };
      },
    }),

    route({
      method: 'put',
      path: '/api/servers/:id',
      tag: 'servers',
      summary: "Register or update a server's configuration",
      access: 'internal',
      params: serverIdParams,
      body: putServerBody,
      responses: { 200: 'The server', ...ADMIN, 400: 'Malformed JSON', 415: 'Not JSON', 422: 'Invalid id or body' },
      async handler({ params, body }) {
        await deps.store.configureServer(params.id, configurationFrom(body));
        return { status: 200, body: await viewOf(params.id) };
      },
    }),

    route({
      method: 'patch',
      path: '/api/servers/:id',
      tag: 'servers',
      summary: "Change some of a server's configuration",
      access: 'internal',
      params: serverIdParams,
      body: patchServerBody,
      responses: { 200: 'The server', ...ADMIN, 404: 'No such server', 422: 'Invalid id or body' },
      async handler({ params, body }) {
        await getServer(params.id);
        await deps.store.configureServer(params.id, configurationFrom(body));
        return { status: 200, body: await viewOf(params.id) };
      },
    }),

    route({
      method: 'post',
      path: '/api/servers/:id/drain',
      tag: 'servers',
      summary: 'Drain a live server: it hands every device to the others and takes no more',
      access: 'internal',
      params: serverIdParams,
      responses: { 202: 'Drain requested', ...ADMIN, 404: 'No such server', 409: 'The server is not live' },
      async handler({ params }) {
        await getServer(params.id);
        const [state] = await deps.servers.read([params.id]);
        if (!state?.advert) {
          throw new HttpError(409, 'server_not_live', `Server ${params.id} is not running, so it holds nothing to drain`);
        }
        await deps.inbox.send(params.id, { type: 'drain' });
        return { status: 202, body: { id: params.id, draining: true } };
      },
    }),

    route({
      method: 'post',
      path: '/api/servers/:id/health-check',
      tag: 'servers',
      summary: "Ask the server's /health now; the result and response time are recorded",
      access: 'internal',
      params: serverIdParams,
      strictLimitPerMinute: options.healthCheckPerMinute,
      responses: { 200: '{healthy, responseTimeMs, checkedAt}', ...ADMIN, 404: 'No such server', 429: 'Too many health checks' },
      async handler({ params }) {
        const server = await getServer(params.id);
        const result = await deps.probeHealth(server.serverUrl);
        const recorded = await deps.store.recordHealthCheck(params.id, result.healthy, result.responseTimeMs);
        return {
          status: 200,
          body: { healthy: result.healthy, responseTimeMs: result.responseTimeMs, checkedAt: (recorded?.lastHealthCheck ?? new Date()).toISOString() },
        };
      },
    }),

    route({
      method: 'delete',
      path: '/api/servers/:id',
      tag: 'servers',
      summary: 'Remove a server from the record; refused while it holds leases',
      access: 'internal',
      params: serverIdParams,
      responses: { 204: 'Removed', ...ADMIN, 404: 'No such server', 409: 'It holds leases: drain it first' },
      async handler({ params }) {
        await getServer(params.id);
        const [state] = await deps.servers.read([params.id]);
        const leases = state?.leases ?? 0;
        if (leases > 0) {
          throw new HttpError(409, 'server_holds_leases', `Server ${params.id} holds ${leases} leases; drain it first`, { leases });
        }
        await deps.store.deleteServer(params.id);
        return { status: 204 };
      },
    }),

    route({
      method: 'get',
      path: '/api/cluster',
      tag: 'servers',
      summary: 'The cluster at a glance: servers, devices by status, recent lease events',
      access: 'internal',
      responses: { 200: '{servers, devices: {total, byStatus}, recentEvents}', ...ADMIN },
      async handler() {
        const [servers, byStatus, events] = await Promise.all([
          deps.store.listServers(),
          deps.store.deviceStatusCounts(),
          deps.store.recentLeaseEvents(RECENT_EVENTS),
        ]);
        const total = Object.values(byStatus).reduce((sum, n) => sum + (n ?? 0), 0);
        return {
          status: 200,
          body: {
            servers: await serverViews(deps, servers),
            devices: { total, byStatus },
            recentEvents: events.map((e) => ({ ...e, createdAt: e.createdAt.toISOString() })),
          },
        };
      },
    }),

    route({
      method: 'post',
      path: '/api/users/:userId/api-keys',
      tag: 'api-keys',
      summary: 'Create an API key for a user; the key is shown once and stored only as a hash',
      access: 'internal',
      params: userIdParams,
      body: createApiKeyBody,
      responses: { 201: '{id, key, userId, name, createdAt}', ...ADMIN, 422: 'Invalid user id or body' },
      async handler({ params, body }) {
        const key = generateApiKey();
        const created = await deps.store.createApiKey(params.userId, body.name ?? null, hashApiKey(key));
        return { status: 201, body: { id: created.id, key, userId: created.userId, name: created.name, createdAt: created.createdAt.toISOString() } };
      },
    }),

    route({
      method: 'delete',
      path: '/api/api-keys/:id',
      tag: 'api-keys',
      summary: 'Revoke an API key',
      access: 'internal',
      params: apiKeyIdParams,
      responses: { 204: 'Revoked', ...ADMIN, 404: 'No such live key', 422: 'Invalid id' },
      async handler({ params }) {
        if (!(await deps.store.revokeApiKey(params.id))) throw new HttpError(404, 'api_key_not_found', `No live API key ${params.id}`);
        deps.authenticator.forget();
        return { status: 204 };
      },
    }),
  ];
}
