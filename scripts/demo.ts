// `npm run demo`: a failover to watch. Starts a throwaway cluster (Redis if none answers, the
// embedded store in memory, three servers with the simulated WhatsApp, and the monitor), adds a
// few hundred devices through the HTTP API, SIGKILLs the busiest server and prints its devices
// moving to the others as it happens. The cluster then stays up for BullBoard, the cluster page,
// /metrics and `npm run status` until Ctrl-C (or, with --exit, stops at once); either way every
// process it started and every key under its own prefix are removed.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { Redis } from 'ioredis';
import { createClusterKeys } from '../src/cluster/keys.js';
import { parseLeaseValue } from '../src/cluster/lease-store.js';
import { loadToolConfigFromProcess } from '../src/config/tool.js';
import { CLUSTER_PAGE_PATH, QUEUES_PATH } from '../src/monitoring/cluster-page.js';
import { ConfigError } from '../src/shared/errors.js';
import { redactUrl } from '../src/shared/redact.js';
import { parseToolArgs, usageExit } from './lib/cli.js';
import { freePort, redisAnswers, startEphemeralRedis, type LocalRedis } from '../harness/local-redis.js';

const USAGE = `usage: npm run demo [-- --devices <n>] [--ttl-ms <ms>] [--exit]

  --devices <n>   devices to add (default 300, at most 2000)
  --ttl-ms <ms>   lease TTL of the demo cluster (default 10000, as in production)
  --exit          stop and clean up as soon as the failover has recovered (for tests and CI)

Uses the Redis at REDIS_URL when one answers (under a key prefix of its own), else starts one.`;

const ROOT = resolve(import.meta.dirname, '..');
const SERVER_IDS = ['demo-1', 'demo-2', 'demo-3'];
const START_TIMEOUT_MS = 90_000;
const POLL_MS = 200;
/** API calls in flight while adding devices. */
const API_CONCURRENCY = 8;

const usageError = (message: string) => usageExit('demo', USAGE, message);
const values = parseToolArgs('demo', USAGE, { devices: { type: 'string' }, 'ttl-ms': { type: 'string' }, exit: { type: 'boolean' } });
const deviceCount = Number(values.devices ?? 300);
const ttlMs = Number(values['ttl-ms'] ?? 10_000);
if (!Number.isInteger(deviceCount) || deviceCount < 1 || deviceCount > 2000) usageError('--devices must be a whole number from 1 to 2000');
if (!Number.isInteger(ttlMs) || ttlMs < 1000 || ttlMs > 120_000) usageError('--ttl-ms must be a whole number of milliseconds from 1000 to 120000');

let redisUrl: string | undefined;
try {
  // The demo's servers get REDIS_URL: under Sentinel or Cluster it runs on a Redis of its own.
  const { target } = loadToolConfigFromProcess().redis;
  redisUrl = target.mode === 'standalone' ? target.url : undefined;
} catch (err) {
  if (err instanceof ConfigError) usageError(err.message);
  throw err;
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const say = (line: string) => console.log(line);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- processes ----

interface Child {
  name: string;
  child: ChildProcess;
  exited: Promise<number | string>;
  ended: boolean;
  logFile: string;
}

const children: Child[] = [];

function startChild(name: string, entry: string, env: Record<string, string>): Child {
  mkdirSync(LOG_DIR, { recursive: true });
  const logFile = resolve(LOG_DIR, `${name}.log`);
  const out = createWriteStream(logFile);
  // `node --import tsx`: one process per app, so a signal reaches the app itself. Each in a
  // process group of its own: Ctrl-C reaches the demo alone, which stops the apps in order
  // (servers drain while the store host still runs).
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout.pipe(out, { end: false });
  child.stderr.pipe(out, { end: false });
  const entryState: Child = { name, child, logFile, ended: false, exited: Promise.resolve(0) };
  entryState.exited = new Promise((done) => {
    child.once('exit', (code, signal) => {
      entryState.ended = true;
      out.end();
      done(code ?? signal ?? 'unknown');
    });
  });
  children.push(entryState);
  return entryState;
}

async function stopChild(c: Child, graceMs: number): Promise<void> {
  if (c.ended) return;
  c.child.kill('SIGTERM');
  const done = await Promise.race([c.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done && !c.ended) {
    c.child.kill('SIGKILL');
    await c.exited;
  }
}

async function waitFor(what: string, c: Child, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (c.ended) throw new Error(`${what} exited before it was up; see ${c.logFile}`);
    if (await check().catch(() => false)) return;
    await sleep(150);
  }
  throw new Error(`${what} was not up within ${START_TIMEOUT_MS / 1000} s; see ${c.logFile}`);
}

const portOpen = (port: number) =>
  new Promise<boolean>((done) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });

