// Composition root: the one place that reads configuration and creates objects. Every module
// below receives what it needs from here.
import { createServer, type Server } from 'node:http';
import { createCoordinator } from './cluster/coordinator.js';
import { listenForExpiredKeys } from './cluster/expiry-events.js';
import { createHeartbeat } from './cluster/heartbeat.js';
import { createClusterKeys } from './cluster/keys.js';
import { createLeaseGuard } from './cluster/lease-guard.js';
import { createLeaseStore, holderId } from './cluster/lease-store.js';
import { createRebalancer } from './cluster/rebalance.js';
import { createReconciler } from './cluster/reconcile.js';
import { createWriteBehindRecorder } from './cluster/recorder.js';
import { createRedisResetRecovery, ensureMarker, type RedisResetDeps } from './cluster/redis-reset.js';
import { assertSoleServer, createBootId } from './cluster/server-exclusivity.js';
import { createSingletonRunner } from './cluster/singleton.js';
import { describeConfig, loadConfigFromProcess, type Config } from './config/index.js';
import { createSnapshotWriter } from './devices/auth-state/auth-state.js';
import { createDevices } from './devices/index.js';
import { createHttpApp, type HealthReport } from './http/app.js';
import { createMetrics } from './metrics/index.js';
import { startMetricsPublisher } from './metrics/publish.js';
import { withOutboundWork } from './queues/device-work.js';
import { createMessageRecords } from './queues/messages.js';
import { createOutbound, createOutboundProducer } from './queues/outbound.js';
import { createMessageRestore } from './queues/restore.js';
import { createStoreSync } from './queues/store-sync.js';
import { createSessionAccess } from './http/api/sessions.js';
import { createAuthenticator } from './http/auth.js';
import { probeHealth } from './http/probe.js';
import { createRateLimiter } from './http/rate-limit.js';
import { monotonicNow } from './shared/clock.js';
import { ConfigError, WafleetError } from './shared/errors.js';
import { assertNoEviction } from './shared/eviction-policy.js';
import { exitOnSignals, runCleanups, type Cleanup } from './shared/lifecycle.js';
import { createLogger, type Logger } from './shared/logger.js';
import { connectRedis, duplicateRedis } from './shared/redis.js';
import { createStore } from './store/index.js';

interface RunningServer {
  /** Drains (hands every device over), then stops. Runs once however often it is called. */
  shutdown(reason: string): Promise<void>;
}


