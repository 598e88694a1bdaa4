// Composition root: the one place that reads configuration and creates objects. Every module
// below receives what it needs from here.
import { createServer, type Server } from 'node:http';
import { describeConfig, loadConfigFromProcess, type Config } from './config/index.js';
import { createHttpApp, type HealthReport } from './http/app.js';
import { ConfigError, WafleetError } from './shared/errors.js';
import { createLogger, type Logger } from './shared/logger.js';
import { connectRedis, type Redis } from './shared/redis.js';
import { createStore } from './store/index.js';
import type { Store } from './store/types.js';

interface RunningServer {
  config: Config;
  /** Resolves once shutdown has finished; runs once however often it is called. */
  shutdown(reason: string): Promise<void>;
}

async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const { identity } = config.server;
  log.info({ config: describeConfig(config) }, `Server identified: ${identity.id} (from ${identity.source})`);

  const cleanups: Array<{ name: string; run: () => Promise<unknown> }> = [];
  let draining = false;
  let registered = false;
  let redis: Redis | undefined;
  let started: { store: Store; httpServer: Server };

  const health = (): HealthReport => ({
    status: draining ? 'draining' : redis?.status === 'ready' ? 'ok' : 'degraded',
    // Devices and leases arrive with the lease core and the device runtime.
    activeConnections: 0,
    timestamp: new Date().toISOString(),
    serverId: identity.id,
    leases: 0,
    draining,
  });

  try {
    redis = await connectRedis({ url: config.redis.url, log, connectionName: `wafleet:${identity.id}` });
    const connectedRedis = redis;
    cleanups.push({ name: 'redis', run: () => connectedRedis.quit() });

    const store = await createStore(config.store, { log: log.child({ module: 'store' }) });
    cleanups.push({ name: 'store', run: () => store.close() });

    const report = await store.migrate();
    if (report.applied.length > 0) log.info({ applied: report.applied }, 'migrations applied');

    await store.registerServer({
      id: identity.id,
      serverName: config.server.name,
      serverUrl: config.server.url,
      serverType: config.server.type,
      region: config.server.region,
      maxCapacity: config.server.maxCapacity,
      priority: config.server.priority,
      description: config.server.description,
      metadata: { pid: process.pid, identitySource: identity.source },
    });
    await store.appendServerLog({
      serverId: identity.id,
      level: 'info',
      event: 'server_started',
      message: `Server ${identity.id} started`,
      details: { pid: process.pid, port: config.server.port },
    });
    registered = true;

    const app = createHttpApp({ log: log.child({ module: 'http' }), health, ready: () => registered && !draining });
    const httpServer = await new Promise<Server>((resolve, reject) => {
      const server = createServer(app);
      server.once('error', reject);
      server.listen(config.server.port, () => resolve(server));
    });
    log.info({ port: config.server.port }, 'http listening');
    started = { store, httpServer };
  } catch (err) {
    await runCleanups(cleanups, log);
    throw err;
  }

  const { store: openStore, httpServer: listening } = started;
  let shuttingDown: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    shuttingDown ??= (async () => {
      draining = true;
      log.info({ reason }, 'shutting down');
      await new Promise<void>((resolve) => {
        listening.close(() => resolve());
        listening.closeIdleConnections();
      });
      try {
        await openStore.markServerInactive(identity.id);
        await openStore.appendServerLog({
          serverId: identity.id,
          level: 'info',
          event: 'server_stopped',
          message: `Server ${identity.id} stopped (${reason})`,
        });
      } catch (err) {
        log.error({ err }, 'could not mark the server inactive in the store');
      }
      await runCleanups(cleanups, log);
      log.info('shutdown complete');
    })();
    return shuttingDown;
  };
  return { config, shutdown };
}

/** Cleanups run newest first, each guarded, so one failure never skips the rest. */
async function runCleanups(cleanups: Array<{ name: string; run: () => Promise<unknown> }>, log: Logger): Promise<void> {
  for (const cleanup of [...cleanups].reverse()) {
    try {
      await cleanup.run();
    } catch (err) {
      log.warn({ err, cleanup: cleanup.name }, 'cleanup failed');
    }
  }
  cleanups.length = 0;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfigFromProcess();
  } catch (err) {
    if (err instanceof ConfigError) {
      // No logger yet: LOG_LEVEL itself may be what is wrong.
      process.stderr.write(`wafleet: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const log = createLogger({ level: config.logLevel, serverId: config.server.identity.id });

  let server: RunningServer;
  try {
    server = await startServer(config, log);
  } catch (err) {
    if (err instanceof WafleetError) log.fatal({ code: err.code }, err.message);
    else log.fatal({ err }, 'start-up failed');
    log.flush();
    process.exitCode = 1;
    return;
  }

  const onSignal = (signal: NodeJS.Signals) => {
    // The hard stop keeps a wedged cleanup from outliving pm2's kill timeout silently.
    const hardStop = setTimeout(() => {
      log.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown deadline passed; exiting');
      log.flush();
      process.exit(1);
    }, config.shutdownTimeoutMs);
    hardStop.unref();
    void server.shutdown(signal).then(() => {
      log.flush();
      process.exit(0);
    });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled promise rejection'));
}

// This module is the server's entry point (npm run server, pm2 via scripts/launch.mjs); nothing
// imports it.
void main();
