import { ExecutionError, Redlock, ResourceLockedError } from '@sesamecare-oss/redlock';
import type { MonotonicClock } from '../shared/clock.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { Logger } from '../shared/logger.js';
import type { Store } from '../store/types.js';
import type { ClusterKeys } from './keys.js';
import type { LeaseGuard } from './lease-guard.js';
import { runIdOf, type LeaseStore, type LostLease } from './lease-store.js';
import type { LeaseRecorder } from './recorder.js';

// When Redis loses its data (or restarts, or fails over to a replica that had not received the
// newest writes), fence counters restart at zero, or fall back a little, while old owners may
// still be running with their tokens. Before anyone claims again: lift every fence to the store's
// lease_epoch, hold claims off for one TTL so holders can re-assert what they still run, and put
// the marker back; and put back the messages the store still counts as pending, and each device's
// event numbering and undelivered events. Every server that notices runs this, but one at a time
// under a lock: the others wait for it to finish. Each step is idempotent, so a second re-seed
// (the lock lapsed, or Redis lost its data again meanwhile) is only wasted work.

const SEED_PAGE = 1000;
/** How often a server waiting for another's re-seed looks whether it is done. */
const RESEED_WAIT_POLL_MS = 200;

/** Tokens of incarnation epoch E are granted above E * 2^32 (exact: below 2^53 for E < 2^21). */
export const tokenFloorOf = (epoch: number): string => (BigInt(epoch) << 32n).toString();

export interface RedisResetDeps {
  redis: Redis;
  keys: ClusterKeys;
  store: Store;
  leases: LeaseStore;
  log: Logger;
  ttlMs: number;
  /** Who re-seeds, for the store's audit of incarnation epochs. */
  serverId?: string;
  /**
   * Puts the messages the store still counts as pending back into Redis (see queues/restore.ts).
   * Run before claims re-open, so no device sends before its line is whole again.
   */
  restoreMessages?: () => Promise<unknown>;
  /**
   * Puts each device's event numbering, undelivered events and dedup markers back from the store
   * (see events/restore.ts). Run before claims re-open, so no device appends an event before its
   * numbering goes on from where the store has it.
   */
  restoreEvents?: () => Promise<unknown>;
}

/**
 * Reads, in one transaction on the node that holds wafleet's keys (a keyed command routes it under
 * Cluster), that Redis's run id, whether the marker exists and the run id fences were seeded on.
 */
async function readIncarnation(redis: Redis, keys: ClusterKeys) {
  const results = (await redis.multi().info('server').exists(keys.marker).get(keys.incarnation).exec()) ?? [];
  for (const [err] of results) if (err) throw err;
  return {
    runId: runIdOf(String((results[0]?.[1] as string | null | undefined) ?? '')),
    hasMarker: results[1]?.[1] === 1,
    seededOn: (results[2]?.[1] as string | null) ?? null,
  };
}

const reseededOn = ({ runId, hasMarker, seededOn }: Awaited<ReturnType<typeof readIncarnation>>): boolean => hasMarker && runId !== undefined && runId === seededOn;

/**
 * Lifts fences from the store and puts the pending messages and the event logs back; with
 * `embargo`, nobody claims for one TTL after it is done. Returns fences lifted (0 when another
 * server did it). Ends by recording the run id it began on as the one fences are seeded on, so
 * claims go ahead again; should Redis have changed meanwhile, that run id is already stale and the
 * next claim or heartbeat starts over.
 *
 * Every server that notices a reset calls this. The first takes the re-seed lock (extended while
 * it works, so it lapses within a TTL if that server dies) and does the work; the others wait
 * until the marker is back and this Redis is recorded as seeded (the incarnation is set last, so
 * it stands for a complete re-seed), or until the lock is free again, then take it themselves.
 * Five servers each reading the whole store at once made the re-seed five times slower, and
 * claims wait for it. Until it is done claims are refused by the incarnation check (the Redis
 * that lost its data lost the incarnation key with it, or has another run id), so no embargo is
 * needed while it runs.
 */
export async function reseedFences(deps: RedisResetDeps, embargo: boolean): Promise<number> {
  const { redis, keys, log, ttlMs } = deps;
  const redlock = new Redlock([redis], { retryCount: 0, automaticExtensionThreshold: Math.max(100, Math.floor(ttlMs / 3)) });
  // Contention is reported as 'error' events as well as rejections; the rejection is enough.
  redlock.on('error', () => undefined);
  let waited = false;
  for (;;) {
    const incarnation = await readIncarnation(redis, keys);
    if (reseededOn(incarnation)) {
      log.info({ runId: incarnation.runId, waited }, 'fences already re-seeded on this Redis by another server');
      return 0;
    }
    let lifted: number | undefined;
    try {
      await redlock.using([keys.reseedLock], ttlMs, async () => {
        lifted = await reseedUnderLock(deps, embargo);
      });
      return lifted!;
    } catch (err) {
      // Done, but the release failed (Redis lost the lock with its data again): the next
      // heartbeat notices whatever that loss needs.
      if (lifted !== undefined) return lifted;
      if (!(err instanceof ResourceLockedError || err instanceof ExecutionError)) throw err;
    }
    if (!waited) log.info('another server is re-seeding: waiting for it');
    waited = true;
    await new Promise((r) => setTimeout(r, RESEED_WAIT_POLL_MS));
  }
}

