import express, { Router, type Express } from 'express';
import type { Logger } from '../shared/logger.js';
import { adminRoutes } from './api/admin.js';
import type { ApiDeps } from './api/context.js';
import { deviceRoutes } from './api/devices.js';
import { eventRoutes } from './api/events.js';
import { webhookRoutes } from './api/webhooks.js';
import { messageRoutes } from './api/messages.js';
import { simRoutes } from './api/sim.js';
import { errorHandler, notFound } from './errors.js';
import type { RateLimiter } from './rate-limit.js';
import { mountRoutes, openApiDocument, route, type RouteSpec } from './routes.js';
import { cors, securityHeaders } from './security.js';

export interface HealthReport {
  status: 'ok' | 'degraded' | 'draining';
  activeConnections: number;
  timestamp: string;
  serverId: string;
  leases: number;
  draining: boolean;
}

export interface HttpOptions {
  production: boolean;
  corsOrigins: readonly string[];
  /** Behind a load balancer: take the client IP from X-Forwarded-For (for per-IP limits). */
  trustProxy: boolean;
  limits: { perKeyPerMinute: number; perIpPerMinute: number; healthCheckPerMinute: number };
}

export interface HttpDeps {
  log: Logger;
  health(): HealthReport;
  /** True once the server can take devices (registered, store and Redis reachable). */
  ready(): boolean;
  api: ApiDeps;
  rateLimiter: RateLimiter;
  options: HttpOptions;
  /** Prometheus text for `GET /metrics` (no key, like /health); absent: no such route. */
  metrics?: { contentType: string; text(): Promise<string> };
}

export const BODY_LIMIT = '256kb';

/** Every route of the API, declared once: mounted below and described by /openapi.json. */
export function apiRoutes(deps: Pick<HttpDeps, 'api' | 'options' | 'health' | 'ready'>): RouteSpec[] {
  return [
    route({
      method: 'get',
      path: '/health',
      tag: 'health',
      summary: 'Liveness and load of this server; 503 while draining',
      access: 'public',
      responses: { 200: '{status, activeConnections, timestamp, serverId, leases, draining}', 503: 'Draining' },
      async handler() {
        const report = deps.health();
        return { status: report.status === 'draining' ? 503 : 200, body: report };
      },
    }),
    route({
      method: 'get',
      path: '/ready',
      tag: 'health',
      summary: 'Whether this server can take devices',
      access: 'public',
      responses: { 200: '{ready: true}', 503: '{ready: false}' },
      async handler() {
        const ready = deps.ready();
        return { status: ready ? 200 : 503, body: { ready } };
      },
    }),
    ...deviceRoutes(deps.api),
    ...eventRoutes(deps.api),
    ...webhookRoutes(deps.api),
    ...messageRoutes(deps.api),
    ...adminRoutes(deps.api, { healthCheckPerMinute: deps.options.limits.healthCheckPerMinute }),
    ...(deps.api.sim ? simRoutes(deps.api, deps.api.sim) : []),
  ];
}

export function createHttpApp(deps: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  if (deps.options.trustProxy) app.set('trust proxy', true);
  app.use(securityHeaders({ production: deps.options.production }));
  app.use(cors(deps.options.corsOrigins));
  app.use(express.json({ limit: BODY_LIMIT }));

  const routes = apiRoutes(deps);
  const document = openApiDocument(routes, { title: 'wafleet', version: '1' });
  const router = Router();
  router.get('/openapi.json', (_req, res) => {
    res.json(document);
  });
  const { metrics } = deps;
  if (metrics) {
    // Outside the API's declarations: a scraper sends no key and reads text, not JSON.
    router.get('/metrics', async (_req, res, next) => {
      try {
        const text = await metrics.text();
        res.set('Content-Type', metrics.contentType).set('Cache-Control', 'no-store').send(text);
      } catch (err) {
        next(err);
      }
    });
  }
  mountRoutes(router, routes, { authenticator: deps.api.authenticator, rateLimiter: deps.rateLimiter, limits: deps.options.limits, log: deps.log });
  app.use(router);

  app.use(notFound);
  app.use(errorHandler(deps.log));
  return app;
}

