import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LeaseMetrics } from '../cluster/metrics.js';
import type { EventLogMetrics } from '../events/event-log.js';
import { DEVICE_STATUSES } from '../store/types.js';

// Prometheus metrics of one server process. One Registry per process, made by the composition
// root (src/main.ts) and handed to the modules that count things; nothing here touches prom-client's
// global default registry, so two servers in one test process never share a counter.
//
// Names carry their unit (`_seconds`) and counters end in `_total`. Every series has the label
// `server` (the SERVER_ID), so the monitoring port's aggregate of all servers keeps them apart.

export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/** States of a BullMQ queue counted by `wafleet_queue_jobs`. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];
export type QueueCounts = Partial<Record<QueueState, number>>;

/** What a processed job came to: done, failed for good, tried again later, or put back (not now). */
export type JobOutcome = 'completed' | 'failed' | 'retried' | 'deferred';

/** Why a server let go of a lease on purpose. */
export type ReleaseReason = 'drain' | 'rebalance' | 'stop' | 'logout';

// Lease round trips are a few ms on a healthy Redis; the top buckets show a partition coming,
// well before the self-fence deadline (2/3 of the TTL, seconds).
const ROUND_TRIP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * A scrape reads some gauges from Redis. During a partition those reads hang (BullMQ's
 * connection has no command timeout), yet that is when the metrics matter most: a source that
 * has not answered by then is left out of this scrape.
 */
export const SOURCE_TIMEOUT_MS = 1000;

async function withinTimeout<T>(read: () => Promise<T>): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      read(),
      new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), SOURCE_TIMEOUT_MS);
      }),
    ]);
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** Live state read at scrape time. Each source is optional until main.ts sets it. */
export interface MetricSources {
  leasesHeld?: () => number;
  /** Devices running on this server, by the status their socket last reported. */
  socketsByStatus?: () => Partial<Record<string, number>>;
  draining?: () => boolean;
  fenced?: () => boolean;
  /** Seconds the store's write-behind record trails Redis; null when unknown (nothing to say). */
  storeSyncLagSeconds?: () => Promise<number | null>;
}

export interface Metrics extends LeaseMetrics, EventLogMetrics {
  readonly registry: Registry;
  readonly contentType: string;
  /** Prometheus text of this server's metrics. */
  text(): Promise<string>;
  /** Where scrape-time gauges read from (leases held, sockets, draining, store lag). */
  setSources(sources: MetricSources): void;
  /** Counts a queue's jobs by state at scrape time, as `wafleet_queue_jobs{queue=name}`. */
  watchQueue(name: string, counts: () => Promise<QueueCounts>): void;

  readonly jobs: Counter<'queue' | 'outcome'>;
  readonly messagesSent: Counter;
  readonly messagesFailed: Counter;
  /** Webhook delivery attempts by target and outcome (src/webhooks' WebhookMetrics, met by shape). */
  readonly webhookDeliveries: Counter<'target' | 'outcome'>;
  /** Webhook deliveries given up on after their last retry, by target. */
  readonly webhookDeadLetters: Counter<'target'>;
}

export interface MetricsOptions {
  serverId: string;
  /** Node process metrics (CPU, memory, event loop lag), prefixed `wafleet_`; on by default. */
  processMetrics?: boolean;
}