async function reseedUnderLock({ redis, keys, store, leases, log, ttlMs, serverId, restoreMessages, restoreEvents }: RedisResetDeps, embargo: boolean): Promise<number> {
  // Read again under the lock: the server that held it before may have just finished.
  const { runId, hasMarker, seededOn } = await readIncarnation(redis, keys);
  if (reseededOn({ runId, hasMarker, seededOn })) return 0;
  // The store's lease_epochs may lack the newest tokens (their records were queued in the Redis
  // that lost them): a new incarnation epoch in the high bits keeps every token granted from now
  // on above any granted before, whatever the store knows.
  // What each step took goes into the log: claims wait for all of them.
  let lapStart = Date.now();
  const lap = () => {
    const now = Date.now();
    const ms = now - lapStart;
    lapStart = now;
    return ms;
  };
  const epoch = await store.nextTokenEpoch(runId ?? null, serverId ?? 'unknown');
  let lifted = 0;
  let after: string | null = null;
  for (;;) {
    const page = await store.listLeaseEpochs(after, SEED_PAGE);
    if (page.length === 0) break;
    lifted += await leases.seedFences(page);
    after = page[page.length - 1]!.deviceId;
  }
  const tookMs = { fences: lap(), messages: 0, events: 0 };
  // Claims are refused until the incarnation below is set, and a send needs a claim: the
  // messages are back in line before any device can send.
  await restoreMessages?.();
  tookMs.messages = lap();
  // Appends need the lease, so none happens before claims re-open either: without this, each
  // device's numbering would start again at 1 under readers that already saw 1, 2, 3...
  await restoreEvents?.();
  tookMs.events = lap();
  // One transaction: the incarnation re-opens claims, and the embargo, starting in the same step,
  // holds them off for a whole TTL from here, however long the re-seed took, so every holder has
  // that TTL to re-assert what it still runs. NX on both: when several servers re-seed at once,
  // the first to finish sets the marker and starts the embargo; a later one must not extend it.
  const done = redis.multi().set(keys.marker, `${new Date().toISOString()}/${Math.random().toString(36).slice(2, 8)}`, 'NX');
  if (embargo) done.set(keys.claimEmbargo, Date.now(), 'PX', ttlMs, 'NX');
  leases.queueRaiseTokenFloor(done, tokenFloorOf(epoch));
  if (runId !== undefined) done.set(keys.incarnation, runId);
  const results = (await done.exec()) ?? [];
  for (const [err] of results) if (err) throw err;
  log.warn({ lifted, embargoMs: embargo ? ttlMs : 0, runId, tokenEpoch: epoch, tookMs }, 'fence counters re-seeded from the store');
  return lifted;
}

/**
 * At start-up a missing marker means either a fresh Redis or one that lost its data. Only the
 * latter needs the embargo: it is the one where old tokens exist (the store has epochs). A marker
 * on a Redis other than the one fences were seeded on (it restarted or failed over while no
 * server noticed) needs the embargo too.
 */
export async function ensureMarker(deps: RedisResetDeps): Promise<void> {
  const { runId, hasMarker, seededOn } = await readIncarnation(deps.redis, deps.keys);
  if (hasMarker && (runId === undefined || runId === seededOn)) return;
  if (hasMarker) {
    deps.log.warn({ runId, seededOn }, 'Redis is not the one fences were seeded on (restarted or failed over): re-seeding');
    await reseedFences(deps, true);
    return;
  }
  const known = await deps.store.listLeaseEpochs(null, 1);
  await reseedFences(deps, known.length > 0);
}

/**
 * Records a Redis as seeded without looking at any store: only for a prefix under which no
 * token was ever handed out anywhere (a test's or a benchmark's own), where there is nothing to
 * lift fences to.
 */
export async function adoptFreshRedis(redis: Redis, keys: ClusterKeys): Promise<void> {
  const { runId } = await readIncarnation(redis, keys);
  if (runId === undefined) throw new Error('INFO server reported no run_id');
  await redis.multi().set(keys.marker, `adopted/${runId}`, 'NX').set(keys.incarnation, runId).exec();
}

export interface RedisResetRecoveryOptions {
  deps: RedisResetDeps;
  guard: LeaseGuard;
  /** This process's holder id (lease-store.ts holderId), whose leases it re-asserts. */
  holder: string;
  recorder: Pick<LeaseRecorder, 'serverLog'>;
  clock: MonotonicClock;
}

export interface RedisResetRecovery {
  /**
   * Recovers from a reset the heartbeat or a claim noticed: re-seeds fences (with the embargo),
   * then re-asserts every lease this process holds. One recovery at a time; a trigger while one
   * runs joins it. A failure is logged, and the next heartbeat notices and triggers again.
   */
  trigger(reason: string): void;
  /** Leases the re-assert found held by someone else go here (the coordinator stops them). */
  onLost(listener: (lost: LostLease[]) => void): void;
}

export function createRedisResetRecovery({ deps, guard, holder, recorder, clock }: RedisResetRecoveryOptions): RedisResetRecovery {
  const { leases, log, ttlMs } = deps;
  let resetting: Promise<void> | undefined;
  let lostListener: (lost: LostLease[]) => void = () => undefined;
  return {
    trigger(reason) {
      resetting ??= (async () => {
        log.error({ reason }, 'Redis lost or reset its data: re-seeding fences and re-asserting leases');
        recorder.serverLog({ serverId: deps.serverId ?? 'unknown', level: 'error', event: 'redis_reset', message: reason });
        await reseedFences(deps, true);
        const sentAt = clock();
        const lost = await leases.reassert(holder, ttlMs, guard.held());
        guard.renewed(sentAt);
        if (lost.length > 0) lostListener(lost);
      })()
        .catch((err) => log.error({ err }, 'recovery from the Redis reset failed; the next heartbeat retries'))
        .finally(() => {
          resetting = undefined;
        });
    },
    onLost(listener) {
      lostListener = listener;
    },
  };
}
