// Composition root: the one place that reads configuration and creates objects. Every module
// below receives what it needs from here.
import { openServerConnections } from './cluster/connections.js';
import { createInbox } from './cluster/inbox.js';
import { createClusterKeys } from './cluster/keys.js';
import { createLeaseGuard } from './cluster/lease-guard.js';
import { createLeaseStore } from './cluster/lease-store.js';
import { createClusterNode, registerInStore } from './cluster/node.js';
import { createServerDirectory } from './cluster/server-directory.js';
import { ensureMarker, type RedisResetDeps } from './cluster/redis-reset.js';
import { assertSoleServer, createBootId } from './cluster/server-exclusivity.js';
import { describeConfig, loadConfigFromProcess, type Config } from './config/index.js';
import { createSnapshotWriter } from './devices/auth-state/auth-state.js';
import { createDevices } from './devices/index.js';
import type { LoggedEvent } from './events/event-log.js';
import { createDeviceSessions } from './devices/session-access.js';
import { createHttpApp } from './http/app.js';
import { createMetrics } from './metrics/index.js';
import { startMetricsPublisher } from './metrics/publish.js';
import { runtimeSender, withOutboundWork } from './queues/device-work.js';
import { createMessageRecords } from './queues/messages.js';
import { createOutbound, createOutboundProducer } from './queues/outbound.js';
import { createWriteBehindRecorder } from './queues/recorder.js';
import { createReceiptRecorder } from './queues/receipts.js';
import { createMessageRestore } from './queues/restore.js';
import { createEventRestore } from './events/restore.js';
import { createStoreSync } from './queues/store-sync.js';
import { createStoredEvents } from './queues/stored-events.js';
import { createAuthenticator } from './http/auth.js';
import { createEventStreams } from './http/event-stream.js';
import { createWebhooks } from './webhooks/index.js';
import { probeHealth } from './http/probe.js';
import { createRateLimiter } from './http/rate-limit.js';
import { monotonicNow } from './shared/clock.js';
import { assertNoEviction } from './shared/eviction-policy.js';
import { listenHttp } from './shared/listen.js';
import { runCleanups, runEntryPoint, type Cleanup } from './shared/lifecycle.js';
import { createLogger, type Logger } from './shared/logger.js';
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
  try {
    const { redis, inboxReader, subscriber, bull, close } = await openServerConnections({ target: config.redis.target, log, serverId, bootId, ttlMs: lease.ttlMs });
    cleanups.push({ name: 'redis connections', run: close });
    await assertNoEviction(redis, log);
    const keys = createClusterKeys(config.redis.keyPrefix);
    // Before anything acts under the id (store registration, inbox, heartbeat): a second process
    // with the SERVER_ID of a live one stops here.
    const sole = await assertSoleServer({ redis, keys, serverId, bootId, url: config.server.url, ttlMs: lease.ttlMs, log: log.child({ module: 'server-id' }) });

    const store = await createStore(config.store, { log: log.child({ module: 'store' }) });
    cleanups.push({ name: 'store', run: () => store.close() });
    const report = await store.migrate();
    if (report.applied.length > 0) log.info({ applied: report.applied }, 'migrations applied');
    await registerInStore(store, config.server, { pid: process.pid, identitySource: identity.source });

    const leases = createLeaseStore({ redis, keys });
    const guard = createLeaseGuard({ clock: monotonicNow, selfFenceMs: lease.selfFenceMs });
    // Records reach the store behind the lease core, through BullMQ; every server works the queue.
    const snapshots = createSnapshotWriter({ redis, keys, store });
    const { retentionMs } = config.messages;
    // Webhooks deliver what the store has, woken as each event gets there; they are made once the
    // event log exists, and until then a device waits for its next stored event.
    const webhookWaker = { wake: (_deviceId: string): void => undefined };
    const storedEvents = createStoredEvents({ redis, keys, store, writeBehind: (id, event) => recorder.inboundEvent(id, event), wake: (id) => webhookWaker.wake(id), log: log.child({ module: 'events' }) });
    const storeSync = createStoreSync({ redis: bull, keys, store, snapshots, log: log.child({ module: 'store-sync' }), retentionMs, lockDurationMs: lease.ttlMs, metrics, onApplied: storedEvents.applied });
    cleanups.push({ name: 'store sync', run: () => storeSync.close() });
    await storeSync.startWorkers();
    const recorder = createWriteBehindRecorder(storeSync, serverId);
    // Outbound messages: accepted in the store, records in Redis (each end written behind to the
    // store), one BullMQ queue per device, worked off only where the device runs.
    const messages = createMessageRecords({ redis, keys, retentionMs, onFinished: (finished) => recorder.messageFinished(finished) });
    // One producer of outbound jobs for the API, the restore and outbound alike. The Redis reset
    // puts the store's pending messages back before claims re-open, also at start-up
    // (ensureMarker), before this server's outbound exists.
    const producer = createOutboundProducer({ redis: bull, keys, retentionMs });
    cleanups.push({ name: 'outbound producer', run: () => producer.close() });
    const restoreMessages = createMessageRestore({ store, records: messages, producer, log: log.child({ module: 'message-restore' }) });
    const restoreEvents = createEventRestore({ redis, keys, store, log: log.child({ module: 'event-restore' }), ...config.events, onRestored: (id) => webhookWaker.wake(id) });
    const resetDeps: RedisResetDeps = { redis, keys, store, leases, log: log.child({ module: 'redis-reset' }), ttlMs: lease.ttlMs, serverId, restoreMessages, restoreEvents };
    await ensureMarker(resetDeps);

    const receipts = createReceiptRecorder(messages, log.child({ module: 'receipts' }), recorder.messageReceipt);
    const onEventAppended = (deviceId: string, event: LoggedEvent) => (receipts(deviceId, event), storedEvents.record(deviceId, event));
    const devices = { settings: config.devices, outboundHttp: config.outboundHttp, events: config.events, metrics, redis, subscriber, keys, store, leases, guard, recorder, serverId, bootId, log, onEventAppended };
    const { connector, runtime: deviceRuntime, events, sim } = await createDevices(devices);
    cleanups.push({ name: 'connector', run: () => connector.close() });
    const webhooks = createWebhooks({
      redis, bull, keys, store, events, log: log.child({ module: 'webhooks' }), settings: config.webhooks, allowPrivate: config.outboundHttp.allowPrivate,
      eventRetentionMs: config.events.retentionMs, metrics, onDelivered: (deviceId, sequence) => recorder.webhookProgress(deviceId, sequence),
    });
    cleanups.push({ name: 'webhooks', run: () => webhooks.close() });
    webhookWaker.wake = (deviceId) => void webhooks.wake(deviceId);
    await webhooks.startWorkers();

    const { ratePerMinute, delayMs, attempts } = config.messages;
    const outbound = createOutbound({
      redis: bull, keys, records: messages, guard, sender: runtimeSender(deviceRuntime), log: log.child({ module: 'outbound' }), serverId, bootId,
      ratePerMinute, delayMs, attempts, retentionMs, producer, metrics,
      // The next owner takes back a dead owner's job at once (reclaimActiveJobs); the lock only
      // has to outlive a send.
      lockDurationMs: lease.ttlMs,
    });
    cleanups.push({ name: 'outbound', run: () => outbound.close() });
    const runtime = withOutboundWork(deviceRuntime, outbound);

    const { storeHealthIntervalMs, shutdownTimeoutMs } = config;
    const advert = { url: config.server.url, region: config.server.region, capacity: config.server.maxCapacity, priority: config.server.priority };
    const node = createClusterNode({
      redis, inboxReader, keys, store, leases, guard, runtime, recorder, storeSync, resetDeps, sole, serverId, bootId,
      lease, advert, storeHealthIntervalMs, shutdownTimeoutMs, log, metrics, eventsStoreRetentionMs: config.events.storeRetentionMs,
    });
    cleanups.push({ name: 'cluster node', run: () => node.close() });
    await node.start();

    metrics.setSources({
      leasesHeld: () => guard.size,
      socketsByStatus: () => runtime.statusCounts(),
      draining: () => node.draining,
      fenced: () => node.fenced,
      storeSyncLagSeconds: async () => (await storeSync.stats()).lagMs / 1000,
    });
    metrics.watchQueue('outbound', () => outbound.jobCounts());
    metrics.watchQueue('store-sync', () => storeSync.jobCounts());
    metrics.watchQueue('webhooks', () => webhooks.jobCounts());
    // Snapshots for the monitoring port's aggregate; the key goes when the server does.
    const publisher = startMetricsPublisher({ redis, keys, metrics, serverId, intervalMs: lease.renewIntervalMs, log: log.child({ module: 'metrics' }) });
    cleanups.push({ name: 'metrics snapshot', run: () => publisher.stop() });

    const eventStreams = createEventStreams({ events, store });
    const authenticator = createAuthenticator({ internalApiKey: config.internalApiKey, store });
    if (!config.internalApiKey) log.warn('INTERNAL_API_KEY is not set: admin and service calls are refused; user API keys still work');
    const app = createHttpApp({
      log: log.child({ module: 'http' }),
      health: () => ({
        status: node.draining ? 'draining' : redis.status === 'ready' && !node.fenced ? 'ok' : 'degraded',
        activeConnections: runtime.activeConnections,
        leases: guard.size,
        timestamp: new Date().toISOString(),
        serverId,
        draining: node.draining,
      }),
      ready: () => !node.draining,
      metrics,
      rateLimiter: createRateLimiter({ redis, keys }),
      options: { production: config.nodeEnv === 'production', ...config.http },
      api: {
        store, leases, servers: createServerDirectory({ redis, keys }), inbox: createInbox({ redis, keys }),
        sessions: createDeviceSessions({ redis, keys, store }), events, sim, eventStreams, webhooks: webhooks.registry,
        authenticator, log: log.child({ module: 'api' }), probeHealth, messages,
        place: (deviceId) => node.place(deviceId),
        defaultRatePerMinute: ratePerMinute,
        idempotencyMs: config.messages.idempotencyMs,
        enqueueMessage: (messageId, deviceId) => outbound.enqueue(messageId, deviceId),
      },
    });
    const http = await listenHttp(app, config.server.port);
    log.info({ port: config.server.port }, `HTTP Server listening on port ${config.server.port}`);

    let shuttingDown: Promise<void> | undefined;
    const shutdown = (reason: string): Promise<void> =>
      (shuttingDown ??= (async () => {
        // Open event streams would hold the listener open to the end.
        await node.shutdown(reason, () => (eventStreams.close(), http.close()));
        await runCleanups(cleanups, log);
        log.info('shutdown complete');
      })());
    return { shutdown };
  } catch (err) {
    await runCleanups(cleanups, log);
    throw err;
  }
}

// This module is the server's entry point (npm run server, pm2 via scripts/launch.mjs); nothing
// imports it.
void runEntryPoint({
  name: 'wafleet',
  loadConfig: () => loadConfigFromProcess(),
  logger: (config) => createLogger({ level: config.logLevel, serverId: config.server.identity.id }),
  shutdownTimeoutMs: (config) => config.shutdownTimeoutMs,
  start: startServer,
});