export function createMetrics({ serverId, processMetrics = true }: MetricsOptions): Metrics {
  const registry = new Registry();
  registry.setDefaultLabels({ server: serverId });
  if (processMetrics) collectDefaultMetrics({ register: registry, prefix: 'wafleet_' });

  let sources: MetricSources = {};
  const queues = new Map<string, () => Promise<QueueCounts>>();
  const registers = [registry];

  new Gauge({
    name: 'wafleet_leases_held',
    help: 'Device leases this server holds now',
    registers,
    collect() {
      this.set(sources.leasesHeld?.() ?? 0);
    },
  });
  new Gauge({
    name: 'wafleet_device_sockets',
    help: 'Devices running on this server, by the status their socket last reported',
    labelNames: ['status'],
    registers,
    collect() {
      const counts = sources.socketsByStatus?.() ?? {};
      this.reset();
      for (const status of new Set([...DEVICE_STATUSES, ...Object.keys(counts)])) this.set({ status }, counts[status] ?? 0);
    },
  });
  new Gauge({
    name: 'wafleet_draining',
    help: '1 while this server drains (hands its devices over and takes none)',
    registers,
    collect() {
      this.set(sources.draining?.() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'wafleet_self_fenced',
    help: '1 while this server is self-fenced (no lease renewal within LEASE_SELF_FENCE_MS)',
    registers,
    collect() {
      this.set(sources.fenced?.() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'wafleet_store_sync_lag_seconds',
    help: "How far the store's write-behind record trails Redis (age of the oldest unsynced write); absent when unknown",
    labelNames: ['queue'],
    registers,
    async collect() {
      this.reset();
      const read = sources.storeSyncLagSeconds;
      const lag = read ? await withinTimeout(read) : null;
      if (lag !== null && Number.isFinite(lag)) this.set({ queue: 'store-sync' }, lag);
    },
  });
  new Gauge({
    name: 'wafleet_queue_jobs',
    help: 'Jobs in a BullMQ queue by state; outbound counts the queues of the devices this server holds',
    labelNames: ['queue', 'state'],
    registers,
    async collect() {
      this.reset();
      await Promise.all(
        [...queues].map(async ([queue, counts]) => {
          const found = await withinTimeout(counts);
          if (!found) return;
          for (const state of QUEUE_STATES) this.set({ queue, state }, found[state] ?? 0);
        }),
      );
    },
  });

  const claims = new Counter({
    name: 'wafleet_lease_claims_total',
    help: 'Lease claims by outcome: claimed, held (by another server), embargoed, not_live, not_reserved',
    labelNames: ['outcome'],
    registers,
  });
  const releases = new Counter({
    name: 'wafleet_lease_releases_total',
    help: 'Leases this server let go of on purpose, by reason: drain, rebalance, stop, logout',
    labelNames: ['reason'],
    registers,
  });
  const jobs = new Counter({
    name: 'wafleet_queue_jobs_processed_total',
    help: 'Jobs this server processed, by queue and outcome: completed, failed, retried, deferred (put back: not now)',
    labelNames: ['queue', 'outcome'],
    registers,
  });
  const webhookDeliveries = new Counter({
    name: 'wafleet_webhook_deliveries_total',
    help: 'Webhook delivery attempts this server made, by target (device: its own webhook; operator: WEBHOOK_URL) and outcome: delivered (2xx in time), failed (retried later)',
    labelNames: ['target', 'outcome'],
    registers,
  });
  const webhookDeadLetters = new Counter({
    name: 'wafleet_webhook_dead_letters_total',
    help: 'Webhook deliveries given up on after WEBHOOK_RETRY_HOURS of retries, by target',
    labelNames: ['target'],
    registers,
  });
  // Label values that may never occur still show as 0, so rate() and alerts see the series.
  for (const target of ['device', 'operator']) {
    webhookDeadLetters.inc({ target }, 0);
    for (const outcome of ['delivered', 'failed']) webhookDeliveries.inc({ target, outcome }, 0);
  }
  for (const outcome of ['claimed', 'held', 'embargoed', 'not_live', 'not_reserved']) claims.inc({ outcome }, 0);
  for (const reason of ['drain', 'rebalance', 'stop', 'logout'] satisfies ReleaseReason[]) releases.inc({ reason }, 0);
  for (const outcome of ['completed', 'failed', 'retried', 'deferred'] satisfies JobOutcome[]) jobs.inc({ queue: 'outbound', outcome }, 0);

  return {
    registry,
    contentType: registry.contentType,
    text: () => registry.metrics(),
    setSources(next) {
      sources = { ...sources, ...next };
    },
    watchQueue(name, counts) {
      queues.set(name, counts);
    },
    renewalSeconds: new Histogram({
      name: 'wafleet_lease_renewal_seconds',
      help: 'Heartbeat round trip: server advert plus the renewal of every held lease, in one pipeline',
      buckets: ROUND_TRIP_BUCKETS,
      registers,
    }),
    heartbeatFailures: new Counter({ name: 'wafleet_heartbeat_failures_total', help: 'Heartbeats that failed (Redis unreachable or slow)', registers }),
    renewalsLost: new Counter({
      name: 'wafleet_lease_renewals_lost_total',
      help: 'Leases a renewal found no longer held by this server (taken or expired); their devices stop',
      registers,
    }),
    selfFences: new Counter({
      name: 'wafleet_self_fence_total',
      help: 'Times this server self-fenced: no successful renewal within LEASE_SELF_FENCE_MS, every device stopped',
      registers,
    }),
    clockSteps: new Counter({
      name: 'wafleet_clock_steps_total',
      help: "Beats whose renewal was not trusted because Redis's clock and the local monotonic clock disagreed by more than a quarter of the lease margin; the server self-fenced",
      registers,
    }),
    claims,
    claimSeconds: new Histogram({
      name: 'wafleet_lease_claim_seconds',
      help: 'Round trip of a lease claim (the claim script)',
      buckets: ROUND_TRIP_BUCKETS,
      registers,
    }),
    failovers: new Counter({
      name: 'wafleet_failovers_total',
      help: "Expired leases of a dead or fenced owner found by this server's sweep and placed on a live server (each counted once, cluster-wide)",
      registers,
    }),
    drains: new Counter({ name: 'wafleet_drains_total', help: 'Drains this server started (SIGTERM, SIGINT or an admin request)', registers }),
    releases,
    jobs,
    webhookDeliveries,
    webhookDeadLetters,
    messagesSent: new Counter({ name: 'wafleet_messages_sent_total', help: 'Outbound messages this server sent', registers }),
    messagesFailed: new Counter({
      name: 'wafleet_messages_failed_total',
      help: 'Outbound messages that failed for good on this server (permanent error or attempts used up)',
      registers,
    }),
    staleEvents: new Counter({
      name: 'wafleet_events_stale_total',
      help: "Inbound events refused because this server no longer held the device's lease",
      registers,
    }),
  };
}
