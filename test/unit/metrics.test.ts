import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { createMetricsAggregate } from '../../src/metrics/aggregate.js';
import { createMetrics } from '../../src/metrics/index.js';
import { SNAPSHOT_PERIODS, startMetricsPublisher } from '../../src/metrics/publish.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The metrics factory, its snapshots in Redis and the cluster aggregate, against real Redis.

let redis: TestRedis;
let keys: ClusterKeys;
const log = pino({ level: 'silent' });

beforeAll(async () => {
  redis = await useTestRedis();
  keys = createClusterKeys(redis.prefix);
});
afterAll(async () => {
  await redis?.cleanup();
});

const families = (text: string) => new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
const values = (text: string, name: string) =>
  (families(text).get(name)?.metrics ?? []).map((m) => ({ labels: m.labels ?? {}, value: Number('value' in m ? m.value : NaN) }));

describe('createMetrics', () => {
  it('reads its gauges from the sources at scrape time, and leaves out what is unknown', async () => {
    const metrics = createMetrics({ serverId: 'm-1', processMetrics: false });
    // Before main.ts sets any source: zeros, and no lag at all (unknown is not 0).
    let text = await metrics.text();
    expect(values(text, 'wafleet_leases_held')).toEqual([{ labels: { server: 'm-1' }, value: 0 }]);
    expect(values(text, 'wafleet_store_sync_lag_seconds')).toEqual([]);
    expect(values(text, 'wafleet_queue_jobs')).toEqual([]);

    let held = 3;
    metrics.setSources({ leasesHeld: () => held, socketsByStatus: () => ({ connected: 2, qr: 1 }), draining: () => true, storeSyncLagSeconds: async () => 1.5 });
    metrics.watchQueue('outbound', async () => ({ waiting: 4, active: 1 }));
    metrics.watchQueue('broken', async () => {
      throw new Error('Redis is slow');
    });
    held = 7;
    text = await metrics.text();
    expect(values(text, 'wafleet_leases_held')[0]!.value).toBe(7);
    expect(values(text, 'wafleet_draining')[0]!.value).toBe(1);
    expect(values(text, 'wafleet_store_sync_lag_seconds')).toEqual([{ labels: { queue: 'store-sync', server: 'm-1' }, value: 1.5 }]);
    const sockets = Object.fromEntries(values(text, 'wafleet_device_sockets').map((v) => [v.labels.status, v.value]));
    expect(sockets).toMatchObject({ connected: 2, qr: 1, connecting: 0, logged_out: 0 });
    // A queue whose count fails is left out of this scrape; the scrape itself still answers.
    expect(values(text, 'wafleet_queue_jobs').map((v) => `${v.labels.queue}:${v.labels.state}=${v.value}`)).toEqual([
      'outbound:waiting=4',
      'outbound:active=1',
      'outbound:delayed=0',
      'outbound:failed=0',
    ]);

    metrics.claims.inc({ outcome: 'claimed' }, 2);
    metrics.releases.inc({ reason: 'drain' });
    text = await metrics.text();
    const claims = Object.fromEntries(values(text, 'wafleet_lease_claims_total').map((v) => [v.labels.outcome, v.value]));
    expect(claims).toEqual({ claimed: 2, held: 0, embargoed: 0, not_live: 0, not_reserved: 0 });
  });

  it('keeps two servers in one process apart (no global registry)', async () => {
    const a = createMetrics({ serverId: 'm-a', processMetrics: false });
    const b = createMetrics({ serverId: 'm-b', processMetrics: false });
    a.failovers.inc(5);
    expect(values(await a.text(), 'wafleet_failovers_total')[0]!.value).toBe(5);
    expect(values(await b.text(), 'wafleet_failovers_total')[0]!.value).toBe(0);
  });
});

describe('the cluster aggregate', () => {
  it('serves every publishing server, each series labelled, and drops one that stops', async () => {
    const servers = ['agg-1', 'agg-2'];
    await redis.redis.sadd(keys.servers, ...servers);
    const publishers = servers.map((serverId, i) => {
      const metrics = createMetrics({ serverId });
      metrics.setSources({ leasesHeld: () => 10 * (i + 1) });
      metrics.renewalSeconds.observe(0.002);
      return startMetricsPublisher({ redis: redis.redis, keys, metrics, serverId, intervalMs: 200, log });
    });
    await Promise.all(publishers.map((p) => p.publish()));
    const ttl = await redis.redis.pttl(keys.metrics('agg-1'));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(200 * SNAPSHOT_PERIODS);

    const aggregate = createMetricsAggregate({ redis: redis.redis, keys });
    let text = await aggregate.text();
    expect(aggregate.servers).toEqual(servers);
    expect(values(text, 'wafleet_aggregate_servers')[0]!.value).toBe(2);
    expect(values(text, 'wafleet_leases_held').map((v) => [v.labels.server, v.value])).toEqual([
      ['agg-1', 10],
      ['agg-2', 20],
    ]);
    // Process metrics whose own aggregator would drop or average them survive, one per server.
    expect(values(text, 'wafleet_process_start_time_seconds').map((v) => v.labels.server).sort()).toEqual(servers);
    // Histograms keep their buckets per server (read from the text: the parser flattens them).
    expect(text).toMatch(/^wafleet_lease_renewal_seconds_count\{server="agg-1"\} 1$/m);
    expect(text).toMatch(/^wafleet_lease_renewal_seconds_count\{server="agg-2"\} 1$/m);

    await publishers[1]!.stop();
    expect(await redis.redis.exists(keys.metrics('agg-2'))).toBe(0);
    text = await aggregate.text();
    expect(aggregate.servers).toEqual(['agg-1']);
    expect(values(text, 'wafleet_leases_held').map((v) => v.labels.server)).toEqual(['agg-1']);
    await publishers[0]!.stop();
  });
});