async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const { identity } = config.server;
  const serverId = identity.id;
  const { lease } = config;
  // Random per process start: tells this process from an earlier (crashed) or a second one with the same id.
  const bootId = createBootId();
  log.info({ config: describeConfig(config), bootId }, `Server identified: ${serverId} (from ${identity.source})`);
  // One registry per process, handed to whatever counts (heartbeat, coordinator, outbound).
  const metrics = createMetrics({ serverId });

  const cleanups: Cleanup[] = [];
  let state: { draining: boolean; ready: boolean; health: () => Omit<HealthReport, 'status' | 'timestamp' | 'serverId' | 'draining'> & { fenced: boolean } } = {
    draining: false,
    ready: false,
    health: () => ({ activeConnections: 0, leases: 0, fenced: false }),
  };

  try {
    // A command that hangs (a partition) must fail rather than hold the heartbeat forever; past
    // one TTL its answer could not matter any more.
    const redis = await connectRedis({
      target: config.redis.target,
      log,
      connectionName: `wafleet:${serverId}:${bootId}`,
      extra: { commandTimeout: lease.ttlMs },
    });
    cleanups.push({ name: 'redis', run: () => redis.quit() });
    await assertNoEviction(redis, log);
    // Blocking inbox reads and subscriber mode each need a connection of their own.
    const inboxReader = duplicateRedis(redis, { connectionName: `wafleet:${serverId}:${bootId}:inbox`, commandTimeout: lease.ttlMs + 5000 });
    const subscriber = duplicateRedis(redis, { connectionName: `wafleet:${serverId}:${bootId}:events` });
    cleanups.push({ name: 'redis connections', run: async () => [inboxReader, subscriber].forEach((c) => c.disconnect()) });
    const keys = createClusterKeys(config.redis.keyPrefix);
    // Before anything acts under the id (store registration, inbox, heartbeat): a second process
    // with the SERVER_ID of a live one stops here.
    const sole = await assertSoleServer({ redis, keys, serverId, bootId, url: config.server.url, ttlMs: lease.ttlMs, log: log.child({ module: 'server-id' }) });

    const store = await createStore(config.store, { log: log.child({ module: 'store' }) });
    cleanups.push({ name: 'store', run: () => store.close() });
    const report = await store.migrate();
    if (report.applied.length > 0) log.info({ applied: report.applied }, 'migrations applied');
    await store.registerServer({
      id: serverId,
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
      serverId,
      level: 'info',
      event: 'server_started',
      message: `Server ${serverId} started`,
      details: { pid: process.pid, port: config.server.port },
    });

    const leases = createLeaseStore({ redis, keys });
    const guard = createLeaseGuard({ clock: monotonicNow, selfFenceMs: lease.selfFenceMs });
    // BullMQ's blocking reads need a connection without retry limits (outbound and write-behind).
    const bull = duplicateRedis(redis, { connectionName: `wafleet:${serverId}:${bootId}:bullmq`, maxRetriesPerRequest: null, commandTimeout: undefined });
    cleanups.push({ name: 'bullmq connection', run: async () => bull.disconnect() });
    // Records reach the store behind the lease core, through BullMQ; every server works the queue.
    const storeSync = createStoreSync({
      redis: bull,
      keys,
      store,
      snapshots: createSnapshotWriter({ redis, keys, store }),
      log: log.child({ module: 'store-sync' }),
      retentionMs: config.messages.retentionMs,
      lockDurationMs: lease.ttlMs,
      metrics,
    });
    cleanups.push({ name: 'store sync', run: () => storeSync.close() });
    await storeSync.startWorkers();
    const recorder = createWriteBehindRecorder(storeSync, serverId);
    // Outbound messages: accepted in the store, records in Redis (each end written behind to the
    // store), one BullMQ queue per device, worked off only where the device runs.
    const messages = createMessageRecords({ redis, keys, retentionMs: config.messages.retentionMs, onFinished: (finished) => recorder.messageFinished(finished) });
    // One producer of outbound jobs for the API, the restore and outbound alike. The Redis reset
    // puts the store's pending messages back before claims re-open, also at start-up
    // (ensureMarker), before this server's outbound exists.
    const producer = createOutboundProducer({ redis: bull, keys, retentionMs: config.messages.retentionMs });
    cleanups.push({ name: 'outbound producer', run: () => producer.close() });
    const restoreMessages = createMessageRestore({ store, records: messages, producer, log: log.child({ module: 'message-restore' }) });
    const resetDeps: RedisResetDeps = { redis, keys, store, leases, log: log.child({ module: 'redis-reset' }), ttlMs: lease.ttlMs, serverId, restoreMessages };
    await ensureMarker(resetDeps);

    const { connector, runtime: deviceRuntime } = await createDevices({
      settings: config.devices,
      redis,
      subscriber,
      keys,
      store,
      leases,
      guard,
      recorder,
      serverId,
      bootId,
      log,
    });
    cleanups.push({ name: 'connector', run: () => connector.close() });

    const outbound = createOutbound({
      redis: bull,
      keys,
      records: messages,
      guard,
      sender: {
        ready: (deviceId, token) => {
          const state = deviceRuntime.describe(deviceId);
          return state !== null && state.token === token && state.connected;
        },
        send: (deviceId, token, message, waMessageId) => deviceRuntime.send(deviceId, token, message, waMessageId),
      },
      log: log.child({ module: 'outbound' }),
      serverId,
      bootId,
      ratePerMinute: config.messages.ratePerMinute,
      delayMs: config.messages.delayMs,
      attempts: config.messages.attempts,
      // The next owner takes back a dead owner's job at once (reclaimActiveJobs); the lock only
      // has to outlive a send.
      lockDurationMs: lease.ttlMs,
      retentionMs: config.messages.retentionMs,
      producer,
      metrics,
    });
    cleanups.push({ name: 'outbound', run: () => outbound.close() });
    const runtime = withOutboundWork(deviceRuntime, outbound);

    let drainOnRequest: () => Promise<void> = async () => undefined;
    const resets = createRedisResetRecovery({ deps: resetDeps, guard, holder: holderId(serverId, bootId), recorder, clock: monotonicNow });
    const onRedisReset = (reason: string) => resets.trigger(reason);
    const startedAt = Date.now();
    const heartbeat = createHeartbeat({
      redis,
      keys,
      leases,
      guard,
      clock: monotonicNow,
      log: log.child({ module: 'heartbeat' }),
      serverId,
      bootId,
      ttlMs: lease.ttlMs,
      intervalMs: lease.renewIntervalMs,
      maxClockDriftMs: (lease.ttlMs - lease.selfFenceMs) / 4,
      advert: () => ({
        bootId,
        url: config.server.url,
        region: config.server.region,
        capacity: config.server.maxCapacity,
        priority: config.server.priority,
        draining: state.draining,
        startedAt,
        responseTimeMs: Math.round(heartbeat.lastRoundTripMs),
      }),
      onRedisReset,
      metrics,
    });
    // The coordinator attaches itself to the heartbeat (renewal results, the accepting flag).
    const coordinator = createCoordinator({
      redis,
      inboxReader,
      keys,
      leases,
      guard,
      heartbeat,
      runtime,
      recorder,
      log: log.child({ module: 'coordinator' }),
      serverId,
      bootId,
      ttlMs: lease.ttlMs,
      sweepIntervalMs: lease.sweepIntervalMs,
      placementTimeoutMs: lease.placementTimeoutMs,
      minHoldMs: lease.rebalanceMinHoldMs,
      clock: monotonicNow,
      async logout(deviceId, token) {
        const cleared = await runtime.logout(deviceId, token, 'logged out through the API');
        if (!cleared.redis || !cleared.store) log.warn({ deviceId, token, cleared }, 'session clear refused somewhere: a newer owner holds it');
      },
      onRedisReset,
      onDrainRequested: () => void drainOnRequest(),
      metrics,
    });
    resets.onLost((lost) => coordinator.onLost(lost));
    const activeCoordinator = coordinator;
    // The start-up claim lasts one TTL; from the first beat (in start) on, the heartbeat holds the id.
    await sole.confirm();
    await activeCoordinator.start();
    cleanups.push({ name: 'coordinator', run: () => activeCoordinator.stop() });
    // A crashed predecessor (pm2 restarted this process under its id) holds leases nobody renews:
    // take them over now rather than wait a TTL for them to expire.
    if (sole.predecessor) {
      await activeCoordinator
        .takeOver(sole.predecessor.bootId)
        .catch((err) => log.warn({ err }, "taking over the previous boot's leases failed; they expire and move instead"));
    }
    // An expired lease wakes the sweep at once instead of at its next poll.
    const leaseKeyPrefix = keys.lease('');
    const expiredKeys = await listenForExpiredKeys({
      redis,
      log: log.child({ module: 'expired-keys' }),
      onExpired: (key) => {
        if (key.startsWith(leaseKeyPrefix)) void activeCoordinator.sweep();
      },
    });
    cleanups.push({ name: 'expired-key events', run: async () => expiredKeys.close() });
    log.info({ ttlMs: lease.ttlMs, renewIntervalMs: lease.renewIntervalMs }, 'Server assignment service ready');

    const singleton = createSingletonRunner(redis);
    const reconciler = createReconciler({
      store,
      redis,
      keys,
      leases,
      singleton,
      place: (deviceId) => activeCoordinator.place(deviceId),
      intervalMs: lease.reconcileIntervalMs,
      log: log.child({ module: 'reconcile' }),
    });
    reconciler.start();
    cleanups.push({ name: 'reconcile', run: async () => reconciler.stop() });
    const rebalancer = createRebalancer({ redis, keys, singleton, intervalMs: lease.rebalanceIntervalMs, log: log.child({ module: 'rebalance' }) });
    rebalancer.start();
    cleanups.push({ name: 'rebalance', run: async () => rebalancer.stop() });

    // backend_servers is the durable view of the cluster: fresh every few seconds, never per
    // renewal. Shutdown stops it (and waits for a write in flight) before marking the server
    // inactive, so a late health write cannot mark it active again.
    let healthWrite: Promise<unknown> = Promise.resolve();
    const storeHealth = setInterval(() => {
      healthWrite = store
        .recordServerHealth(serverId, guard.size)
        .catch((err) => log.warn({ err }, 'store health write failed'));
    }, config.storeHealthIntervalMs);
    storeHealth.unref();
    log.info({ intervalMs: config.storeHealthIntervalMs }, 'Server health monitoring started');
    const stopStoreHealth = async () => {
      clearInterval(storeHealth);
      await healthWrite;
    };
    cleanups.push({ name: 'store health', run: stopStoreHealth });

    // Drain: on SIGTERM/SIGINT before exiting, or on an admin request (the process then stays up,
    // answering the API, but holds no device and takes none).
    let drained: Promise<void> | undefined;
    const drain = (reason: string): Promise<void> => {
      drained ??= (async () => {
        state.draining = true;
        reconciler.stop();
        rebalancer.stop();
        try {
          const { released } = await activeCoordinator.drain(reason);
          recorder.serverLog({ serverId, level: 'info', event: 'server_drained', message: `released ${released} devices`, details: { reason } });
        } catch (err) {
          log.error({ err }, 'drain failed; leases will expire and be swept instead');
        }
      })();
      return drained;
    };
    drainOnRequest = () => drain('admin request');

    state = {
      draining: false,
      ready: true,
      health: () => ({ activeConnections: runtime.activeConnections, leases: guard.size, fenced: guard.isFenced() }),
    };
    metrics.setSources({
      leasesHeld: () => guard.size,
      socketsByStatus: () => runtime.statusCounts(),
      draining: () => state.draining,
      fenced: () => guard.isFenced(),
      storeSyncLagSeconds: async () => (await storeSync.stats()).lagMs / 1000,
    });
    metrics.watchQueue('outbound', () => outbound.jobCounts());
    metrics.watchQueue('store-sync', () => storeSync.jobCounts());
    // Snapshots for the monitoring port's aggregate; the key goes when the server does.
    const publisher = startMetricsPublisher({ redis, keys, metrics, serverId, intervalMs: lease.renewIntervalMs, log: log.child({ module: 'metrics' }) });
    cleanups.push({ name: 'metrics snapshot', run: () => publisher.stop() });

    const authenticator = createAuthenticator({ internalApiKey: config.internalApiKey, store });
    if (!config.internalApiKey) log.warn('INTERNAL_API_KEY is not set: admin and service calls are refused; user API keys still work');
    const app = createHttpApp({
      log: log.child({ module: 'http' }),
      health: () => {
        const { fenced, ...counts } = state.health();
        return {
          status: state.draining ? 'draining' : redis.status === 'ready' && !fenced ? 'ok' : 'degraded',
          ...counts,
          timestamp: new Date().toISOString(),
          serverId,
          draining: state.draining,
        };
      },
      ready: () => state.ready && !state.draining,
      metrics,
      rateLimiter: createRateLimiter({ redis, keys }),
      options: { production: config.nodeEnv === 'production', ...config.http },
      api: {
        store,
        redis,
        keys,
        leases,
        authenticator,
        log: log.child({ module: 'api' }),
        place: (deviceId) => activeCoordinator.place(deviceId),
        ...createSessionAccess({ redis, keys, store }),
        probeHealth,
        messages,
        defaultRatePerMinute: config.messages.ratePerMinute,
        idempotencyMs: config.messages.idempotencyMs,
        enqueueMessage: (messageId, deviceId) => outbound.enqueue(messageId, deviceId),
      },
    });
    const httpServer = await new Promise<Server>((resolve, reject) => {
      const server = createServer(app);
      server.once('error', reject);
      server.listen(config.server.port, () => resolve(server));
    });
    log.info({ port: config.server.port }, `HTTP Server listening on port ${config.server.port}`);

    let shuttingDown: Promise<void> | undefined;
    const shutdown = (reason: string): Promise<void> => {
      shuttingDown ??= (async () => {
        log.info({ reason }, 'shutting down: draining');
        await stopStoreHealth();
        await drain(reason);
        await new Promise<void>((resolve) => {
          httpServer.close(() => resolve());
          httpServer.closeIdleConnections();
        });
        // The last records go into the queue (Redis), not straight to the store: a store that is
        // down now must not lose them; another server's worker applies them.
        recorder.serverLog({ serverId, level: 'info', event: 'server_stopped', message: `Server ${serverId} stopped (${reason})` });
        await recorder.flush().catch((err) => log.error({ err }, 'write-behind records could not be queued'));
        const settled = await storeSync.settle(Math.min(5000, config.shutdownTimeoutMs / 3)).catch(() => false);
        if (!settled) log.warn('write-behind records still pending at exit; they wait in Redis for the next server');
        try {
          await store.markServerInactive(serverId);
        } catch (err) {
          log.error({ err }, 'could not mark the server inactive in the store');
        }
        await runCleanups(cleanups, log);
        log.info('shutdown complete');
      })();
      return shuttingDown;
    };
    return { shutdown };
  } catch (err) {
    await runCleanups(cleanups, log);
    throw err;
  }
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

  exitOnSignals({ log, shutdownTimeoutMs: config.shutdownTimeoutMs, shutdown: (signal) => server.shutdown(signal) });
}

// This module is the server's entry point (npm run server, pm2 via scripts/launch.mjs); nothing
// imports it.
void main();
