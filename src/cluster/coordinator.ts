import type { RedisClient as Redis } from '../shared/redis.js';
import type { MonotonicClock } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import type { DeviceRunner } from './device-runner.js';
import type { Heartbeat } from './heartbeat.js';
import { createInbox, INBOX_GROUP, parseInboxMessage, type InboxMessage } from './inbox.js';
import type { ClusterKeys } from './keys.js';
import type { LeaseGuard } from './lease-guard.js';
import { holderId, parseLeaseValue, type ClaimResult, type LeaseStore, type LostLease, type PlaceResult } from './lease-store.js';
import type { LeaseMetrics } from './metrics.js';
import type { LeaseRecorder } from './recorder.js';

// Ties the lease protocol together for one server: it claims what placement sends to its inbox,
// sweeps for expired leases and unclaimed placements (every server does; both are idempotent),
// stops devices whose leases are lost, and drains on shutdown.

export interface CoordinatorOptions {
  redis: Redis;
  /** A connection for blocking inbox reads. */
  inboxReader: Redis;
  keys: ClusterKeys;
  leases: LeaseStore;
  guard: LeaseGuard;
  heartbeat: Heartbeat;
  runtime: DeviceRunner;
  recorder: LeaseRecorder;
  log: Logger;
  serverId: string;
  /**
   * This process's boot id (random per start), named in the lease values it holds: a lease of this
   * server id but another boot is a predecessor's or an impostor's, never this process's.
   */
  bootId?: string;
  ttlMs: number;
  sweepIntervalMs: number;
  /** How long a placement target has to claim before the device is placed again. */
  placementTimeoutMs: number;
  /** A device is not moved by rebalance before it has been held this long (monotonic ms). */
  minHoldMs: number;
  clock: MonotonicClock;
  /**
   * Logs a held device out (through the API): unlinks it at WhatsApp when connected, clears its
   * session (fenced by the token) and stops its socket. The coordinator releases the lease after.
   */
  logout(deviceId: string, token: number): Promise<void>;
  /** A claim ran on a Redis whose fences were not re-seeded yet (it restarted or failed over). */
  onRedisReset(reason: string): void;
  /** An admin asked (through the inbox) for this server to drain. */
  onDrainRequested(): void;
  /** Devices released concurrently per drain batch. */
  drainBatchSize?: number;
  metrics?: Pick<LeaseMetrics, 'claims' | 'claimSeconds' | 'failovers' | 'drains' | 'releases'>;
}

export interface Coordinator {
  start(): Promise<void>;
  /** Places a device that runs nowhere (new, or wanted again); idempotent. */
  place(deviceId: string): Promise<PlaceResult>;
  /**
   * Takes over, with new tokens, the leases still held by an earlier boot of this server id that
   * is proven dead (a crash, restarted by pm2); returns how many. Call after start().
   */
  takeOver(deadBootId: string): Promise<number>;
  /** Hands every device to other servers, then leaves the cluster. Runs once. */
  drain(reason: string): Promise<{ released: number }>;
  /** Stops loops and devices without handing anything over (after drain, or when fenced). */
  stop(): Promise<void>;
  sweep(): Promise<void>;
  /**
   * Redis said this device's lease key expired: the next sweep (started now) expires it if this
   * process was its last holder, a lease it let run out unreleased, which no other server's sweep
   * of due holders looks at while this process lives.
   */
  leaseExpired(deviceId: string): void;
  readonly draining: boolean;
  /**
   * Whether placements may pick this server: it runs, is not draining, is not self-fenced, and its
   * inbox reader is alive. The heartbeat advertises it; placement skips a server that says no.
   */
  readonly accepting: boolean;
  /** Leases a renewal (or a re-assert) found lost. */
  onLost(lost: LostLease[]): void;
}

/** Messages one inbox read takes: the placements among them are claimed in one script call. */
export const INBOX_READ_COUNT = 200;
const SWEEP_BATCH = 500;
/** Due holders one sweep handles (each with all its leases); usually one dead process at a time. */
const SWEEP_HOLDERS = 16;
/** Expired lease keys remembered between sweeps; beyond it, reconcile finds the rest. */
const MAX_EXPIRED_KEYS = 10_000;
const MAX_UNACKED = 10_000;

