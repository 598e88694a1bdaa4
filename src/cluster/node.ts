import type { Config } from '../config/index.js';
import { monotonicNow } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { Store } from '../store/types.js';
import { createCoordinator } from './coordinator.js';
import type { DeviceRunner } from './device-runner.js';
import { listenForExpiredKeys, type ExpiredKeyEvents } from './expiry-events.js';
import { createHeartbeat } from './heartbeat.js';
import { createInbox } from './inbox.js';
import type { ClusterKeys } from './keys.js';
import type { LeaseGuard } from './lease-guard.js';
import { holderId, type LeaseStore, type PlaceResult } from './lease-store.js';
import type { LeaseMetrics } from './metrics.js';
import { createRebalancer } from './placement/rebalance.js';
import { createEventPruner } from './prune-events.js';
import { createReconciler } from './reconcile.js';
import type { LeaseRecorder } from './recorder.js';
import { createRedisResetRecovery, type RedisResetDeps } from './redis-reset.js';
import { createServerDirectory } from './server-directory.js';
import type { SoleServer } from './server-exclusivity.js';
import { createSingletonRunner } from './singleton.js';

// One server's membership of the cluster, from its first heartbeat to leaving: it puts the lease
// core's parts together (heartbeat, coordinator, Redis-reset recovery, sweep wake-ups, reconcile,
// rebalance, the store's health rows) and owns their start, the drain and the shutdown order.
// What it runs on (connections, store, devices, records) is made by the composition root.

export interface ClusterNodeOptions {
  redis: Redis;
  /** A connection for blocking inbox reads, the coordinator's alone. */
  inboxReader: Redis;
  keys: ClusterKeys;
  store: Store;
  leases: LeaseStore;
  guard: LeaseGuard;
  runtime: DeviceRunner;
  recorder: LeaseRecorder;
  /** The write-behind queue: shutdown waits a little for its last records to reach the store. */
  storeSync: { settle(timeoutMs: number): Promise<boolean> };
  resetDeps: RedisResetDeps;
  /** This boot's claim of the server id (server-exclusivity.ts), confirmed just before the first beat. */
  sole: SoleServer;
  serverId: string;
  bootId: string;
  lease: Config['lease'];
  /** What the heartbeat advertises about this server besides its state. */
  advert: { url: string; region: string; capacity: number; priority: number };
  storeHealthIntervalMs: number;
  /** How long the store keeps inbound events (config.events.storeRetentionMs); unset: kept for ever. */
  eventsStoreRetentionMs?: number;
  shutdownTimeoutMs: number;
  log: Logger;
  metrics: LeaseMetrics;
}

export interface ClusterNode {
  /** Joins the cluster: first beat, inbox, sweep, a crashed predecessor's leases, reconcile, rebalance. */
  start(): Promise<void>;
  /** Places a device that runs nowhere (new, or wanted again); idempotent. */
  place(deviceId: string): Promise<PlaceResult>;
  /**
   * Hands every device to other servers and leaves the cluster; the process stays up (answering
   * the API) until shutdown. Runs once however often it is called.
   */
  drain(reason: string): Promise<void>;
  /**
   * Drains, closes what takes requests (`closeIngress`, the HTTP server), queues the last
   * records and marks the server inactive in the store; then the caller runs its cleanups
   * (close() among them). Runs once however often it is called.
   */
  shutdown(reason: string, closeIngress: () => Promise<void>): Promise<void>;
  /**
   * Stops every loop (coordinator and its devices, sweep wake-ups, reconcile, rebalance, health
   * rows) without handing anything over: a cleanup, after shutdown or a failed start.
   */
  close(): Promise<void>;
  readonly draining: boolean;
  readonly fenced: boolean;
}

/** Pruning inbound events is a singleton duty this often: small rounds keep up with a busy cluster. */
const EVENT_PRUNE_INTERVAL_MS = 5 * 60_000;

