import { HttpError } from '../errors.js';
import { route, type RouteSpec } from '../routes.js';
import { loadDevice, type ApiDeps } from './context.js';
import { eventStreamQuery } from './schemas.js';

// The live side of a device's events (the pull side is GET /api/devices/:id/events).

const COMMON = { 401: 'Missing or unknown API key', 403: "Another user's device", 404: 'No such device', 422: 'Invalid query', 429: 'Rate limited' };

export function eventRoutes(deps: ApiDeps): RouteSpec[] {
  return [
    route({
      method: 'get',
      path: '/api/events/stream',
      tag: 'events',
      summary: "A device's events as Server-Sent Events from any server; resumes after Last-Event-ID (or `after`), else starts with the next event",
      access: 'any',
      query: eventStreamQuery,
      headers: { 'Last-Event-ID': 'The sequence of the last event the client has (an EventSource sends it when it reconnects)' },
      responses: { 200: 'text/event-stream: `id: <sequence>`, `event: <type>`, `data: <Event JSON>`', ...COMMON, 503: 'Too many open streams on this server, or it is shutting down' },
      // Each open stream polls Redis; a client reconnecting in a loop should not open hundreds.
      strictLimitPerMinute: 60,
      async handler({ query, caller, req, res }) {
        await loadDevice(deps, caller, query.deviceId);
        const header = req.headers['last-event-id'];
        const resumeAt = typeof header === 'string' && /^\d{1,15}$/.test(header.trim()) ? Number(header.trim()) : undefined;
        const after = resumeAt ?? query.after ?? null;
        if (!(await deps.eventStreams.serve(req, res, query.deviceId, after))) {
          throw new HttpError(503, 'streams_unavailable', 'This server takes no more event streams now; try again, or another server');
        }
        return { status: 200, streamed: true };
      },
    }),
  ];
}
