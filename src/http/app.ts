import express, { type Express } from 'express';
import type { Logger } from '../shared/logger.js';
import { errorHandler, notFound } from './errors.js';

export interface HealthReport {
  status: 'ok' | 'degraded' | 'draining';
  activeConnections: number;
  timestamp: string;
  serverId: string;
  leases: number;
  draining: boolean;
}

export interface HttpDeps {
  log: Logger;
  health(): HealthReport;
  /** True once the server can take devices (registered, store and Redis reachable). */
  ready(): boolean;
}

export const BODY_LIMIT = '256kb';

export function createHttpApp({ log, health, ready }: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: BODY_LIMIT }));

  // A load balancer takes a draining server out of rotation on the 503.
  app.get('/health', (_req, res) => {
    const report = health();
    res.status(report.status === 'draining' ? 503 : 200).json(report);
  });
  app.get('/ready', (_req, res) => {
    if (ready()) res.json({ ready: true });
    else res.status(503).json({ ready: false });
  });

  app.use(notFound);
  app.use(errorHandler(log));
  return app;
}
