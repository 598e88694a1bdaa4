import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import pino from 'pino';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseGuard, type LeaseGuard } from '../../src/cluster/lease-guard.js';
import { createLeaseStore, type LeaseStore } from '../../src/cluster/lease-store.js';
import { createWriteBehindRecorder, type WriteBehindRecorder } from '../../src/queues/recorder.js';
import { loadConfig, type Config } from '../../src/config/index.js';
import type { DeviceConnector } from '../../src/devices/connector.js';
import { createSnapshotWriter } from '../../src/devices/auth-state/auth-state.js';
import { createDevices, type Devices } from '../../src/devices/index.js';
import { createMetrics, type Metrics } from '../../src/metrics/index.js';
import type { ReconnectPolicy } from '../../src/devices/reconnect-policy.js';
import { createStoreSync, type StoreSync } from '../../src/queues/store-sync.js';
import { monotonicNow } from '../../src/shared/clock.js';
import { createStore, type Store } from '../../src/store/index.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The device layer against real Redis and a real store, wired exactly as main.ts wires it
// (src/devices/index.ts), for the device tests: a lease claimed for a named server, the guard
// that server would have, and the connection log read back from the store.

export const silentLog = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export interface DeviceBed {
  t: TestRedis;
  keys: ClusterKeys;
  db: TestDatabase;
  store: Store;
  leases: LeaseStore;
  /** A new device in the store; returns its id. */
  createDevice(options?: { connectionMethod?: 'qr' | 'pairing'; phoneForPairing?: string; running?: boolean }): Promise<string>;
  /** Makes `serverId` live and claims the device's lease for it; returns the token. */
  claim(deviceId: string, serverId: string, ttlMs?: number): Promise<number>;
  /** What another server does: the lease deleted and claimed for `thief`; returns its token. */
  steal(deviceId: string, thief: string): Promise<number>;
  /** The write-behind queues of the bed's test servers; the store reads below wait for them. */
  syncs: Set<StoreSync>;
  /** Resolves when every record the bed's servers made so far is in the store. */
  settled(): Promise<void>;
  /** device_connection_logs rows of the device, oldest first, once the write-behind has settled. */
  connectionLog(deviceId: string): Promise<Array<{ event_type: string; server_id: string | null; details: Record<string, unknown> }>>;
  cleanup(): Promise<void>;
}

export async function createDeviceBed(): Promise<DeviceBed> {
  const t = await useTestRedis();
  const keys = createClusterKeys(t.prefix);
  const db = await createTestDatabase();
  const store = await createStore({ kind: 'postgres', databaseUrl: db.url, poolMax: 4 }, { log: silentLog });
  await store.migrate();
  const leases = createLeaseStore({ redis: t.redis, keys });
  const userId = randomUUID();
  const live = async (serverId: string) => {
    await t.redis.multi().hset(keys.server(serverId), 'capacity', 1000).pexpire(keys.server(serverId), 600_000).exec();
  };
  const claim = async (deviceId: string, serverId: string, ttlMs = 600_000) => {
    await live(serverId);
    const result = await leases.claim(deviceId, serverId, ttlMs);
    if (result.outcome !== 'claimed') throw new Error(`claim of ${deviceId} for ${serverId}: ${JSON.stringify(result)}`);
    return result.token;
  };
  const syncs = new Set<StoreSync>();
  const settled = async () => {
    for (const sync of syncs) await sync.flush();
    for (const sync of syncs) await sync.settle(10_000);
  };
  return {
    t,
    keys,
    db,
    store,
    leases,
    claim,
    async createDevice(options = {}) {
      const device = await store.createDevice({
        userId,
        deviceName: `device-${randomUUID().slice(0, 8)}`,
        connectionMethod: options.connectionMethod ?? 'qr',
        phoneForPairing: options.phoneForPairing ?? null,
      });
      if (options.running ?? true) await store.setDesiredState(device.id, 'running');
      return device.id;
    },
    async steal(deviceId, thief) {
      await t.redis.del(keys.lease(deviceId));
      return claim(deviceId, thief);
    },
    syncs,
    settled,
    async connectionLog(deviceId) {
      await settled();
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        const { rows } = await client.query('select event_type, server_id, details from device_connection_logs where device_id = $1 order by id', [deviceId]);
        return rows;
      } finally {
        await client.end();
      }
    },
    async cleanup() {
      await store.close();
      await db.drop();
      await t.cleanup();
    },
  };
}

