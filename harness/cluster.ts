import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { createClusterKeys, type ClusterKeys } from '../src/cluster/keys.js';
import { parseLeaseValue } from '../src/cluster/lease-store.js';
import type { RedisClient, RedisTarget } from '../src/shared/redis.js';
import { createStore, type Store } from '../src/store/index.js';
import { freePort } from './local-redis.js';
import { createTestDatabase, type TestDatabase } from './postgres.js';
import { spawnServer, stopAll, type ServerProcess } from './processes.js';
import { useTestRedis, type TestRedis } from './redis.js';

// A cluster of real server processes on loopback, with its own key prefix and its own database,
// for the multi-process tests (failover, drain, split-brain, Redis data loss), the chaos run and
// the benchmarks.

export interface TestCluster {
  redis: TestRedis<RedisClient>;
  keys: ClusterKeys;
  db: TestDatabase;
  /** The test's own connection to the cluster's store. */
  store: Store;
  servers: Map<string, ServerProcess>;
  start(serverId: string, env?: Record<string, string>): Promise<ServerProcess>;
  /** Creates devices in the store with desired state `running`, so reconcile places them. */
  addDevices(count: number): Promise<string[]>;
  /** deviceId -> serverId of its lease holder (absent when nobody holds it). */
  owners(devices: readonly string[]): Promise<Map<string, string>>;
  /** deviceId -> serverId whose simulated socket is open for the device. */
  sockets(devices: readonly string[]): Promise<Map<string, string>>;
  /** Devices whose open socket belongs to the lease holder, i.e. connected where they should be. */
  connectedCount(devices: readonly string[], servers?: readonly string[]): Promise<number>;
  conflicts(): Promise<number>;
  /** Stops every server, drops the database and removes the keys; runs once. */
  stop(): Promise<void>;
}

export const TEST_LEASE_ENV = {
  DEVICE_DRIVER: 'simulated',
  // A new device is shown one simulated QR code and linked 50 ms later.
  SIM_QR_INTERVAL_MS: '100',
  SESSION_SNAPSHOT_DELAY_MS: '500',
  DEVICE_RECONNECT_BASE_MS: '250',
  DEVICE_RECONNECT_CAP_MS: '5000',
  LEASE_TTL_MS: '3000',
  SWEEP_INTERVAL_MS: '250',
  RECONCILE_INTERVAL_MS: '1000',
  SIM_CONNECT_LATENCY_MS: '10',
  STORE_HEALTH_INTERVAL_MS: '1000',
  LOG_LEVEL: 'info',
} as const;

const STORE_POOL = 8;

/**
 * `prefixLabel` starts the key prefix (see useTestRedis); `redis` is a Redis of the test's own (a
 * URL, or a Sentinel or Cluster deployment), the run's shared Redis by default.
 */
export async function startTestCluster(options: { redis?: string | RedisTarget; prefixLabel?: string } = {}): Promise<TestCluster> {
  const redis: TestRedis<RedisClient> =
    typeof options.redis === 'object' ? await useTestRedis(options.redis, options.prefixLabel) : await useTestRedis(options.redis, options.prefixLabel);
  const keys = createClusterKeys(redis.prefix);
  const db = await createTestDatabase();
  const store = await createStore({ kind: 'postgres', databaseUrl: db.url, poolMax: STORE_POOL }, { log: pino({ level: 'silent' }) });
  await store.migrate();
  const servers = new Map<string, ServerProcess>();
  let stopping: Promise<void> | undefined;

  const owners = async (devices: readonly string[]) => {
    const values = devices.length ? await redis.redis.mget(devices.map((d) => keys.lease(d))) : [];
    const map = new Map<string, string>();
    values.forEach((value, i) => {
      const holder = value ? parseLeaseValue(value) : null;
      if (holder) map.set(devices[i]!, holder.serverId);
    });
    return map;
  };
  const sockets = async (devices: readonly string[]) => {
    const values = devices.length ? await redis.redis.mget(devices.map((d) => keys.simSocket(d))) : [];
    const map = new Map<string, string>();
    values.forEach((value, i) => {
      if (value) map.set(devices[i]!, value.split('#')[0]!);
    });
    return map;
  };

  return {
    redis,
    keys,
    db,
    store,
    servers,
    async start(serverId, env = {}) {
      const port = await freePort();
      const p = spawnServer(
        {
          ...TEST_LEASE_ENV,
          SERVER_ID: serverId,
          ...redis.env,
          WAFLEET_KEY_PREFIX: redis.prefix,
          STORE: 'postgres',
          DATABASE_URL: db.url,
          ...env,
        },
        port,
      );
      servers.set(serverId, p);
      await p.waitForHealth();
      return p;
    },
    async addDevices(count) {
      const userId = randomUUID();
      const ids = new Array<string>(count);
      // As many at a time as the store's pool has connections: thousands of devices (the
      // benchmarks) are created in seconds rather than a minute.
      let next = 0;
      const createSome = async () => {
        for (let i = next++; i < count; i = next++) {
          const device = await store.createDevice({ userId, deviceName: `device-${i}`, connectionMethod: 'qr' });
          await store.setDesiredState(device.id, 'running');
          ids[i] = device.id;
        }
      };
      await Promise.all(Array.from({ length: Math.min(STORE_POOL, count) }, createSome));
      return ids;
    },
    owners,
    sockets,
    async connectedCount(devices, allowed) {
      const [leaseOwners, open] = await Promise.all([owners(devices), sockets(devices)]);
      return devices.filter((d) => {
        const owner = leaseOwners.get(d);
        return owner !== undefined && open.get(d) === owner && (!allowed || allowed.includes(owner));
      }).length;
    },
    async conflicts() {
      return Number((await redis.redis.hget(keys.simConflicts, 'total')) ?? 0);
    },
    stop() {
      stopping ??= (async () => {
        await stopAll([...servers.values()]);
        servers.clear();
        await store.close();
        await db.drop();
        await redis.cleanup();
      })();
      return stopping;
    },
  };
}

/** Polls until `check` holds; returns how long it took. Throws with `describe()` on timeout. */
export async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, describe: () => Promise<string> | string = () => ''): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms: ${await describe()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