export function createCoordinator(options: CoordinatorOptions): Coordinator {
  const { redis, inboxReader, keys, leases, guard, heartbeat, runtime, recorder, log, serverId, ttlMs, metrics } = options;
  const drainBatchSize = options.drainBatchSize ?? 100;
  const { bootId } = options;
  const holder = holderId(serverId, bootId);
  const inbox = createInbox({ redis, keys });
  let draining = false;
  let stopped = false;
  let sweepTimer: NodeJS.Timeout | undefined;
  let sweeping: Promise<void> | undefined;
  let sweepAgain = false;
  /** Devices whose lease key Redis reported expired since the last sweep. */
  const expiredLeases = new Set<string>();
  let inboxLoop: Promise<void> | undefined;
  /** Monotonic time the inbox reader last started a read or finished one: it is alive. */
  let inboxActiveAt = Number.NEGATIVE_INFINITY;
  const unacked = new Set<string>();
  // A read blocks for a second at most; a reader silent for this long is stuck somewhere.
  const inboxStaleMs = Math.max(ttlMs, 5000);
  let drained: Promise<{ released: number }> | undefined;
  /** When this server claimed each device it holds (monotonic), for the rebalance hold time. */
  const heldSince = new Map<string, number>();
  // A device that stopped for good by itself let its lease go without the coordinator; unless it
  // was claimed again meanwhile, its hold time goes too (else one entry per device ever retired).
  runtime.onRetired((deviceId) => {
    if (guard.tokenOf(deviceId) === undefined) heldSince.delete(deviceId);
  });
  let fenceStop: Promise<unknown> = Promise.resolve();

  const candidates = () => redis.smembers(keys.servers);

  /**
   * Claims devices placed here, all of one inbox read in one script call (after a failover that
   * read brings hundreds), then runs each one granted.
   */
  const claim = async (deviceIds: readonly string[], via: string): Promise<void> => {
    if (deviceIds.length === 0 || draining || stopped || guard.isFenced()) return;
    const sentAt = options.clock();
    const results = await leases.claimMany(
      deviceIds.map((deviceId) => ({ deviceId })),
      holder,
      ttlMs,
      { viaPlacement: via === 'placement' },
    );
    const seconds = (options.clock() - sentAt) / 1000;
    let changed: Extract<ClaimResult, { outcome: 'redis_changed' }> | undefined;
    deviceIds.forEach((deviceId, i) => {
      const result = results[i]!;
      metrics?.claimSeconds.observe(seconds);
      metrics?.claims.inc({ outcome: result.outcome });
      if (result.outcome === 'redis_changed') changed = result;
      else settle(deviceId, via, result);
    });
    if (changed) {
      options.onRedisReset(`a claim of ${deviceIds.join(', ').slice(0, 200)} ran on Redis ${changed.runId}, not on ${changed.seededOn ?? 'any'} where fences were seeded: it restarted or failed over`);
    }
  };

  /** Acts on one device's claim answer: runs it when granted (or adopted), else leaves it. */
  const settle = (deviceId: string, via: string, answer: Exclude<ClaimResult, { outcome: 'redis_changed' }>): void => {
    let result = answer;
    if (result.outcome === 'held' && bootId !== undefined && result.serverId === serverId && result.bootId === bootId) {
      if (guard.tokenOf(deviceId) === result.token) return;
      // Held by this very process, yet not in hand: a claim whose reply was lost, which ioredis
      // sent again, and whose second run found the lease its first run granted. It is ours.
      log.info({ deviceId, token: result.token, via }, 'claim reply lost; adopting the lease this process was granted');
      result = { outcome: 'claimed', token: result.token };
    }
    if (result.outcome === 'held' && (result.serverId !== serverId || result.bootId !== bootId)) {
      // The seed's operators grep for this line: another server runs the device, so this one
      // leaves it alone.
      log.info({ deviceId, owner: result.serverId, ownerBoot: result.bootId, token: result.token, via }, 'Device not assigned to this server - skipping');
      return;
    }
    if (result.outcome !== 'claimed') {
      log.debug({ deviceId, result }, 'claim not taken');
      return;
    }
    const { expired } = result;
    run(deviceId, result.token, via, expired ? { expiredFrom: expired } : {});
    if (expired) {
      // The lease ran out and this claim came before any sweep: the failover is counted here,
      // and the sweep, finding a live lease, counts nothing.
      metrics?.failovers.inc();
      log.info({ deviceId, from: expired.serverId, fromToken: expired.token, token: result.token }, 'Failover: lease expired; device taken over here before any sweep');
    }
    log.info({ deviceId, token: result.token, via }, 'Device assigned to server');
  };

  /** Runs a device under a lease just granted here, and records the claim. */
  const run = (deviceId: string, token: number, via: string, details: Record<string, unknown>) => {
    guard.hold(deviceId, token);
    heldSince.set(deviceId, options.clock());
    runtime.start(deviceId, token);
    recorder.assignment(deviceId, serverId, token);
    recorder.leaseEvent({ deviceId, serverId, eventType: 'claim', epoch: token, details: { via, ...details } });
  };

  /**
   * A restarted server whose predecessor (an earlier boot of this server id) is proven dead takes
   * its leases over at once, with new tokens, instead of waiting a TTL for them to expire. Each one
   * is a failover, recorded as the predecessor's lease expiring and a claim here.
   */
  const takeOver = async (deadBootId: string): Promise<number> => {
    if (bootId === undefined || deadBootId === bootId || guard.isFenced()) return 0;
    const owned = await redis.smembers(keys.owned(serverId));
    const taken = await leases.takeOver(holderId(serverId, deadBootId), holder, ttlMs, owned.filter((d) => guard.tokenOf(d) === undefined));
    for (const { deviceId, token, previous } of taken) {
      recorder.leaseEvent({ deviceId, serverId, eventType: 'expire', epoch: previous?.token ?? 0, details: { takenOverBy: serverId, deadBoot: deadBootId } });
      metrics?.failovers.inc();
      run(deviceId, token, 'takeover', { expiredFrom: previous, deadBoot: deadBootId });
    }
    log.info({ deadBoot: deadBootId, taken: taken.length, owned: owned.length }, `Failover: took over ${taken.length} leases of this server's previous boot ${deadBootId}, which has no connection left`);
    return taken.length;
  };

  /** Handles one read's messages: its placements claimed together, the rest one by one. */
  const handleInboxMessages = async (messages: ReadonlyArray<InboxMessage | null>): Promise<void> => {
    const placed: string[] = [];
    const others: Array<Exclude<InboxMessage, { type: 'place' }>> = [];
    for (const message of messages) {
      if (message?.type === 'place') placed.push(message.deviceId);
      else if (message) others.push(message);
    }
    await Promise.all([
      claim(placed, 'placement').catch((err) => log.warn({ err, devices: placed.length }, 'inbox placements failed')),
      ...others.map(async (message) => {
        try {
          if (message.type === 'rebalance') await releaseForRebalance(message.count);
          else if (message.type === 'stop' || message.type === 'logout') await stopHeld(message.deviceId, message.type);
          else options.onDrainRequested();
        } catch (err) {
          log.warn({ err, message }, 'inbox message failed');
        }
      }),
    ]);
  };

  /**
   * Acknowledges handled messages, and any whose acknowledgement failed before. An unacknowledged
   * message is never read again (reads ask for new ones only), so a failed acknowledgement costs
   * nothing but its entry; it is retried here rather than allowed to end the reader.
   */
  const acknowledge = async (stream: string, ids: string[]): Promise<void> => {
    for (const id of ids) unacked.add(id);
    if (unacked.size === 0) return;
    const batch = [...unacked];
    try {
      const results = (await redis.multi().xack(stream, INBOX_GROUP, ...batch).xdel(stream, ...batch).exec()) ?? [];
      for (const [err] of results) if (err) throw err;
      for (const id of batch) unacked.delete(id);
    } catch (err) {
      // Bounded: a Redis that refuses acknowledgements for this long has lost the stream anyway.
      if (unacked.size > MAX_UNACKED) unacked.clear();
      log.warn({ err, pending: unacked.size }, 'inbox acknowledgement failed; retried with the next read');
    }
  };

  const readInboxOnce = async (stream: string): Promise<void> => {
    inboxActiveAt = options.clock();
    let batch: Array<[string, Array<[string, string[]]>]> | null;
    try {
      batch = (await inboxReader.xreadgroup(
        'GROUP', INBOX_GROUP, serverId, 'COUNT', INBOX_READ_COUNT, 'BLOCK', 1000, 'STREAMS', stream, '>',
      )) as Array<[string, Array<[string, string[]]>]> | null;
    } catch (err) {
      if (stopped) return;
      const message = (err as Error).message;
      // The stream and its group vanish when Redis loses its data; make them again.
      if (message.startsWith('NOGROUP') || message.startsWith('UNBLOCKED')) {
        await inbox.open(serverId).catch(() => undefined);
        return;
      }
      throw err;
    }
    inboxActiveAt = options.clock();
    const ids: string[] = [];
    for (const [, messages] of batch ?? []) {
      await handleInboxMessages(messages.map(([, fields]) => parseInboxMessage(fields)));
      ids.push(...messages.map(([id]) => id));
    }
    await acknowledge(stream, ids);
  };

  /**
   * The reader must outlive any error: a dead reader on a live server is a target that placement
   * keeps choosing and that never claims. Whatever a round throws, the next one starts after a
   * pause; meanwhile the server advertises that it accepts no placements (see `accepting`).
   */
  const readInbox = async (): Promise<void> => {
    const stream = keys.inbox(serverId);
    while (!stopped) {
      try {
        await readInboxOnce(stream);
      } catch (err) {
        if (stopped) return;
        log.warn({ err }, 'inbox read failed; reading again shortly');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };

  /**
   * Gives a held device to another server: the socket stops first (so the next owner never meets
   * it: no 440), then the lease is released and the device placed elsewhere, never here.
   */
  const handOver = async (deviceId: string, token: number, eventType: 'drain' | 'rebalance', reason: string, servers: string[]) => {
    await runtime.stop(deviceId, eventType);
    guard.drop(deviceId, token);
    heldSince.delete(deviceId);
    if (!(await leases.release(deviceId, holder, token))) return false;
    metrics?.releases.inc({ reason: eventType });
    log.info({ deviceId, token, reason: eventType }, 'Device released');
    recorder.leaseEvent({ deviceId, serverId, eventType, epoch: token, details: { reason } });
    await leases.place(deviceId, servers, options.placementTimeoutMs, serverId);
    return true;
  };

  /**
   * Stops a device this server holds because it is no longer wanted (disconnect, delete) or was
   * logged out: the socket first (for a logout, with the session cleared under the still-held
   * token), then the lease. Nothing is placed: the device is meant to stop.
   */
  const stopHeld = async (deviceId: string, why: 'stop' | 'logout'): Promise<void> => {
    const token = guard.tokenOf(deviceId);
    if (token === undefined) {
      log.info({ deviceId, request: why }, 'Device not assigned to this server - skipping');
      return;
    }
    if (why === 'logout') await options.logout(deviceId, token);
    else await runtime.stop(deviceId, 'stopped through the API');
    guard.drop(deviceId, token);
    heldSince.delete(deviceId);
    if (await leases.release(deviceId, holder, token)) {
      metrics?.releases.inc({ reason: why });
      log.info({ deviceId, token, reason: why }, 'Device released');
      recorder.leaseEvent({ deviceId, serverId, eventType: 'release', epoch: token, details: { reason: why } });
    }
  };

  /** Hands over up to `count` devices held at least the minimum hold time. */
  const releaseForRebalance = async (count: number): Promise<void> => {
    if (count <= 0 || draining || stopped || guard.isFenced()) return;
    const now = options.clock();
    const eligible = guard
      .held()
      .filter(({ deviceId }) => now - (heldSince.get(deviceId) ?? now) >= options.minHoldMs)
      .slice(0, count);
    if (eligible.length === 0) return;
    const servers = await candidates();
    const moved = await Promise.all(eligible.map(({ deviceId, token }) => handOver(deviceId, token, 'rebalance', 'rebalance', servers)));
    log.info({ asked: count, released: moved.filter(Boolean).length }, 'rebalance: released devices to other servers');
  };

  const place = async (deviceId: string, exclude = ''): Promise<PlaceResult> => {
    const result = await leases.place(deviceId, await candidates(), options.placementTimeoutMs, exclude);
    if (result.outcome === 'none') log.warn({ deviceId }, 'Failed to assign device to server: no live server has room now; the sweep retries');
    else if (result.outcome === 'placed') log.info({ deviceId, target: result.serverId }, `Auto-assigning device to server: ${result.serverId}`);
    else log.debug({ deviceId, result }, 'placed');
    return result;
  };

  const sweepOnce = async (): Promise<void> => {
    const servers = await candidates();
    /** Orphans to place; `from` is the owner whose lease expired (a failover), if any. */
    const orphans: Array<{ deviceId: string; from?: { serverId: string; token: number } | null; exclude?: string }> = [];
    const orphaned = (deviceId: string, value: string) => {
      const previous = parseLeaseValue(value);
      recorder.leaseEvent({
        deviceId,
        serverId: previous?.serverId ?? null,
        eventType: 'expire',
        epoch: previous?.token ?? 0,
        details: { sweptBy: serverId },
      });
      // expire() succeeds for one sweeper at most, and only if no claim came first (which then
      // counts it), so the cluster counts each failover once.
      metrics?.failovers.inc();
      orphans.push({ deviceId, from: previous });
    };
    // Processes past their deadline stopped renewing: each one's leases have run out. One that
    // renews again meanwhile (slow, not dead) keeps its deadline, and whatever lease is alive.
    for (const due of await leases.findDueHolders(SWEEP_HOLDERS)) {
      const leased = await leases.leasesOf(due);
      for (let start = 0; start < leased.length; start += SWEEP_BATCH) {
        const batch = leased.slice(start, start + SWEEP_BATCH);
        const outcomes = await leases.expire(batch);
        batch.forEach(({ deviceId, holder: value }, i) => {
          if (outcomes[i] === 'expired') orphaned(deviceId, value);
        });
      }
      await leases.forgetHolder(due);
    }
    if (expiredLeases.size > 0) {
      const reported = [...expiredLeases];
      expiredLeases.clear();
      for (const { deviceId, holder: value } of await leases.expireOwn(reported, holder)) orphaned(deviceId, value);
    }
    // A target that let its reservation run out may never claim (stuck, fenced, its reader gone):
    // the device goes elsewhere when anywhere else has room.
    for (const { deviceId, target } of await leases.findDuePlacements(SWEEP_BATCH)) orphans.push({ deviceId, exclude: target });
    await Promise.all(
      orphans.map(async ({ deviceId, from, exclude }) => {
        const placed = await leases.place(deviceId, servers, options.placementTimeoutMs, exclude);
        if (from === undefined) return;
        const fields = { deviceId, from: from?.serverId ?? null, token: from?.token ?? null };
        if (placed.outcome === 'placed') log.info({ ...fields, target: placed.serverId }, `Failover: lease expired; device placed on ${placed.serverId}`);
        else if (placed.outcome === 'none') log.warn(fields, 'Failover: lease expired, but no live server has room now; the sweep retries');
        else log.info({ ...fields, outcome: placed.outcome }, `Failover: lease expired; placement ${placed.outcome}`);
      }),
    );
    if (orphans.length > 0) log.info({ orphans: orphans.length }, 'swept orphans and placed them');
  };

  // One sweep at a time per server; a request during a sweep runs one more right after.
  const sweep = (): Promise<void> => {
    if (sweeping) {
      sweepAgain = true;
      return sweeping;
    }
    sweeping = sweepOnce()
      .catch((err) => log.warn({ err }, 'sweep failed'))
      .finally(() => {
        sweeping = undefined;
        if (sweepAgain && !stopped) {
          sweepAgain = false;
          void sweep();
        }
      });
    return sweeping;
  };

  /** Every device stops the moment the guard fences, by whatever path it came to be fenced. */
  const onFenced = () => {
    recorder.serverLog({ serverId, level: 'error', event: 'self_fenced', message: 'no lease renewal in time; every device stopped' });
    fenceStop = runtime.stopAll('self-fenced').catch((err) => log.error({ err }, 'stopping devices on self-fence failed'));
  };

  const onUnfenced = () => {
    // The renewal that lifted the fence proved the remaining leases are still ours. Restart
    // once the fence's stop has finished: a device still stopping counts as running. start() is
    // idempotent and also reopens a device still running whose socket the guard closed.
    void fenceStop.then(() => {
      if (guard.isFenced()) return;
      for (const { deviceId, token } of guard.held()) runtime.start(deviceId, token);
    });
  };
  let unsubscribeFence = () => {};

  const coordinator: Coordinator = {
    async start() {
      // A fresh group per boot: placements addressed to an earlier boot of this id are stale, and
      // their reservations expire and are placed again anyway.
      await redis.del(keys.inbox(serverId));
      await inbox.open(serverId);
      unsubscribeFence = guard.onChange((fenced) => (fenced ? onFenced() : onUnfenced()));
      // Reading before the first beat, so that beat can already advertise a live reader.
      inboxLoop = readInbox();
      await heartbeat.beat();
      heartbeat.start();
      sweepTimer = setInterval(() => void sweep(), options.sweepIntervalMs);
      sweepTimer.unref();
      void sweep();
    },

    place: (deviceId) => place(deviceId),
    takeOver,

    leaseExpired(deviceId) {
      if (expiredLeases.size < MAX_EXPIRED_KEYS) expiredLeases.add(deviceId);
      void sweep();
    },

    drain(reason) {
      drained ??= (async () => {
        draining = true;
        metrics?.drains.inc();
        log.info({ reason, leases: guard.size }, 'draining: handing devices to other servers');
        // Publish `draining` first so no placement picks this server from now on.
        await heartbeat.beat();
        const servers = await candidates();
        const held = guard.held();
        let released = 0;
        for (let start = 0; start < held.length; start += drainBatchSize) {
          await Promise.all(
            held.slice(start, start + drainBatchSize).map(async ({ deviceId, token }) => {
              if (await handOver(deviceId, token, 'drain', reason, servers)) released += 1;
            }),
          );
        }
        await coordinator.stop();
        await redis
          .multi()
          .del(keys.server(serverId), keys.owned(serverId), keys.reserved(serverId), keys.inbox(serverId))
          .srem(keys.servers, serverId)
          .exec();
        log.info({ released }, 'drained');
        return { released };
      })();
      return drained;
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(sweepTimer);
      heartbeat.stop();
      unsubscribeFence();
      inboxReader.disconnect();
      await inboxLoop?.catch(() => undefined);
      await sweeping;
      await runtime.stopAll('server stopping');
    },

    sweep,

    get draining() {
      return draining;
    },

    get accepting() {
      return !stopped && !draining && inboxLoop !== undefined && !guard.isFenced() && options.clock() - inboxActiveAt < inboxStaleMs;
    },

    onLost(lost) {
      for (const { deviceId, token, holder } of lost) {
        // A stale answer (sent before the device was released and claimed here again) is about
        // a token this server no longer acts under; the newer one is still good.
        if (guard.tokenOf(deviceId) !== token) continue;
        guard.drop(deviceId, token);
        heldSince.delete(deviceId);
        void runtime.stop(deviceId, 'lease lost');
        recorder.leaseEvent({ deviceId, serverId, eventType: 'lost', epoch: token, details: { holder } });
        log.warn({ deviceId, token, holder }, 'lease lost; device stopped');
      }
    },
  };
  heartbeat.attach({ accepting: () => coordinator.accepting, onLost: (lost) => coordinator.onLost(lost) });
  return coordinator;
}