async function httpOk(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  return res.ok;
}

// ---- the run ----

const prefix = `demo${randomBytes(4).toString('hex')}`;
/** One folder per run, so two demos (or a demo and its test) never write the same log files. */
const LOG_DIR = resolve(ROOT, 'logs/demo', prefix);
const keys = createClusterKeys(prefix);
const apiKey = randomBytes(24).toString('base64url');
const adminPassword = randomBytes(18).toString('base64url');
let ownRedis: LocalRedis | undefined;
let redis: Redis | undefined;
const servers = new Map<string, { child: Child; port: number }>();

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    say('\nStopping the demo cluster ...');
    // Servers drain (and the monitor stops) before the store host goes, so their last records land.
    const apps = children.filter((c) => c.name !== 'store');
    await Promise.all(apps.map((c) => stopChild(c, 20_000)));
    await Promise.all(children.filter((c) => c.name === 'store').map((c) => stopChild(c, 10_000)));
    if (redis) {
      let removed = 0;
      let cursor = '0';
      try {
        do {
          const [next, found] = await redis.scan(cursor, 'MATCH', `*{${prefix}}*`, 'COUNT', 1000);
          cursor = next;
          if (found.length > 0) removed += await redis.unlink(...found);
        } while (cursor !== '0');
        say(`Removed ${removed} Redis keys under {${prefix}}.`);
      } catch (err) {
        say(`Could not remove the keys under {${prefix}}: ${(err as Error).message}`);
      }
      redis.disconnect();
    }
    await ownRedis?.stop();
    say('Demo stopped; every process it started has exited.');
  })();
  return cleaning;
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    void cleanup().then(() => process.exit(0));
  });
}

async function api(port: number, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  for (let attempt = 1; ; attempt++) {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(15_000),
    });
    if (res.ok) return (await res.json()) as Record<string, unknown>;
    // A demo on a busy machine may meet a limit or a slow store; anything else is a bug to show.
    if ((res.status === 429 || res.status >= 500) && attempt < 5) {
      await sleep(500 * attempt);
      continue;
    }
    throw new Error(`${method} ${path} answered ${res.status}: ${await res.text()}`);
  }
}

/** deviceId -> server whose socket is connected under the device's current lease. */
async function connectedOn(devices: readonly string[]): Promise<Map<string, string>> {
  const pipeline = redis!.pipeline();
  for (const id of devices) pipeline.get(keys.lease(id)).hmget(keys.deviceStatus(id), 'status', 'serverId', 'token');
  const results = (await pipeline.exec()) ?? [];
  const connected = new Map<string, string>();
  devices.forEach((id, i) => {
    const value = results[i * 2]?.[1] as string | null;
    const [status, serverId, token] = (results[i * 2 + 1]?.[1] ?? []) as Array<string | null>;
    const lease = value ? parseLeaseValue(value) : null;
    if (lease && status === 'connected' && serverId === lease.serverId && Number(token) === lease.token) connected.set(id, lease.serverId);
  });
  return connected;
}

function countBy(map: Map<string, string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const server of map.values()) counts.set(server, (counts.get(server) ?? 0) + 1);
  return counts;
}

