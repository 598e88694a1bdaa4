import { AggregatorRegistry, Gauge, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import { METRICS_CONTENT_TYPE } from './index.js';

// The cluster's metrics in one scrape, for the monitoring port: every live server's snapshot
// (published to Redis by src/metrics/publish.ts), each series keeping its `server` label. Nothing
// is summed: PromQL does that (`sum(wafleet_leases_held)`), and a per-server view stays possible.

export interface MetricsAggregate {
  readonly contentType: string;
  /** Prometheus text of every server that published within the last few heartbeats. */
  text(): Promise<string>;
  /** The servers whose snapshots were found by the last call to text(). */
  readonly servers: readonly string[];
}

interface Snapshot {
  serverId: string;
  at: number;
  metrics: Array<MetricObjectWithValues<MetricValue<string>>>;
}

export function createMetricsAggregate({ redis, keys }: { redis: Redis; keys: ClusterKeys }): MetricsAggregate {
  let servers: string[] = [];
  return {
    contentType: METRICS_CONTENT_TYPE,
    get servers() {
      return servers;
    },
    async text() {
      const ids = (await redis.smembers(keys.servers)).sort();
      const raw = ids.length > 0 ? await redis.mget(ids.map((id) => keys.metrics(id))) : [];
      const snapshots: Snapshot[] = [];
      for (const value of raw) {
        if (!value) continue;
        try {
          snapshots.push(JSON.parse(value) as Snapshot);
        } catch {
          // A snapshot that does not parse is left out rather than failing the whole scrape.
        }
      }
      servers = snapshots.map((s) => s.serverId);

      const labelled = snapshots.map((snapshot) =>
        snapshot.metrics.map((metric) => ({
          ...metric,
          // Each series is one server's, told apart by its label: keep every value as it is.
          // (prom-client's own aggregators would average, or omit, some process metrics.)
          aggregator: 'first' as const,
          values: metric.values.map((value) => ({ ...value, labels: { server: snapshot.serverId, ...value.labels } })),
        })),
      );
      const registry = AggregatorRegistry.aggregate(labelled);
      const reporting = new Gauge({
        name: 'wafleet_aggregate_servers',
        help: 'Servers whose metrics this aggregate holds (published within the last few heartbeats)',
        registers: [registry],
      });
      reporting.set(snapshots.length);
      const age = new Gauge({
        name: 'wafleet_aggregate_snapshot_age_seconds',
        help: "Age of each server's metrics snapshot in this aggregate",
        labelNames: ['server'],
        registers: [registry],
      });
      const now = Date.now();
      for (const snapshot of snapshots) age.set({ server: snapshot.serverId }, Math.max(0, (now - snapshot.at) / 1000));
      return registry.metrics();
    },
  };
}
