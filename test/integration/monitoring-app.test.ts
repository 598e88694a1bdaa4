import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue } from 'bullmq';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHeartbeat } from '../../src/cluster/heartbeat.js';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseGuard } from '../../src/cluster/lease-guard.js';
import { createLeaseStore, type LeaseStore } from '../../src/cluster/lease-store.js';
import { createMetricsAggregate } from '../../src/metrics/aggregate.js';
import { createMonitoringApp, type MonitoringApp } from '../../src/monitoring/app.js';
import type { ClusterSnapshot } from '../../src/monitoring/cluster-state.js';
import { monotonicNow } from '../../src/shared/clock.js';
import { createStore, type Store } from '../../src/store/index.js';
import { waitUntil } from '../../harness/cluster.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The monitoring app in this process, over a real Redis and a real store: the cluster state is
// written by the real heartbeat and lease scripts, the queues are real BullMQ queues.

const USER = 'ops';
const PASSWORD = 'correct-horse-battery-staple';
const FAILURES_PER_MINUTE = 3;
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

let t: TestRedis;
let keys: ClusterKeys;
let leases: LeaseStore;
let db: TestDatabase;
let store: Store;
let deadStore: Store;
const apps: Array<{ monitor: MonitoringApp; server: Server }> = [];
const queues: Queue[] = [];
let base: string;
const devices: string[] = [];

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function get(path: string, options: { auth?: string | null; ip?: string; url?: string } = {}) {
  const headers: Record<string, string> = {};
  const auth = options.auth === undefined ? basic(USER, PASSWORD) : options.auth;
  if (auth) headers.authorization = auth;
  if (options.ip) headers['x-forwarded-for'] = options.ip;
  const res = await fetch(`${options.url ?? base}${path}`, { headers, redirect: 'manual' });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // HTML or Prometheus text
  }
  return { status: res.status, body, headers: res.headers, text };
}

