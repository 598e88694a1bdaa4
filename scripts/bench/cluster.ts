import { startTestCluster, type TestCluster } from '../../harness/cluster.js';
import { sleep } from '../../harness/bench/probe.js';
import type { BenchContext } from './context.js';

// Real server processes for the multi-process scenarios, on the harness's cluster (its own key
// prefix and database, simulated WhatsApp), but with production lease timings: the figures are
// about a cluster as deployed, not as the tests shorten it.

/** Server settings of the benchmarks: the defaults, except what only makes set-up faster. */
export const BENCH_SERVER_ENV: Record<string, string> = {
  LEASE_TTL_MS: '10000',
  SWEEP_INTERVAL_MS: '1000',
  SIM_CONNECT_LATENCY_MS: '50',
  DEVICE_RECONNECT_BASE_MS: '1000',
  DEVICE_RECONNECT_CAP_MS: '60000',
  STORE_HEALTH_INTERVAL_MS: '5000',
  SESSION_SNAPSHOT_DELAY_MS: '5000',
  LOG_LEVEL: 'info',
  // Set-up only: new devices are placed within a second and link after one short QR code.
  RECONCILE_INTERVAL_MS: '1000',
  SIM_QR_INTERVAL_MS: '100',
  // Nothing moves but what a scenario moves.
  REBALANCE_MIN_HOLD_MS: '3600000',
  SERVER_MAX_CAPACITY: '20000',
  INTERNAL_API_KEY: 'bench-internal-key-0123456789abcdef0123',
};

/** Warnings every server logs once on a fresh key prefix: not trouble. */
const EXPECTED_WARNINGS = new Set(['fence counters re-seeded from the store']);

/** A cluster whose processes, keys and database go when the scenario ends or the bench is stopped. */
export async function startBenchCluster(ctx: BenchContext, label: string): Promise<TestCluster> {
  const cluster = await startTestCluster({ redis: ctx.redisUrl, prefixLabel: `b-${label}-` });
  ctx.defer(() => cluster.stop());
  return cluster;
}

export async function startServers(cluster: TestCluster, ids: readonly string[], env: Record<string, string> = {}): Promise<void> {
  await Promise.all(ids.map((id) => cluster.start(id, { ...BENCH_SERVER_ENV, ...env })));
}

/**
 * What the servers warned about so far (pino lines at warn or above), each message once with how
 * often and where, most frequent first, e.g. `socket failed to open x120 (fo-2 x80, fo-3 x40:
 * cannot connect to store ...)`, and any server that exited: the first place to look when a
 * figure is off.
 */
export function serverWarnings(cluster: TestCluster, limit = 6, expectedExits: readonly string[] = []): string[] {
  const seen = new Map<string, { count: number; by: Map<string, number>; example: string }>();
  const exited: string[] = [];
  for (const [serverId, server] of cluster.servers) {
    const ended = server.child.exitCode !== null || server.child.signalCode !== null;
    if (ended && !expectedExits.includes(serverId)) exited.push(`${serverId} exited (${server.child.exitCode ?? server.child.signalCode})`);
    for (const line of server.output().split('\n')) {
      if (!line.startsWith('{')) continue;
      let entry: { level?: number; msg?: string; err?: { message?: string } };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue;
      }
      if ((entry.level ?? 0) < 40 || EXPECTED_WARNINGS.has(entry.msg ?? '')) continue;
      const key = entry.msg ?? '(no message)';
      const known = seen.get(key) ?? { count: 0, by: new Map<string, number>(), example: entry.err?.message ?? '' };
      known.count += 1;
      known.by.set(serverId, (known.by.get(serverId) ?? 0) + 1);
      seen.set(key, known);
    }
  }
  const warnings = [...seen]
    .sort((a, b) => b[1].count - a[1].count)
    .slice(0, limit)
    .map(([msg, { count, by, example }]) => {
      const where = [...by].map(([id, n]) => `${id} x${n}`).join(', ');
      return `${msg} x${count} (${where}${example ? `: ${example.slice(0, 120)}` : ''})`;
    });
  return [...exited, ...warnings];
}

