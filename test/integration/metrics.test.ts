import parsePrometheusTextFormat, { type PrometheusFamily } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetricsAggregate } from '../../src/metrics/aggregate.js';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';
import { startTcpProxy } from '../../harness/tcp-proxy.js';

// GET /metrics on real server processes: the text parses as Prometheus's format, the documented
// families are there, and the lease, failover and drain counters move as the cluster does. The
// same run checks the log lines the seed's operators know (`Device assigned to server`, ...).

const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
const API_KEY = 'metrics-test-internal-key-0123456789';
const DEVICES = 60;
const SERVERS = ['mx-a', 'mx-b', 'mx-c'];

/** The families README.md documents; each server exposes every one of them from the start. */
const DOCUMENTED = [
  'wafleet_leases_held',
  'wafleet_lease_renewal_seconds',
  'wafleet_lease_renewals_lost_total',
  'wafleet_heartbeat_failures_total',
  'wafleet_lease_claims_total',
  'wafleet_lease_claim_seconds',
  'wafleet_failovers_total',
  'wafleet_drains_total',
  'wafleet_lease_releases_total',
  'wafleet_self_fence_total',
  'wafleet_clock_steps_total',
  'wafleet_self_fenced',
  'wafleet_draining',
  'wafleet_device_sockets',
  'wafleet_queue_jobs',
  'wafleet_queue_jobs_processed_total',
  'wafleet_messages_sent_total',
  'wafleet_messages_failed_total',
  'wafleet_events_stale_total',
  'wafleet_store_sync_lag_seconds',
  'wafleet_process_cpu_seconds_total',
];

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

type Families = Map<string, PrometheusFamily>;

function parse(text: string): Families {
  return new Map(parsePrometheusTextFormat(text).map((family) => [family.name, family]));
}

/** Sum of a counter's or gauge's samples whose labels include `match`. */
function total(families: Families, name: string, match: Record<string, string> = {}): number {
  const family = families.get(name);
  if (!family) throw new Error(`no metric family ${name}`);
  return family.metrics
    .filter((m) => Object.entries(match).every(([k, v]) => m.labels?.[k] === v))
    .reduce((sum, m) => sum + Number('value' in m ? m.value : m.count), 0);
}

/**
 * Observations in a one-server histogram. The parser flattens a labelled histogram (every
 * series carries `server`) into its buckets and drops the labelled _count, so read `+Inf`.
 */
function histogramCount(families: Families, name: string): number {
  const sample = families.get(name)?.metrics[0];
  if (!sample || !('buckets' in sample)) throw new Error(`no histogram ${name}`);
  return Number(sample.buckets['+Inf']);
}

