import { fileURLToPath } from 'node:url';
import express, { type Express, type RequestHandler } from 'express';
import type { RedisClient as Redis } from '../shared/redis.js';
import { z } from 'zod';
import type { ClusterKeys } from '../cluster/keys.js';
import { createLeaseStore } from '../cluster/lease-store.js';
import { createServerDirectory } from '../cluster/server-directory.js';
import { errorHandler, notFound, sendError } from '../http/errors.js';
import { createRateLimiter } from '../http/rate-limit.js';
import type { Logger } from '../shared/logger.js';
import type { Store } from '../store/types.js';
import { basicAuth } from './basic-auth.js';
import {
  ADMIN_BASE,
  CLUSTER_ASSETS_PATH,
  CLUSTER_JSON_PATH,
  CLUSTER_PAGE_PATH,
  QUEUES_PATH,
  renderClusterPage,
} from './cluster-page.js';
import { createClusterStateReader, LEASE_STATUSES, type ClusterFilters } from './cluster-state.js';
import { within } from './deadline.js';
import { createQueueBoard, type QueueBoard } from './queue-board.js';

// The monitoring port: BullBoard at /admin/queues, the cluster page at /admin/cluster (and as JSON
// at /admin/cluster.json), both behind basic auth; /health without. It only reads: Redis for the
// queues, servers and leases, the store for server records and lease events.

export interface MonitoringDeps {
  /** Commands: cluster state, the login limit, health. */
  redis: Redis;
  /** BullBoard's queues; BullMQ adds listeners to it for every queue. */
  bullRedis: Redis;
  keys: ClusterKeys;
  /** The store, connected on first use; rejects while it cannot be reached. */
  store: () => Promise<Store>;
  log: Logger;
  auth: { username: string; password: string; failuresPerMinute: number };
  /** Behind a load balancer: the client IP (for the login limit) comes from X-Forwarded-For. */
  trustProxy: boolean;
  production: boolean;
  /** How often Redis is searched for queues that appeared or vanished. */
  queueRefreshMs?: number;
  /** How often the cluster page fetches its JSON. */
  pageRefreshMs?: number;
  /** Prometheus text for the whole cluster at /metrics (behind the same auth), when given. */
  metrics?: { contentType: string; text(): Promise<string> };
}

export interface MonitoringApp {
  readonly app: Express;
  readonly board: QueueBoard;
  /** Finds the queues now and keeps refreshing them. */
  start(): Promise<void>;
  close(): Promise<void>;
}

const HEALTH_TIMEOUT_MS = 2000;
const DEFAULT_LEASE_LIMIT = 500;

const optionalParam = <T extends z.ZodTypeAny>(schema: T) => z.preprocess((value) => (value === '' ? undefined : value), schema.optional());

export const clusterQuery = z.strictObject({
  server: optionalParam(z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/, 'must be a server id')),
  status: optionalParam(z.enum(LEASE_STATUSES, { error: `must be one of ${LEASE_STATUSES.join(', ')}` })),
  limit: optionalParam(z.coerce.number({ error: 'must be a number' }).int('must be a whole number').min(1, 'must be 1-5000').max(5000, 'must be 1-5000')),
});

const ASSETS_DIR = fileURLToPath(new URL('./assets/', import.meta.url));

// BullBoard's own page needs inline styles and fonts; only the cluster page gets a strict policy.
const CLUSTER_PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

function baseHeaders(production: boolean): RequestHandler {
  return (_req, res, next) => {
    res.set({
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cache-Control': 'no-store',
      ...(production ? { 'Strict-Transport-Security': 'max-age=31536000; includeSubDomains' } : {}),
    });
    next();
  };
}

const strictPolicy: RequestHandler = (_req, res, next) => {
  res.set('Content-Security-Policy', CLUSTER_PAGE_CSP);
  next();
};

async function answers(check: () => Promise<unknown>, what: string): Promise<boolean> {
  try {
    await within(check(), HEALTH_TIMEOUT_MS, what);
    return true;
  } catch {
    return false;
  }
}

