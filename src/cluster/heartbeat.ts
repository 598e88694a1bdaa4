import type { RedisClient as Redis } from '../shared/redis.js';
import type { MonotonicClock } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import type { ClusterKeys } from './keys.js';
import type { LeaseGuard } from './lease-guard.js';
import type { LeaseMetrics } from './metrics.js';
import { holderId, runIdOf, type LeaseStore, type LostLease } from './lease-store.js';

// The heartbeat: every renewIntervalMs, one pipelined round trip that refreshes the server key,
// renews every lease this server holds (chunked scripts), and checks that Redis still has
// wafleet's data. A failed round trip is never mistaken for lost leases: the server keeps its
// leases until the self-fence deadline says it can no longer be sure of them.

export interface ServerAdvert {
  bootId: string;
  url: string;
  region: string;
  capacity: number;
  priority: number;
  draining: boolean;
  startedAt: number;
  responseTimeMs: number;
}

export interface HeartbeatOptions {
  redis: Redis;
  keys: ClusterKeys;
  leases: LeaseStore;
  guard: LeaseGuard;
  clock: MonotonicClock;
  log: Logger;
  serverId: string;
  /** This process's boot id, named in the lease values it renews (absent: the bare server id). */
  bootId?: string;
  ttlMs: number;
  intervalMs: number;
  advert(): ServerAdvert;
  /** Redis lost wafleet's data, restarted or failed over (marker gone, run id changed). */
  onRedisReset(reason: string): void;
  /**
   * Leases expire by Redis's clock, the self-fence deadline runs on the local monotonic one, with
   * a margin of TTL minus the self-fence time between them. When the two clocks disagree about the
   * time between beats by more than this (a quarter of that margin; default TTL/12), one of them
   * stepped or runs at another rate, and the margin no longer holds: the server self-fences.
   */
  maxClockDriftMs?: number;
  metrics?: Pick<LeaseMetrics, 'renewalSeconds' | 'heartbeatFailures' | 'renewalsLost' | 'selfFences' | 'clockSteps'>;
}

/** What acts on the heartbeat's findings: the coordinator, which attaches itself. */
export interface HeartbeatOwner {
  /**
   * Whether placements may pick this server now (see Coordinator.accepting); advertised as
   * `accepting`. With no owner attached, a server accepts whenever it is not self-fenced.
   */
  accepting(): boolean;
  /** Leases found lost by a renewal. (Self-fencing is the guard's to report: LeaseGuard.onChange.) */
  onLost(lost: LostLease[]): void;
}

export interface Heartbeat {
  /** Hands renewal results and the accepting question to their owner; one owner, the last attached. */
  attach(owner: HeartbeatOwner): void;
  start(): void;
  /** Beats now (out of schedule), e.g. to publish `draining` at once. Resolves when done. */
  beat(): Promise<void>;
  stop(): void;
  /** Round-trip time of the last successful beat, ms. */
  readonly lastRoundTripMs: number;
}

/** One beat's reading of Redis's clock (TIME), between two local monotonic times. */
interface ClockSample {
  redisMs: number;
  sentAt: number;
  receivedAt: number;
}

/**
 * How far Redis's clock moved from the local one between two samples, in ms; 0 when the gap fits
 * within the round trips' uncertainty. Positive: Redis's clock ran ahead, so leases expire sooner
 * than the local deadline assumes.
 */
export function clockDrift(previous: ClockSample, current: ClockSample): number {
  const redisElapsed = current.redisMs - previous.redisMs;
  const localAtLeast = current.sentAt - previous.receivedAt;
  const localAtMost = current.receivedAt - previous.sentAt;
  if (redisElapsed < localAtLeast) return redisElapsed - localAtLeast;
  if (redisElapsed > localAtMost) return redisElapsed - localAtMost;
  return 0;
}