async function main(): Promise<void> {
  const started = Date.now();
  const configured = redisUrl ? new URL(redisUrl) : null;
  if (redisUrl && configured && (await redisAnswers(configured.hostname, Number(configured.port || 6379)))) {
    say(`Redis: ${redactUrl(redisUrl)} (keys under {${prefix}}, removed at the end)`);
  } else {
    ownRedis = await startEphemeralRedis(await freePort());
    const why = redisUrl ? `none answered at ${redactUrl(redisUrl)}` : 'Sentinel/Cluster is configured, and the demo runs on a standalone one';
    redisUrl = `redis://127.0.0.1:${ownRedis.port}`;
    say(`Redis: ${why}; started one at ${redisUrl} for the demo`);
  }
  redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });

  const pglitePort = await freePort();
  const common = {
    REDIS_URL: redisUrl,
    WAFLEET_KEY_PREFIX: prefix,
    STORE: 'pglite',
    PGLITE_DIR: 'memory://',
    PGLITE_HOST: '127.0.0.1',
    PGLITE_PORT: String(pglitePort),
    LEASE_TTL_MS: String(ttlMs),
    LOG_LEVEL: 'info',
    NODE_ENV: 'development',
  };
  const store = startChild('store', 'scripts/store-host.ts', common);
  await waitFor('the store host', store, () => portOpen(pglitePort));
  say(`Store: embedded PGlite in memory, served on 127.0.0.1:${pglitePort}`);

  const env = {
    ...common,
    PGLITE_HOST_MODE: 'client',
    DEVICE_DRIVER: 'simulated',
    // The simulated phone scans the first QR code at once, so new devices link in a moment.
    SIM_QR_INTERVAL_MS: '200',
    INTERNAL_API_KEY: apiKey,
    // The demo adds hundreds of devices through the API in a few seconds.
    RATE_LIMIT_PER_MINUTE: '100000',
    RATE_LIMIT_IP_PER_MINUTE: '100000',
    SERVER_MAX_CAPACITY: String(Math.max(500, deviceCount)),
    SHUTDOWN_TIMEOUT_MS: '15000',
  };
  for (const id of SERVER_IDS) {
    const port = await freePort();
    const child = startChild(id, 'src/main.ts', { ...env, SERVER_ID: id, PORT: String(port), SERVER_URL: `http://127.0.0.1:${port}`, MONITORING_PORT: String(await freePort()) });
    servers.set(id, { child, port });
  }
  for (const [id, { child, port }] of servers) {
    await waitFor(id, child, () => httpOk(`http://127.0.0.1:${port}/health`));
    say(`Server ${id}: http://127.0.0.1:${port} (pid ${child.child.pid}; log ${child.logFile})`);
  }

  let monitorUrl: string | null = null;
  if (existsSync(resolve(ROOT, 'src/monitor.ts'))) {
    const port = await freePort();
    const monitor = startChild('monitor', 'src/monitor.ts', { ...common, PGLITE_HOST_MODE: 'client', MONITORING_PORT: String(port), ADMIN_USERNAME: 'admin', ADMIN_PASSWORD: adminPassword });
    await waitFor('the monitor', monitor, () => portOpen(port));
    monitorUrl = `http://127.0.0.1:${port}`;
    say(`Monitor: ${monitorUrl} (pid ${monitor.child.pid}; log ${monitor.logFile})`);
  }

  // Devices go in through the HTTP API, spread over the servers: any server answers any call.
  say(`\nAdding ${deviceCount} devices through the HTTP API ...`);
  const ports = [...servers.values()].map((s) => s.port);
  const userId = randomUUID();
  const devices: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(API_CONCURRENCY, deviceCount) }, async () => {
      for (let i = next++; i < deviceCount; i = next++) {
        const port = ports[i % ports.length]!;
        const device = await api(port, 'POST', '/api/devices', { userId, name: `demo-device-${i + 1}` });
        await api(port, 'POST', `/api/devices/${String(device.id)}/connect`);
        devices.push(String(device.id));
      }
    }),
  );

  let connected = await connectedOn(devices);
  let lastReport = 0;
  const connectDeadline = Date.now() + START_TIMEOUT_MS + deviceCount * 100;
  while (connected.size < devices.length) {
    if (Date.now() > connectDeadline) throw new Error(`only ${connected.size}/${devices.length} devices connected; see ${LOG_DIR}`);
    if (Date.now() - lastReport >= 1000) {
      say(`  ${connected.size}/${devices.length} connected`);
      lastReport = Date.now();
    }
    await sleep(POLL_MS);
    connected = await connectedOn(devices);
  }
  const spread = countBy(connected);
  say(`All ${devices.length} devices connected: ${SERVER_IDS.map((id) => `${id} ${spread.get(id) ?? 0}`).join(', ')}`);

  // The busiest server dies without a word: no drain, its leases just stop being renewed.
  const victim = [...spread].sort((a, b) => b[1] - a[1])[0]![0];
  const moving = devices.filter((d) => connected.get(d) === victim);
  const survivors = SERVER_IDS.filter((id) => id !== victim);
  const victimProcess = servers.get(victim)!.child;
  say(`\nSIGKILL ${victim} (pid ${victimProcess.child.pid}), holding ${moving.length} devices. Lease TTL ${secs(ttlMs)}: its leases run out`);
  say(`${secs(ttlMs)} after its last renewal, then the survivors' sweeps place the devices on ${survivors.join(' and ')}.`);
  victimProcess.child.kill('SIGKILL');
  const killedAt = Date.now();
  await victimProcess.exited;
  const lastRenewal = Number((await redis.hget(keys.server(victim), 'heartbeatAt')) ?? killedAt);

  let moved = 0;
  let firstMovedAt: number | null = null;
  lastReport = 0;
  const recoverDeadline = killedAt + ttlMs * 6 + 30_000;
  for (;;) {
    const now = await connectedOn(moving);
    const count = [...now.values()].filter((server) => server !== victim).length;
    const at = Date.now() - killedAt;
    if (count > 0 && firstMovedAt === null) {
      firstMovedAt = at;
      say(`  +${secs(at)}  first device reconnected elsewhere`);
    }
    if (count !== moved || Date.now() - lastReport >= 1000) {
      say(`  +${secs(at)}  ${count}/${moving.length} moved`);
      moved = count;
      lastReport = Date.now();
    }
    if (count === moving.length) {
      const recoveredAt = Date.now();
      const where = countBy(new Map([...now].filter(([, server]) => server !== victim)));
      const sinceRenewal = recoveredAt - lastRenewal;
      say(
        `\nRecovered: ${moving.length} devices moved from ${victim} to ${[...where].map(([id, n]) => `${id} (${n})`).join(', ')} ` +
          `in ${secs(recoveredAt - killedAt)} after the kill, ${secs(sinceRenewal)} after its last renewal ` +
          `(${(sinceRenewal / ttlMs).toFixed(2)} x TTL; target TTL + 1 s = ${secs(ttlMs + 1000)}).`,
      );
      break;
    }
    if (Date.now() > recoverDeadline) throw new Error(`only ${count}/${moving.length} devices moved within ${secs(recoverDeadline - killedAt)}; see ${LOG_DIR}`);
    await sleep(POLL_MS);
  }

  const [first] = [...servers].filter(([id]) => id !== victim);
  const envLine = `REDIS_URL=${redisUrl} WAFLEET_KEY_PREFIX=${prefix} LEASE_TTL_MS=${ttlMs} PGLITE_PORT=${pglitePort}`;
  say('\nWatch it:');
  if (monitorUrl) {
    say(`  BullBoard       ${monitorUrl}${QUEUES_PATH}   (user admin, password ${adminPassword})`);
    say(`  cluster page    ${monitorUrl}${CLUSTER_PAGE_PATH}`);
    say(`  all metrics     curl -u admin:${adminPassword} ${monitorUrl}/metrics`);
  }
  say(`  one server      curl http://127.0.0.1:${first![1].port}/metrics`);
  say(`  status          ${envLine} npm run status`);
  say(`  API key         ${apiKey}`);
  say(`  logs            ${LOG_DIR}/`);
  say(`(set up in ${secs(Date.now() - started)})`);

  if (values.exit) {
    await cleanup();
    return;
  }
  say('\nThe cluster keeps running; Ctrl-C stops it and removes everything the demo made.');
  await new Promise(() => undefined);
}

main().then(
  () => process.exit(0),
  async (err: Error) => {
    process.stderr.write(`\nwafleet demo: ${err.message}\n`);
    await cleanup();
    process.exit(1);
  },
);