/**
 * A note for the results when the servers warned about anything, or one exited that the scenario
 * did not stop (call before cluster.stop()).
 */
export function warningsNote(cluster: TestCluster, label: string, expectedExits: readonly string[] = []): string[] {
  const warnings = serverWarnings(cluster, 6, expectedExits);
  return warnings.length > 0 ? [`${label}: servers warned: ${warnings.join('; ')}`] : [];
}

/** Waits until every device is connected where its lease is (on `servers`, when given). */
export async function waitAllConnected(
  ctx: BenchContext,
  cluster: TestCluster,
  devices: readonly string[],
  timeoutMs: number,
  servers?: readonly string[],
): Promise<void> {
  const started = Date.now();
  let lastReport = started;
  for (;;) {
    const connected = await cluster.connectedCount(devices, servers);
    if (connected === devices.length) return;
    if (Date.now() - started > timeoutMs) {
      throw new Error(`only ${connected}/${devices.length} devices connected after ${timeoutMs} ms; servers warned: ${serverWarnings(cluster).join('; ') || 'nothing'}`);
    }
    if (Date.now() - lastReport > 10_000) {
      const warnings = serverWarnings(cluster, 2);
      ctx.progress(`${connected}/${devices.length} connected${warnings.length > 0 ? `; servers warned: ${warnings.join('; ')}` : ''}`);
      lastReport = Date.now();
    }
    await sleep(250);
  }
}

/**
 * When each device was reported connected on one of `servers` (ms, wall clock): the `updatedAt`
 * of its status, which its new owner writes (fenced) the moment the socket opens. Polling only
 * decides when to stop looking, so its period does not blur the times.
 */
export async function connectedAtOn(
  cluster: TestCluster,
  devices: readonly string[],
  servers: readonly string[],
  timeoutMs: number,
): Promise<Map<string, number>> {
  const at = new Map<string, number>();
  const started = Date.now();
  let pending = [...devices];
  while (pending.length > 0) {
    if (Date.now() - started > timeoutMs) {
      throw new Error(`${pending.length}/${devices.length} devices not connected elsewhere after ${timeoutMs} ms; servers warned: ${serverWarnings(cluster).join('; ') || 'nothing'}`);
    }
    await sleep(200);
    const pipeline = cluster.redis.redis.pipeline();
    for (const deviceId of pending) pipeline.hmget(cluster.keys.deviceStatus(deviceId), 'status', 'serverId', 'updatedAt');
    const replies = (await pipeline.exec()) ?? [];
    pending = pending.filter((deviceId, i) => {
      const [status, serverId, updatedAt] = (replies[i]?.[1] ?? []) as Array<string | null>;
      if (status !== 'connected' || !serverId || !servers.includes(serverId)) return true;
      at.set(deviceId, Number(updatedAt));
      return false;
    });
  }
  return at;
}

const WAVE_PER_SERVER = 250;

/**
 * Adds `count` devices and waits until all of them (and `already`) are connected, in waves of at
 * most 250 per server: a new device's first socket reads the store (its session, how it links) through a
 * pool of STORE_POOL_MAX connections, and thousands at once would wait past the pool's timeout and
 * back off for minutes. An operator onboarding thousands would pace it too; only set-up is paced.
 */
export async function addConnected(ctx: BenchContext, cluster: TestCluster, count: number, servers: number, already: readonly string[] = []): Promise<string[]> {
  const wave = WAVE_PER_SERVER * servers;
  const devices = [...already];
  for (let added = 0; added < count; added += wave) {
    devices.push(...(await cluster.addDevices(Math.min(wave, count - added))));
    await waitAllConnected(ctx, cluster, devices, 60_000 + wave * 40);
  }
  return devices.slice(already.length);
}

/** Devices each server holds, by lease. */
export async function devicesBy(cluster: TestCluster, devices: readonly string[]): Promise<Map<string, string[]>> {
  const by = new Map<string, string[]>();
  for (const [deviceId, serverId] of await cluster.owners(devices)) by.set(serverId, [...(by.get(serverId) ?? []), deviceId]);
  return by;
}