export function createHeartbeat(options: HeartbeatOptions): Heartbeat {
  const { redis, keys, leases, guard, clock, log, serverId, ttlMs, intervalMs, metrics } = options;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;
  let runId: string | undefined;
  let lastMarker: string | undefined;
  let lastRoundTripMs = 0;
  const maxClockDriftMs = options.maxClockDriftMs ?? ttlMs / 12;
  let lastClock: ClockSample | undefined;
  let owner: HeartbeatOwner | undefined;
  const isAccepting = () => (owner ? owner.accepting() : !guard.isFenced());

  const reportFence = (fenced: boolean) => {
    if (!fenced) return;
    metrics?.selfFences.inc();
    log.error({ ttlMs }, 'self-fenced: no successful lease renewal in time; stopping every device');
  };
  let unsubscribe = () => {};

  const beatOnce = async () => {
    const sentAt = clock();
    const advert = options.advert();
    const accepting = isAccepting();
    const held = guard.held();
    const serverKey = keys.server(serverId);
    const pipeline = redis
      .pipeline()
      .hset(serverKey, {
        ...advert,
        draining: advert.draining ? 1 : 0,
        accepting: accepting ? 1 : 0,
        load: held.length,
        heartbeatAt: Date.now(),
      })
      .pexpire(serverKey, ttlMs)
      .sadd(keys.servers, serverId)
      .get(keys.marker)
      .info('server')
      .get(keys.incarnation)
      .time();
    const lostFrom = leases.queueRenew(pipeline, holderId(serverId, options.bootId), ttlMs, held);
    try {
      const results = (await pipeline.exec()) ?? [];
      for (const [err] of results) if (err) throw err;
      const lost = lostFrom(results);
      const marker = (results[3]?.[1] as string | null) ?? null;
      const currentRunId = runIdOf(String((results[4]?.[1] as string | null | undefined) ?? ''));
      const seededOn = (results[5]?.[1] as string | null) ?? null;
      const [seconds, micros] = results[6]?.[1] as [string, string];
      const receivedAt = clock();
      const clockSample: ClockSample = { redisMs: Number(seconds) * 1000 + Number(micros) / 1000, sentAt, receivedAt };

      lastRoundTripMs = receivedAt - sentAt;
      metrics?.renewalSeconds.observe(lastRoundTripMs / 1000);
      const previousRunId = runId;
      const restarted = runId !== undefined && currentRunId !== undefined && currentRunId !== runId;
      if (currentRunId) runId = currentRunId;
      // A marker other than the one this server last saw means another server already noticed
      // that Redis lost its data and put a new marker in place; this server's leases are just as
      // gone, and just as much still its own.
      const replaced = marker !== null && lastMarker !== undefined && marker !== lastMarker;
      if (marker === null || replaced) {
        lastMarker = undefined;
        // Every lease looks lost when Redis lost its data; they are not lost to anyone else, so
        // the reset handler re-asserts them instead of stopping every device.
        options.onRedisReset(marker === null ? 'marker key missing: Redis lost its data' : 'marker key replaced: Redis lost its data');
        return;
      }
      lastMarker = marker;
      // A restart or a failover (a replica that may lack the newest writes took over) shows as a
      // new run id, seen here, or, when another server re-seeded already, by this server's own
      // run id changing. Either way the leases the renewal reports lost may only be missing from
      // the new Redis, so the reset re-asserts them rather than stopping their devices.
      if (restarted || (currentRunId !== undefined && currentRunId !== seededOn)) {
        // Another Redis, another machine's clock: compare from here on.
        lastClock = undefined;
        options.onRedisReset(
          restarted
            ? `Redis run id changed from ${previousRunId} to ${currentRunId}: it restarted or failed over`
            : `Redis run id ${currentRunId} is not the one fences were seeded on (${seededOn ?? 'none'}): it restarted or failed over`,
        );
        return;
      }

      const previousClock = lastClock;
      lastClock = clockSample;
      const drift = previousClock ? clockDrift(previousClock, clockSample) : 0;
      if (Math.abs(drift) > maxClockDriftMs) {
        const redisElapsedMs = Math.round(clockSample.redisMs - previousClock!.redisMs);
        const localElapsedMs = Math.round(clockSample.sentAt - previousClock!.sentAt);
        log.error(
          { driftMs: Math.round(drift), redisElapsedMs, localElapsedMs, maxClockDriftMs: Math.round(maxClockDriftMs) },
          `clock step: Redis's clock moved ${redisElapsedMs} ms between two beats while this server's monotonic clock moved ${localElapsedMs} ms; ` +
            'lease expiry (Redis time) and the self-fence deadline (local time) no longer agree, so this renewal is not trusted: self-fencing until the next beat',
        );
        metrics?.clockSteps.inc();
        guard.revoke();
        return;
      }

      // A renewal that was sent too long ago (it hung through a partition) proves nothing now;
      // the guard knows, and tells its listeners when this one lifts the fence.
      guard.renewed(sentAt);
      if (lost.length > 0) {
        metrics?.renewalsLost.inc(lost.length);
        owner?.onLost(lost);
      }
      // This beat lifted the fence (the first beat at start-up does): say so now rather than a
      // renewal interval later, so placements need not wait for the next beat.
      if (!accepting && isAccepting()) await redis.hset(serverKey, 'accepting', 1);
    } catch (err) {
      metrics?.heartbeatFailures.inc();
      log.warn({ err, remainingMs: Math.round(guard.remainingMs()) }, 'heartbeat failed');
    }
  };

  // Re-entrancy guard: a slow beat is never overlapped by the next one.
  const beat = () => {
    inFlight ??= beatOnce().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  return {
    attach(next) {
      owner = next;
    },
    start() {
      unsubscribe();
      unsubscribe = guard.onChange(reportFence);
      timer = setInterval(() => void beat(), intervalMs);
      timer.unref();
    },
    beat,
    stop() {
      clearInterval(timer);
      // A server that stopped renewing on purpose (drained, stopping) is not self-fenced.
      unsubscribe();
    },
    get lastRoundTripMs() {
      return lastRoundTripMs;
    },
  };
}