async function serve(storeFor: () => Promise<Store>): Promise<string> {
  const monitor = createMonitoringApp({
    redis: t.redis,
    bullRedis: t.redis.duplicate(),
    keys,
    store: storeFor,
    log,
    auth: { username: USER, password: PASSWORD, failuresPerMinute: FAILURES_PER_MINUTE },
    trustProxy: true,
    production: false,
    queueRefreshMs: 200,
    metrics: createMetricsAggregate({ redis: t.redis, keys }),
  });
  await monitor.start();
  const server = await new Promise<Server>((resolve) => {
    const s = createServer(monitor.app);
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
  apps.push({ monitor, server });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** One real heartbeat: the server's advert as a running server writes it. */
async function advertise(serverId: string, options: { draining?: boolean; ttlMs?: number; capacity?: number } = {}) {
  const heartbeat = createHeartbeat({
    redis: t.redis,
    keys,
    leases,
    guard: createLeaseGuard({ clock: monotonicNow, selfFenceMs: 2000 }),
    clock: monotonicNow,
    log,
    serverId,
    ttlMs: options.ttlMs ?? 60_000,
    intervalMs: 1000,
    advert: () => ({
      bootId: `boot-${serverId}`,
      url: `http://10.0.0.9:${serverId.length}000`,
      region: 'eu-test',
      capacity: options.capacity ?? 10,
      priority: 150,
      draining: options.draining ?? false,
      startedAt: Date.now() - 5000,
      responseTimeMs: 4,
    }),
    onRedisReset: () => undefined,
  });
  await heartbeat.beat();
  heartbeat.stop();
}

async function claim(deviceId: string, serverId: string, ttlMs = 60_000): Promise<number> {
  const result = await leases.claim(deviceId, serverId, ttlMs);
  if (result.outcome !== 'claimed') throw new Error(`claim of ${deviceId} on ${serverId}: ${result.outcome}`);
  return result.token;
}

beforeAll(async () => {
  t = await useTestRedis();
  keys = createClusterKeys(t.prefix);
  leases = createLeaseStore({ redis: t.redis, keys });
  db = await createTestDatabase();
  store = await createStore({ kind: 'postgres', databaseUrl: db.url, poolMax: 2 }, { log });
  await store.migrate();
  // A store nobody answers for: the port is closed, so every call fails at once.
  deadStore = await createStore({ kind: 'postgres', databaseUrl: 'postgres://postgres@127.0.0.1:1/none', poolMax: 1 }, { log });

  const userId = randomUUID();
  for (let i = 0; i < 6; i++) devices.push((await store.createDevice({ userId, deviceName: `d${i}`, connectionMethod: 'qr' })).id);

  // srv-a live with three leases, srv-b draining with one, srv-c left cleanly (only in the
  // store), srv-d died holding a lease that has expired but was not swept yet.
  for (const id of ['srv-a', 'srv-b', 'srv-c', 'srv-d']) {
    await store.registerServer({ id, serverName: `server ${id}`, serverUrl: `http://10.0.0.9/${id}`, serverType: 'vps', region: 'eu-test', maxCapacity: 10, priority: 100 });
  }
  await store.markServerInactive('srv-c');
  await advertise('srv-a');
  await advertise('srv-b', { draining: true });
  await advertise('srv-d', { ttlMs: 400 });
  const tokens = [await claim(devices[0]!, 'srv-a'), await claim(devices[1]!, 'srv-a'), await claim(devices[2]!, 'srv-a')];
  await claim(devices[3]!, 'srv-b');
  await claim(devices[4]!, 'srv-d', 400);
  await leases.setStatus(devices[0]!, 'srv-a', tokens[0]!, 'connected');
  await leases.setStatus(devices[1]!, 'srv-a', tokens[1]!, 'connected');
  await leases.setStatus(devices[2]!, 'srv-a', tokens[2]!, 'qr');
  await waitUntil(async () => (await t.redis.exists(keys.lease(devices[4]!), keys.server('srv-d'))) === 0, 5000);

  const hostile = '</script><script>window.pwned = true</script>';
  await store.appendLeaseEvent({ deviceId: devices[0]!, serverId: 'srv-a', eventType: 'claim', epoch: 1, details: { via: 'placement' } });
  await store.appendLeaseEvent({ deviceId: devices[5]!, serverId: 'srv-d', eventType: 'expire', epoch: 3, details: { sweptBy: 'srv-a' } });
  await store.appendLeaseEvent({ deviceId: devices[3]!, serverId: 'srv-c', eventType: 'drain', epoch: 2, details: { reason: hostile } });
  await store.appendLeaseEvent({ deviceId: devices[2]!, serverId: 'srv-b', eventType: 'rebalance', epoch: 4, details: { reason: 'rebalance' } });
  await store.appendLeaseEvent({ deviceId: devices[1]!, serverId: 'srv-a', eventType: 'release', epoch: 5, details: { reason: 'stop' } });

  for (const name of [`wa-out-${devices[0]}`, `wa-out-${devices[1]}`]) {
    const queue = new Queue(name, { connection: t.redis, prefix: keys.bullPrefix });
    queues.push(queue);
    await queue.add('send', { messageId: randomUUID() });
  }
  base = await serve(async () => store);
});

afterAll(async () => {
  for (const { monitor, server } of apps) {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await monitor.close();
  }
  await Promise.all(queues.map((q) => q.close()));
  await store?.close();
  await deadStore?.close();
  await db?.drop();
  await t?.cleanup();
});

describe('monitoring port', () => {
  it('answers /health without auth', async () => {
    const res = await get('/health', { auth: null });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'ok', redis: 'ok', store: 'ok', queues: 2 });
    expect(Date.parse(res.body.timestamp)).not.toBeNaN();
  });

  it('asks for basic auth everywhere else', async () => {
    for (const path of ['/admin/queues', '/admin/queues/api/queues', '/admin/cluster', '/admin/cluster.json', '/admin/cluster/assets/cluster.js', '/metrics']) {
      const res = await get(path, { auth: null });
      expect(res.status, path).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Basic realm="wafleet monitoring", charset="UTF-8"');
      expect(res.body.error.code).toBe('unauthorized');
    }
    expect((await get('/admin/cluster.json', { auth: basic(USER, 'nope'), ip: '10.9.9.9' })).status).toBe(401);
    expect((await get('/admin/cluster.json', { auth: basic('admin', PASSWORD), ip: '10.9.9.9' })).status).toBe(401);
  });

  it('shows servers with their state, load, capacity, priority, region, heartbeat and response time', async () => {
    const { body } = await get('/admin/cluster.json');
    const snapshot = body as ClusterSnapshot;
    expect(snapshot.servers.map((s) => [s.id, s.state])).toEqual([
      ['srv-a', 'live'],
      ['srv-b', 'draining'],
      ['srv-d', 'down'],
      ['srv-c', 'stopped'],
    ]);
    const a = snapshot.servers[0]!;
    expect(a).toMatchObject({ name: 'server srv-a', load: 3, leases: 3, capacity: 10, priority: 150, region: 'eu-test', draining: false, responseTimeMs: 4 });
    expect(a.heartbeatAgeMs).toBeGreaterThanOrEqual(0);
    expect(Date.parse(a.lastHeartbeatAt!)).not.toBeNaN();
    expect(snapshot.servers[1]).toMatchObject({ draining: true, leases: 1 });
    expect(snapshot.store).toEqual({ available: true, error: null });
  });

  it('shows leases with owner, token, time left and status, filtered by server and status', async () => {
    const all = (await get('/admin/cluster.json')).body as ClusterSnapshot;
    expect(all.leases.total).toBe(5);
    expect(all.leases.byStatus).toEqual({ connected: 2, qr: 1, unknown: 1, expired: 1 });
    const first = all.leases.items.find((l) => l.deviceId === devices[0]);
    expect(first).toMatchObject({ serverId: 'srv-a', token: 1, status: 'connected' });
    expect(first!.ttlMs).toBeGreaterThan(30_000);
    expect(all.leases.items.find((l) => l.deviceId === devices[4])).toEqual({ deviceId: devices[4], serverId: 'srv-d', token: 1, ttlMs: 0, status: 'expired' });

    const onA = (await get('/admin/cluster.json?server=srv-a')).body as ClusterSnapshot;
    expect(onA.leases).toMatchObject({ total: 5, matching: 3 });
    expect(new Set(onA.leases.items.map((l) => l.serverId))).toEqual(new Set(['srv-a']));
    const connectedOnA = (await get('/admin/cluster.json?server=srv-a&status=connected')).body as ClusterSnapshot;
    expect(connectedOnA.leases.items.map((l) => l.deviceId).sort()).toEqual([devices[0], devices[1]].sort());
    const limited = (await get('/admin/cluster.json?server=srv-a&limit=1&status=')).body as ClusterSnapshot;
    expect(limited.leases).toMatchObject({ matching: 3 });
    expect(limited.leases.items).toHaveLength(1);
    expect(limited.filters).toEqual({ server: 'srv-a', status: null, limit: 1 });
  });

  it('lists the latest failovers, drains, rebalances and lost leases, newest first, without routine claims', async () => {
    const { events } = (await get('/admin/cluster.json')).body as ClusterSnapshot;
    expect(events.map((e) => [e.label, e.deviceId, e.serverId, e.token])).toEqual([
      ['rebalance', devices[2], 'srv-b', 4],
      ['drain', devices[3], 'srv-c', 2],
      ['failover', devices[5], 'srv-d', 3],
    ]);
    expect(events[2]!.details).toEqual({ sweptBy: 'srv-a' });
  });

  it('refuses bad filters with 422 and says which', async () => {
    for (const query of ['status=bogus', 'server=../etc', 'limit=0', 'limit=many', 'colour=red', 'server=a&server=b']) {
      const res = await get(`/admin/cluster.json?${query}`);
      expect(res.status, query).toBe(422);
      expect(res.body.error.code).toBe('invalid_query');
      expect(res.body.error.details.length).toBeGreaterThan(0);
    }
    expect((await get('/admin/cluster?status=bogus')).status).toBe(422);
  });

  it('serves the cluster page with its data embedded safely, under a strict content policy', async () => {
    const page = await get('/admin/cluster?server=srv-a');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'; script-src 'self'/);
    expect(page.text).toContain('<script src="/admin/cluster/assets/cluster.js" defer></script>');
    expect(page.text).toContain('href="/admin/queues"');
    // The hostile event detail is in the data island, but cannot close its script element.
    expect(page.text).not.toContain('</script><script>window.pwned');
    const island = /<script id="cluster-data" type="application\/json">(.*?)<\/script>/s.exec(page.text)![1]!;
    const embedded = JSON.parse(island) as ClusterSnapshot;
    expect(embedded.filters.server).toBe('srv-a');
    expect(embedded.events.find((e) => e.type === 'drain')!.details.reason).toBe('</script><script>window.pwned = true</script>');

    const script = await get('/admin/cluster/assets/cluster.js');
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toMatch(/javascript/);
    // Everything is drawn with textContent: nothing read from Redis or the store is parsed as HTML.
    expect(script.text).not.toMatch(/\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write/);
    expect((await get('/admin/cluster/assets/cluster.css')).headers.get('content-type')).toMatch(/^text\/css/);
    for (const escape of ['/admin/cluster/assets/%2e%2e/app.ts', '/admin/cluster/assets/..%2fapp.ts', '/admin/cluster/assets/nothing.js']) {
      expect([403, 404], escape).toContain((await get(escape)).status);
    }
  });

  it('shows every wafleet queue on BullBoard, read-only, and picks up queues created later', async () => {
    const entry = await get('/admin/queues');
    expect(entry.status).toBe(200);
    expect(entry.text).toContain('<base href="/admin/queues/"');
    expect(entry.text).toContain('"miscLinks":[{"text":"Cluster: servers and leases","url":"/admin/cluster"}]');

    const listed = async () => ((await get('/admin/queues/api/queues')).body.queues as Array<{ name: string; readOnlyMode: boolean; description?: string }>);
    const before = await listed();
    expect(before.map((q) => q.name).sort()).toEqual([`wa-out-${devices[0]}`, `wa-out-${devices[1]}`].sort());
    expect(before.every((q) => q.readOnlyMode)).toBe(true);
    expect(before[0]!.description).toMatch(/^Outbound messages of device /);

    // Read-only on the server side too: a hand-made request cannot pause or empty a queue.
    const name = `wa-out-${devices[0]}`;
    const put = (path: string) => fetch(`${base}/admin/queues/api/queues${path}`, { method: 'PUT', headers: { authorization: basic(USER, PASSWORD) } });
    expect((await put(`/${name}/pause`)).status).toBe(405);
    expect((await put(`/${name}/empty`)).status).toBe(405);
    expect((await put('/pause')).status).toBe(200); // pauses every writable queue: none
    expect(await queues[0]!.isPaused()).toBe(false);
    expect(await queues[0]!.count()).toBe(1);

    const later = new Queue('wa-sync-7', { connection: t.redis, prefix: keys.bullPrefix });
    queues.push(later);
    await later.add('apply', { n: 1 });
    await waitUntil(async () => (await listed()).some((q) => q.name === 'wa-sync-7'), 5000);
  });

  it('limits wrong logins per client IP with 429 and Retry-After; right logins are never counted', async () => {
    const ip = '10.1.1.1';
    for (let i = 0; i < FAILURES_PER_MINUTE; i++) expect((await get('/admin/cluster.json', { auth: basic(USER, `guess-${i}`), ip })).status).toBe(401);
    const limited = await get('/admin/cluster.json', { auth: basic(USER, 'guess-x'), ip });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.body.error.code).toBe('rate_limited');
    // Once limited, the right password gets no answer a guesser could tell apart.
    expect((await get('/admin/cluster.json', { ip })).status).toBe(429);
    // The count is per IP, and lives in Redis under the cluster's prefix.
    expect((await get('/admin/cluster.json', { ip: '10.1.1.2' })).status).toBe(200);
    expect(await t.redis.pttl(keys.rateLimit('monitor-login', ip))).toBeGreaterThan(0);

    const busyIp = '10.1.1.3';
    for (let i = 0; i < FAILURES_PER_MINUTE * 4; i++) expect((await get('/admin/queues/api/queues', { ip: busyIp })).status).toBe(200);
    expect(await t.redis.exists(keys.rateLimit('monitor-login', busyIp))).toBe(0);
  });

  it('serves the cluster metrics behind the same login', async () => {
    const res = await get('/metrics');
    expect(res.status).toBe(200);
    expect(res.text).toContain('wafleet_aggregate_servers');
  });

  it('keeps working without the store: Redis state, and the store named as unavailable', async () => {
    const url = await serve(async () => deadStore);
    const health = await get('/health', { auth: null, url });
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'degraded', redis: 'ok', store: 'unavailable' });
    const snapshot = (await get('/admin/cluster.json', { url })).body as ClusterSnapshot;
    expect(snapshot.store.available).toBe(false);
    expect(snapshot.store.error).toBeTruthy();
    expect(snapshot.events).toEqual([]);
    // Without the store's records a server that left cleanly is unknown, the rest is Redis's.
    expect(snapshot.servers.map((s) => [s.id, s.state])).toEqual([
      ['srv-a', 'live'],
      ['srv-b', 'draining'],
      ['srv-d', 'down'],
    ]);
    expect(snapshot.leases.total).toBe(5);
  });
});