/** The server's pino lines (JSON), parsed. */
function logLines(serverId: string): Array<Record<string, unknown>> {
  return cluster.servers
    .get(serverId)!
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const logged = (serverId: string, message: string, fields: Record<string, unknown> = {}) =>
  logLines(serverId).filter((l) => String(l.msg).startsWith(message) && Object.entries(fields).every(([k, v]) => l[k] === v));

async function scrape(serverId: string, from: TestCluster = cluster): Promise<{ families: Families; contentType: string }> {
  const res = await fetch(`http://127.0.0.1:${from.servers.get(serverId)!.port}/metrics`);
  expect(res.status).toBe(200);
  return { families: parse(await res.text()), contentType: res.headers.get('content-type') ?? '' };
}

async function scrapeAll(ids: readonly string[]): Promise<Map<string, Families>> {
  return new Map(await Promise.all(ids.map(async (id) => [id, (await scrape(id)).families] as const)));
}

const sumOver = (scrapes: Map<string, Families>, name: string, match?: Record<string, string>) =>
  [...scrapes.values()].reduce((sum, families) => sum + total(families, name, match), 0);

describe('GET /metrics', () => {
  it('exposes the documented families, and its counters follow a kill and a drain', async () => {
    await Promise.all(SERVERS.map((id) => cluster.start(id, { INTERNAL_API_KEY: API_KEY })));
    const devices = await cluster.addDevices(DEVICES);
    await waitUntil(async () => (await cluster.connectedCount(devices)) === DEVICES, 60_000, async () => `${await cluster.connectedCount(devices)}/${DEVICES} connected`);

    // Every family is there, typed, without a key, and the text is Prometheus's format.
    const { families, contentType } = await scrape('mx-a');
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const name of DOCUMENTED) expect(families.has(name), name).toBe(true);
    expect(families.get('wafleet_lease_renewal_seconds')!.type).toBe('HISTOGRAM');
    expect(families.get('wafleet_lease_claims_total')!.type).toBe('COUNTER');
    expect(families.get('wafleet_leases_held')!.metrics[0]!.labels).toEqual({ server: 'mx-a' });

    // The gauges agree with Redis: every lease and every connected socket is counted once.
    let before = await scrapeAll(SERVERS);
    expect(sumOver(before, 'wafleet_leases_held')).toBe(DEVICES);
    await waitUntil(async () => sumOver(await scrapeAll(SERVERS), 'wafleet_device_sockets', { status: 'connected' }) === DEVICES, 10_000);
    before = await scrapeAll(SERVERS);
    expect(sumOver(before, 'wafleet_lease_claims_total', { outcome: 'claimed' })).toBeGreaterThanOrEqual(DEVICES);
    for (const id of SERVERS) {
      expect(histogramCount(before.get(id)!, 'wafleet_lease_renewal_seconds')).toBeGreaterThan(0);
      expect(histogramCount(before.get(id)!, 'wafleet_lease_claim_seconds')).toBeGreaterThan(0);
    }
    const owners = await cluster.owners(devices);
    for (const id of SERVERS) {
      expect(total(before.get(id)!, 'wafleet_leases_held')).toBe(devices.filter((d) => owners.get(d) === id).length);
    }

    // The monitoring port's aggregate: every live server, each series keeping its server label.
    const aggregate = createMetricsAggregate({ redis: cluster.redis.redis, keys: cluster.keys });
    await waitUntil(async () => {
      const all = parse(await aggregate.text());
      return total(all, 'wafleet_aggregate_servers') === 3 && total(all, 'wafleet_leases_held') === DEVICES;
    }, TTL * 3);
    expect(new Set(parse(await aggregate.text()).get('wafleet_leases_held')!.metrics.map((m) => m.labels?.server))).toEqual(new Set(SERVERS));

    // SIGKILL one server: the survivors' sweeps count each of its expired leases once, the
    // survivors claim each of its devices once, and they end up holding every lease.
    const victim = 'mx-a';
    const survivors = SERVERS.filter((id) => id !== victim);
    const victimDevices = devices.filter((d) => owners.get(d) === victim);
    expect(victimDevices.length).toBeGreaterThan(0);
    const survivorsBefore = new Map(survivors.map((id) => [id, before.get(id)!]));
    cluster.servers.get(victim)!.signal('SIGKILL');
    await cluster.servers.get(victim)!.exited;
    await waitUntil(
      async () => (await cluster.connectedCount(victimDevices, survivors)) === victimDevices.length,
      TTL * 10,
      async () => `${await cluster.connectedCount(victimDevices, survivors)}/${victimDevices.length} moved`,
    );
    const after = await scrapeAll(survivors);
    const moved = (name: string, match?: Record<string, string>) => sumOver(after, name, match) - sumOver(survivorsBefore, name, match);
    expect(moved('wafleet_failovers_total')).toBe(victimDevices.length);
    expect(moved('wafleet_lease_claims_total', { outcome: 'claimed' })).toBe(victimDevices.length);
    expect(sumOver(after, 'wafleet_leases_held')).toBe(DEVICES);
    expect(moved('wafleet_lease_renewals_lost_total')).toBe(0);

    // The same story in the logs, in the seed's words, with deviceId, serverId and token.
    // (Servers write their logs asynchronously: wait for the lines rather than race them.)
    for (const id of SERVERS) expect(logged(id, `Server identified: ${id}`)).toHaveLength(1);
    const failoverLines = () => survivors.flatMap((id) => logged(id, 'Failover: lease expired'));
    const assignedLines = (deviceId: string) => survivors.flatMap((id) => logged(id, 'Device assigned to server', { deviceId }));
    await waitUntil(async () => failoverLines().length >= victimDevices.length && victimDevices.every((d) => assignedLines(d).length > 0), 10_000);
    expect(failoverLines().map((l) => l.deviceId).sort()).toEqual([...victimDevices].sort());
    expect(failoverLines().every((l) => l.from === victim && typeof l.token === 'number')).toBe(true);
    for (const deviceId of victimDevices) {
      const assigned = assignedLines(deviceId);
      expect(assigned).toHaveLength(1);
      expect(survivors).toContain(assigned[0]!.serverId);
      expect(typeof assigned[0]!.token).toBe('number');
    }
    // A placement for a device another server holds is left alone, and says so.
    const ownersNow = await cluster.owners(devices);
    const elsewhere = devices.find((d) => ownersNow.get(d) === survivors[1])!;
    await cluster.redis.redis.xadd(cluster.keys.inbox(survivors[0]!), '*', 'type', 'place', 'deviceId', elsewhere);
    await waitUntil(async () => logged(survivors[0]!, 'Device not assigned to this server - skipping', { deviceId: elsewhere }).length === 1, 10_000);
    expect((await cluster.owners([elsewhere])).get(elsewhere)).toBe(survivors[1]);

    // The dead server drops out of the aggregate once its snapshot expires (a few heartbeats).
    await waitUntil(async () => {
      const all = parse(await aggregate.text());
      return total(all, 'wafleet_aggregate_servers') === 2 && total(all, 'wafleet_leases_held') === DEVICES;
    }, TTL * 5);

    // An admin drain: the server stays up, hands every device over and says so in its metrics.
    const drained = survivors[0]!;
    const held = total(after.get(drained)!, 'wafleet_leases_held');
    const res = await fetch(`http://127.0.0.1:${cluster.servers.get(drained)!.port}/api/servers/${drained}/drain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}` },
    });
    expect(res.status).toBe(202);
    await waitUntil(async () => total((await scrape(drained)).families, 'wafleet_leases_held') === 0, TTL * 5);
    const drainedNow = (await scrape(drained)).families;
    expect(total(drainedNow, 'wafleet_drains_total')).toBe(1);
    expect(total(drainedNow, 'wafleet_draining')).toBe(1);
    expect(total(drainedNow, 'wafleet_lease_releases_total', { reason: 'drain' })).toBe(held);
    await waitUntil(async () => logged(drained, 'Device released', { reason: 'drain' }).length === held, 10_000);
    await waitUntil(async () => (await cluster.connectedCount(devices, [survivors[1]!])) === DEVICES, TTL * 10);
    expect(total((await scrape(survivors[1]!)).families, 'wafleet_leases_held')).toBe(DEVICES);
    expect(await cluster.conflicts()).toBe(0);
  });

  it('counts heartbeat failures, the self-fence and the leases a renewal finds lost, and still answers while cut off', async () => {
    // A cluster of its own, one server reaching Redis through a proxy that can cut it off.
    const own = await startTestCluster();
    const url = new URL(own.redis.url);
    const proxy = await startTcpProxy(url.hostname, Number(url.port || 6379));
    try {
      await own.start('mf-cut', { REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
      const devices = await own.addDevices(10);
      await waitUntil(async () => (await own.connectedCount(devices, ['mf-cut'])) === 10, 30_000);
      const metrics = async () => (await scrape('mf-cut', own)).families;
      const before = await metrics();
      expect(total(before, 'wafleet_self_fenced')).toBe(0);
      // Counted from here: a starved event loop on a loaded machine may have fenced it already.
      const fencesBefore = total(before, 'wafleet_self_fence_total');

      // Cut off for longer than the TTL: it self-fences, and /metrics still answers meanwhile
      // (the gauges that read Redis are left out rather than hanging the scrape).
      proxy.blackhole(true);
      await waitUntil(async () => total(await metrics(), 'wafleet_self_fenced') === 1, TTL * 3);
      // The beat in flight fails once its command times out (one TTL), after the self-fence.
      await waitUntil(async () => total(await metrics(), 'wafleet_heartbeat_failures_total') > 0, TTL * 3);
      const fenced = await metrics();
      expect(total(fenced, 'wafleet_self_fenced')).toBe(1);
      // Cut off, it cannot renew, so it cannot lift the fence and fence again: exactly one more.
      expect(total(fenced, 'wafleet_self_fence_total')).toBe(fencesBefore + 1);
      expect(total(fenced, 'wafleet_device_sockets', { status: 'connected' })).toBe(0);
      // The write-behind lag is read from Redis: unknown during the cut, so absent (not 0).
      expect(fenced.get('wafleet_store_sync_lag_seconds')?.metrics ?? []).toEqual([]);
      expect(total(fenced, 'wafleet_queue_jobs', { queue: 'outbound' })).toBe(0);

      // Meanwhile its leases expire and a healthy server takes the devices; once the cut heals,
      // the first renewal finds every lease lost.
      await own.start('mf-ok');
      await waitUntil(async () => (await own.connectedCount(devices, ['mf-ok'])) === 10, TTL * 10);
      proxy.blackhole(false);
      await waitUntil(async () => total(await metrics(), 'wafleet_lease_renewals_lost_total') === 10, TTL * 5);
      // (The renewal that hung through the cut proves nothing; the next one lifts the fence.)
      await waitUntil(async () => total(await metrics(), 'wafleet_self_fenced') === 0, TTL * 5);
      const healed = await metrics();
      expect(total(healed, 'wafleet_lease_renewals_lost_total')).toBe(10);
      expect(total(healed, 'wafleet_self_fence_total')).toBeGreaterThanOrEqual(fencesBefore + 1);
      expect(total(healed, 'wafleet_leases_held')).toBe(0);
      expect(healed.get('wafleet_store_sync_lag_seconds')?.metrics).toHaveLength(1);
      expect(total((await scrape('mf-ok', own)).families, 'wafleet_failovers_total')).toBe(10);
    } finally {
      await own.stop();
      await proxy.close();
    }
  });
});