export interface TestServer extends Devices {
  serverId: string;
  guard: LeaseGuard;
  recorder: WriteBehindRecorder;
  /** What the server counted (events refused as stale, ...). */
  metrics: Metrics;
  redis: Redis;
  /** Claims the device for this server and starts it, as the coordinator does; returns the token. */
  start(deviceId: string): Promise<number>;
  close(): Promise<void>;
}

/**
 * One server's device layer on its own Redis connections: the real runtime, auth state, code
 * publisher, recorder and retirer. The guard stays unfenced (renewed far ahead) unless a test
 * fences it; leases are long, so only what a test does takes them away.
 */
export async function startTestServer(
  bed: DeviceBed,
  serverId: string,
  options: { connector?: DeviceConnector; policy?: Partial<ReconnectPolicy>; env?: Record<string, string> } = {},
): Promise<TestServer> {
  const redis = new Redis(bed.t.url);
  const subscriber = new Redis(bed.t.url);
  const config: Config = loadConfig({ SERVER_ID: serverId, DEVICE_DRIVER: 'simulated', SIM_CONNECT_LATENCY_MS: '5', SIM_QR_INTERVAL_MS: '100', ...options.env });
  const settings = { ...config.devices, reconnect: { ...config.devices.reconnect, ...options.policy } };
  const guard = createLeaseGuard({ clock: monotonicNow, selfFenceMs: 3_600_000 });
  guard.renewed(monotonicNow());
  // Records go to the store written behind, through the store-sync queue, as in a server.
  const bull = new Redis(bed.t.url, { maxRetriesPerRequest: null });
  const storeSync = createStoreSync({ redis: bull, keys: bed.keys, store: bed.store, snapshots: createSnapshotWriter({ redis, keys: bed.keys, store: bed.store }), log: silentLog, retentionMs: 60_000, lockDurationMs: 5000 });
  await storeSync.startWorkers();
  bed.syncs.add(storeSync);
  const recorder = createWriteBehindRecorder(storeSync, serverId);
  const leases = createLeaseStore({ redis, keys: bed.keys });
  const metrics = createMetrics({ serverId, processMetrics: false });
  const devices = await createDevices({
    settings,
    outboundHttp: config.outboundHttp,
    events: config.events,
    metrics,
    redis,
    subscriber,
    keys: bed.keys,
    store: bed.store,
    leases,
    guard,
    recorder,
    serverId,
    log: silentLog.child({ serverId }),
    ...(options.connector ? { connector: options.connector } : {}),
  });
  let closed: Promise<void> | undefined;
  return {
    ...devices,
    serverId,
    guard,
    recorder,
    metrics,
    redis,
    async start(deviceId) {
      const token = await bed.claim(deviceId, serverId);
      guard.hold(deviceId, token);
      devices.runtime.start(deviceId, token);
      return token;
    },
    close() {
      closed ??= (async () => {
        await devices.runtime.stopAll('test over');
        await devices.connector.close();
        await recorder.flush();
        await storeSync.settle(10_000);
        bed.syncs.delete(storeSync);
        await storeSync.close();
        bull.disconnect();
        redis.disconnect();
        subscriber.disconnect();
      })();
      return closed;
    },
  };
}

/** Polls until `check` holds; throws with `describe()` on timeout. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, describe: () => unknown = () => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${JSON.stringify(await describe())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
