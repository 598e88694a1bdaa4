// `npm run status`: the cluster at a glance, read from Redis: servers and their leases as a table,
// totals, and a health verdict in the exit code. `npm run status -- --device <id>`: one device's
// owner, fencing token, TTL left and recent lease events. `--json` for scripts.
//
// Exit codes: 0 healthy; 1 unhealthy (no live server takes devices, or a lease is overdue: see
// scripts/lib/status.ts) or Redis unreachable; 2 usage or configuration error; 3 unknown device.
import { createClusterKeys } from '../src/cluster/keys.js';
import { loadToolConfigFromProcess, type ToolConfig } from '../src/config/tool.js';
import { ConfigError } from '../src/shared/errors.js';
import { createLogger } from '../src/shared/logger.js';
import { connectRedis, describeRedisTarget, duplicateRedis, type RedisClient } from '../src/shared/redis.js';
import { createStore, type Store } from '../src/store/index.js';
import { parseToolArgs, usageExit } from './lib/cli.js';
import { formatClusterStatus, formatDeviceStatus, readClusterStatus, readDeviceStatus } from './lib/status.js';

const USAGE = `usage: npm run status [-- --json] [-- --device <deviceId> [--json]]

  (no option)         servers and leases as a table; exit 1 when the cluster is unhealthy
  --device <id>       one device: owner, fencing token, TTL left, recent lease events
  --json              the same as JSON

Reads REDIS_URL (or UPSTASH_REDIS_URL), WAFLEET_KEY_PREFIX, LEASE_TTL_MS and the store's
variables from the environment or .env, like the servers.`;

/** A tool's query must not hang on a store that does not answer. */
const STORE_TIMEOUT_MS = 3000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const usageError = (message: string) => usageExit('status', USAGE, message);

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${STORE_TIMEOUT_MS / 1000} s`)), STORE_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

const args = parseToolArgs('status', USAGE, { device: { type: 'string' }, json: { type: 'boolean' } });
if (args.device !== undefined && !UUID.test(args.device)) usageError(`--device needs a device id (a UUID), not ${JSON.stringify(args.device)}`);

let config: ToolConfig;
try {
  config = loadToolConfigFromProcess();
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`wafleet status: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}

// Nothing is logged to stdout: it carries the table (or the JSON).
const log = createLogger({ level: 'silent' });
const keys = createClusterKeys(config.redis.keyPrefix);
let redis: RedisClient;
try {
  redis = await connectRedis({ target: config.redis.target, log, connectionName: 'wafleet:status', connectTimeoutMs: 3000, extra: { maxRetriesPerRequest: 1 } });
} catch (err) {
  process.stderr.write(`wafleet status: ${(err as Error).message}\n`);
  process.exit(1);
}

let storeOpened: Promise<Store> | undefined;
const store = () => {
  storeOpened ??= withTimeout(
    createStore(config.store, { log }).then(async (s) => {
      await s.ping();
      return s;
    }),
    `the store (${config.store.kind})`,
  );
  return storeOpened;
};
let bull: RedisClient | undefined;
const bullRedis = () => (bull ??= duplicateRedis(redis, { maxRetriesPerRequest: null }));

const deps = { redis, keys, store, log, ttlMs: config.lease.ttlMs, bullRedis };
const where = `${describeRedisTarget(config.redis.target)}, keys {${keys.prefix}}`;
let exitCode = 0;
try {
  if (args.device !== undefined) {
    const device = await readDeviceStatus(deps, args.device);
    const cluster = await readClusterStatus(deps);
    console.log(args.json ? JSON.stringify({ ...device, cluster: { healthy: cluster.healthy, problems: cluster.problems } }, null, 2) : formatDeviceStatus(device));
    if (!args.json && !cluster.healthy) console.log(`\nUNHEALTHY cluster: ${cluster.problems.join('; ')}`);
    exitCode = !device.known ? 3 : cluster.healthy ? 0 : 1;
  } else {
    const status = await readClusterStatus(deps);
    console.log(args.json ? JSON.stringify(status, null, 2) : formatClusterStatus(status, where));
    exitCode = status.healthy ? 0 : 1;
  }
} catch (err) {
  process.stderr.write(`wafleet status: could not read the cluster: ${(err as Error).message}\n`);
  exitCode = 1;
} finally {
  await Promise.allSettled([storeOpened?.then((s) => s.close()), redis.quit(), bull?.quit()]);
}
process.exit(exitCode);
