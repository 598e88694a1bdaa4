import type { Counter, Histogram } from 'prom-client';

// The lease core's measurements. It only counts and times; metrics/ registers these with
// prom-client under their wafleet_* names and serves them (Metrics extends this).

export interface LeaseMetrics {
  /** Heartbeat round trip: server advert plus the renewal of every held lease, one pipeline. */
  readonly renewalSeconds: Histogram;
  readonly heartbeatFailures: Counter;
  /** Leases a renewal found no longer this server's (taken or expired). */
  readonly renewalsLost: Counter;
  readonly selfFences: Counter;
  /** Beats whose renewal was not trusted: Redis's clock and the local one disagreed (a clock step). */
  readonly clockSteps: Counter;
  readonly claims: Counter<'outcome'>;
  readonly claimSeconds: Histogram;
  /** Expired leases of a dead or fenced owner that this server's sweep put up for placement. */
  readonly failovers: Counter;
  readonly drains: Counter;
  readonly releases: Counter<'reason'>;
}