export function createMonitoringApp(deps: MonitoringDeps): MonitoringApp {
  const { redis, keys, log } = deps;
  const queueRefreshMs = deps.queueRefreshMs ?? 5000;
  const pageRefreshMs = deps.pageRefreshMs ?? 3000;
  const board = createQueueBoard({
    redis: deps.bullRedis,
    bullPrefix: keys.bullPrefix,
    basePath: QUEUES_PATH,
    links: [{ text: 'Cluster: servers and leases', url: CLUSTER_PAGE_PATH }],
    log: log.child({ module: 'queue-board' }),
  });
  const cluster = createClusterStateReader({
    leases: createLeaseStore({ redis, keys }),
    servers: createServerDirectory({ redis, keys }),
    store: deps.store,
    log: log.child({ module: 'cluster-state' }),
  });

  const app = express();
  app.disable('x-powered-by');
  if (deps.trustProxy) app.set('trust proxy', true);
  app.use(baseHeaders(deps.production));

  app.get('/health', async (_req, res) => {
    const [redisOk, storeOk] = await Promise.all([
      answers(() => redis.ping(), 'redis'),
      answers(async () => (await deps.store()).ping(), 'the store'),
    ]);
    // Without Redis the monitor shows nothing; without the store it still shows queues, servers
    // and leases, only no events.
    res.status(redisOk ? 200 : 503).json({
      status: redisOk && storeOk ? 'ok' : 'degraded',
      timestamp: new Date().toISOString(),
      redis: redisOk ? 'ok' : 'unreachable',
      store: storeOk ? 'ok' : 'unavailable',
      queues: board.names.length,
    });
  });
  app.get('/', (_req, res) => res.redirect(302, QUEUES_PATH));

  const auth = basicAuth({
    ...deps.auth,
    limiter: createRateLimiter({ redis, keys }),
    failuresPerMinute: deps.auth.failuresPerMinute,
    log: log.child({ module: 'auth' }),
  });
  app.use(ADMIN_BASE, auth);
  app.get(ADMIN_BASE, (_req, res) => res.redirect(302, QUEUES_PATH));

  const parseFilters = (query: unknown): ClusterFilters | z.ZodError => {
    const parsed = clusterQuery.safeParse(query);
    if (!parsed.success) return parsed.error;
    return { server: parsed.data.server, status: parsed.data.status, limit: parsed.data.limit ?? DEFAULT_LEASE_LIMIT };
  };
  const invalidQuery = (res: express.Response, error: z.ZodError) =>
    sendError(
      res,
      422,
      'invalid_query',
      'The query parameters are not valid',
      error.issues.map((issue) => ({ path: issue.path.join('.') || '(query)', message: issue.message })),
    );

  app.use(CLUSTER_ASSETS_PATH, strictPolicy, express.static(ASSETS_DIR, { index: false, maxAge: 0 }));
  app.get(CLUSTER_PAGE_PATH, strictPolicy, async (req, res) => {
    const filters = parseFilters(req.query);
    if (filters instanceof z.ZodError) return invalidQuery(res, filters);
    res.type('html').send(renderClusterPage(await cluster.read(filters), { refreshMs: pageRefreshMs }));
  });
  app.get(CLUSTER_JSON_PATH, async (req, res) => {
    const filters = parseFilters(req.query);
    if (filters instanceof z.ZodError) return invalidQuery(res, filters);
    res.json(await cluster.read(filters));
  });
  app.use(QUEUES_PATH, board.router);

  if (deps.metrics) {
    const metrics = deps.metrics;
    app.get('/metrics', auth, async (_req, res) => {
      res.type(metrics.contentType).send(await metrics.text());
    });
  }

  app.use(notFound);
  app.use(errorHandler(log));

  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const refreshQueues = () =>
    board.refresh().catch((err) => log.warn({ err }, 'queue discovery failed; BullBoard keeps the queues it had'));

  return {
    app,
    board,
    async start() {
      await refreshQueues();
      if (closed) return;
      timer = setInterval(() => void refreshQueues(), queueRefreshMs);
      timer.unref();
    },
    async close() {
      closed = true;
      clearInterval(timer);
      await board.close();
    },
  };
}