export function createClusterNode(options: ClusterNodeOptions): ClusterNode {
  const { redis, keys, store, leases, guard, recorder, serverId, bootId, lease, log, metrics } = options;
  const startedAt = Date.now();
  let draining = false;
  let expiredKeys: ExpiredKeyEvents | undefined;

  const resets = createRedisResetRecovery({ deps: options.resetDeps, guard, holder: holderId(serverId, bootId), recorder, clock: monotonicNow });
  const onRedisReset = (reason: string) => resets.trigger(reason);
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
    advert: () => ({ bootId, ...options.advert, draining, startedAt, responseTimeMs: Math.round(heartbeat.lastRoundTripMs) }),
    onRedisReset,
    metrics,
  });
  // The coordinator attaches itself to the heartbeat (renewal results, the accepting flag).
  const coordinator = createCoordinator({
    redis,
    inboxReader: options.inboxReader,
    keys,
    leases,
    guard,
    heartbeat,
    runtime: options.runtime,
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
      const cleared = await options.runtime.logout(deviceId, token, 'logged out through the API');
      if (!cleared.redis || !cleared.store) log.warn({ deviceId, token, cleared }, 'session clear refused somewhere: a newer owner holds it');
    },
    onRedisReset,
    onDrainRequested: () => void node.drain('admin request'),
    metrics,
  });
  resets.onLost((lost) => coordinator.onLost(lost));

  const singleton = createSingletonRunner(redis);
  const reconciler = createReconciler({
    store,
    redis,
    keys,
    leases,
    singleton,
    place: (deviceId) => coordinator.place(deviceId),
    intervalMs: lease.reconcileIntervalMs,
    log: log.child({ module: 'reconcile' }),
  });
  const rebalancer = createRebalancer({
    keys,
    servers: createServerDirectory({ redis, keys }),
    inbox: createInbox({ redis, keys }),
    singleton,
    intervalMs: lease.rebalanceIntervalMs,
    log: log.child({ module: 'rebalance' }),
  });

  const pruner =
    options.eventsStoreRetentionMs === undefined
      ? undefined
      : createEventPruner({
          store,
          keys,
          singleton,
          retentionMs: options.eventsStoreRetentionMs,
          intervalMs: EVENT_PRUNE_INTERVAL_MS,
          log: log.child({ module: 'prune-events' }),
        });

  // backend_servers is the durable view of the cluster: fresh every few seconds, never per
  // renewal. Shutdown stops it (and waits for a write in flight) before marking the server
  // inactive, so a late health write cannot mark it active again.
  let storeHealth: NodeJS.Timeout | undefined;
  let healthWrite: Promise<unknown> = Promise.resolve();
  const stopStoreHealth = async () => {
    clearInterval(storeHealth);
    await healthWrite;
  };

  let drained: Promise<void> | undefined;
  let shuttingDown: Promise<void> | undefined;

  const node: ClusterNode = {
    async start() {
      // The start-up claim lasts one TTL; from the first beat (in coordinator.start) on, the
      // heartbeat holds the id.
      await options.sole.confirm();
      await coordinator.start();
      // A crashed predecessor (pm2 restarted this process under its id) holds leases nobody
      // renews: take them over now rather than wait a TTL for them to expire.
      const { predecessor } = options.sole;
      if (predecessor) {
        await coordinator
          .takeOver(predecessor.bootId)
          .catch((err) => log.warn({ err }, "taking over the previous boot's leases failed; they expire and move instead"));
      }
      // An expired lease wakes the sweep at once instead of at its next poll.
      const leaseKeyPrefix = keys.lease('');
      expiredKeys = await listenForExpiredKeys({
        redis,
        log: log.child({ module: 'expired-keys' }),
        onExpired: (key) => {
          if (key.startsWith(leaseKeyPrefix)) coordinator.leaseExpired(key.slice(leaseKeyPrefix.length));
        },
      });
      log.info({ ttlMs: lease.ttlMs, renewIntervalMs: lease.renewIntervalMs }, 'Server assignment service ready');
      reconciler.start();
      rebalancer.start();
      pruner?.start();
      storeHealth = setInterval(() => {
        healthWrite = store.recordServerHealth(serverId, guard.size).catch((err) => log.warn({ err }, 'store health write failed'));
      }, options.storeHealthIntervalMs);
      storeHealth.unref();
      log.info({ intervalMs: options.storeHealthIntervalMs }, 'Server health monitoring started');
    },

    place: (deviceId) => coordinator.place(deviceId),

    drain(reason) {
      drained ??= (async () => {
        draining = true;
        reconciler.stop();
        rebalancer.stop();
        pruner?.stop();
        try {
          const { released } = await coordinator.drain(reason);
          recorder.serverLog({ serverId, level: 'info', event: 'server_drained', message: `released ${released} devices`, details: { reason } });
        } catch (err) {
          log.error({ err }, 'drain failed; leases will expire and be swept instead');
        }
      })();
      return drained;
    },

    shutdown(reason, closeIngress) {
      shuttingDown ??= (async () => {
        log.info({ reason }, 'shutting down: draining');
        await stopStoreHealth();
        await node.drain(reason);
        await closeIngress();
        // The last records go into the queue (Redis), not straight to the store: a store that is
        // down now must not lose them; another server's worker applies them.
        recorder.serverLog({ serverId, level: 'info', event: 'server_stopped', message: `Server ${serverId} stopped (${reason})` });
        await recorder.flush().catch((err) => log.error({ err }, 'write-behind records could not be queued'));
        const settled = await options.storeSync.settle(Math.min(5000, options.shutdownTimeoutMs / 3)).catch(() => false);
        if (!settled) log.warn('write-behind records still pending at exit; they wait in Redis for the next server');
        try {
          await store.markServerInactive(serverId);
        } catch (err) {
          log.error({ err }, 'could not mark the server inactive in the store');
        }
      })();
      return shuttingDown;
    },

    async close() {
      await stopStoreHealth();
      rebalancer.stop();
      reconciler.stop();
      pruner?.stop();
      expiredKeys?.close();
      await coordinator.stop();
    },

    get draining() {
      return draining;
    },
    get fenced() {
      return guard.isFenced();
    },
  };
  return node;
}

/** Joins backend_servers (the durable view of the cluster) and logs `server_started`. */
export async function registerInStore(store: Store, server: Config['server'], boot: { pid: number; identitySource: string }): Promise<void> {
  const serverId = server.identity.id;
  await store.registerServer({
    id: serverId,
    serverName: server.name,
    serverUrl: server.url,
    serverType: server.type,
    region: server.region,
    maxCapacity: server.maxCapacity,
    priority: server.priority,
    description: server.description,
    metadata: { pid: boot.pid, identitySource: boot.identitySource },
  });
  await store.appendServerLog({ serverId, level: 'info', event: 'server_started', message: `Server ${serverId} started`, details: { pid: boot.pid, port: server.port } });
}
