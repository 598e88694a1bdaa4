// Composition root of the monitor process: BullBoard and the cluster page on MONITORING_PORT
// (`npm run monitor`; pm2's wafleet-monitor through scripts/launch.mjs). It reads the same
// environment as the servers, holds no lease and writes nothing but its login-failure counters.
import { createClusterKeys } from './cluster/keys.js';
import { adminPasswordWeaknesses, describeConfig, loadConfigFromProcess, type Config } from './config/index.js';
import { createMetricsAggregate } from './metrics/aggregate.js';
import { createMonitoringApp } from './monitoring/app.js';
import { CLUSTER_PAGE_PATH, QUEUES_PATH } from './monitoring/cluster-page.js';
import { createStoreConnection } from './monitoring/store-connection.js';
import { runCleanups, runEntryPoint, type Cleanup } from './shared/lifecycle.js';
import { listenHttp } from './shared/listen.js';
import { createLogger, type Logger } from './shared/logger.js';
import { connectRedis, duplicateRedis } from './shared/redis.js';
import { createStore } from './store/index.js';

/** How long after a failed attempt the store is tried again. */
const STORE_RETRY_MS = 5000;

async function startMonitor(config: Config, log: Logger): Promise<{ shutdown(reason: string): Promise<void> }> {
  const { monitoring } = config;
  const { nodeEnv, monitoringPort, redis: redisUrl, keyPrefix, store: storeDescription } = describeConfig(config);
  log.info(
    { config: { nodeEnv, monitoringPort, redis: redisUrl, keyPrefix, store: storeDescription, adminUsername: monitoring.adminUsername, adminPassword: 'set' } },
    'monitor starting',
  );
  const weaknesses = adminPasswordWeaknesses(monitoring.adminUsername, monitoring.adminPassword!);
  if (weaknesses.length > 0) {
    log.warn({ weaknesses }, 'ADMIN_PASSWORD is weak; NODE_ENV=production would refuse it');
  }

  const cleanups: Cleanup[] = [];
  try {
    const redis = await connectRedis({ target: config.redis.target, log, connectionName: 'wafleet:monitor', extra: { commandTimeout: 10_000 } });
    cleanups.push({ name: 'redis', run: () => redis.quit() });
    const bullRedis = duplicateRedis(redis, { connectionName: 'wafleet:monitor:bullboard', commandTimeout: undefined });
    cleanups.push({ name: 'bullboard redis', run: async () => bullRedis.disconnect() });

    // The monitor only reads the store: it never hosts the embedded one, and never migrates.
    const storeOptions = config.store.kind === 'pglite' ? { ...config.store, hostMode: 'client' as const, poolMax: 2 } : config.store;
    const storeLog = log.child({ module: 'store' });
    const store = createStoreConnection(() => createStore(storeOptions, { log: storeLog }), { retryMs: STORE_RETRY_MS });
    cleanups.push({ name: 'store', run: () => store.close() });

    const keys = createClusterKeys(config.redis.keyPrefix);
    const monitor = createMonitoringApp({
      redis,
      bullRedis,
      keys,
      store: () => store.get(),
      log,
      auth: { username: monitoring.adminUsername, password: monitoring.adminPassword!, failuresPerMinute: monitoring.loginFailuresPerMinute },
      trustProxy: config.http.trustProxy,
      production: config.nodeEnv === 'production',
      metrics: createMetricsAggregate({ redis, keys }),
    });
    cleanups.push({ name: 'board', run: () => monitor.close() });
    await monitor.start();
    // Connect to the store in the background, so the first page view finds it ready.
    void store.get().catch((err) => log.warn({ err }, 'store not reachable yet; retrying on use'));

    const http = await listenHttp(monitor.app, monitoring.port);
    cleanups.push({ name: 'http', run: () => http.close({ abortActive: true }) });
    log.info(
      { port: monitoring.port, queues: monitor.board.names.length, bullBoard: QUEUES_PATH, clusterPage: CLUSTER_PAGE_PATH },
      `monitoring on port ${monitoring.port}: BullBoard at ${QUEUES_PATH}, cluster page at ${CLUSTER_PAGE_PATH}`,
    );
  } catch (err) {
    await runCleanups(cleanups, log);
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    shutdown(reason) {
      stopping ??= (async () => {
        log.info({ reason }, 'monitor stopping');
        await runCleanups(cleanups, log);
        log.info('monitor stopped');
      })();
      return stopping;
    },
  };
}

void runEntryPoint({
  name: 'wafleet monitor',
  loadConfig: () => loadConfigFromProcess('.env', 'monitor'),
  logger: (config) => createLogger({ level: config.logLevel }).child({ process: 'monitor' }),
  shutdownTimeoutMs: (config) => config.shutdownTimeoutMs,
  start: startMonitor,
  explainStartFailure: (err, config) =>
    (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ? `MONITORING_PORT ${config.monitoring.port} is already in use` : undefined,
});
