import { DelayedError, Queue, UnrecoverableError, Worker, type Job, type JobsOptions } from 'bullmq';
import type { Counter } from 'prom-client';
import type { ClusterKeys } from '../cluster/keys.js';
import { eventView, type EventLog, type EventView } from '../events/event-log.js';
import type { GuardedHttpClient } from '../shared/guarded-http.js';
import type { Logger } from '../shared/logger.js';
import { loadLuaScript, runLua } from '../shared/lua.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import { redactUserUrl } from '../shared/redact.js';
import { PAUSED_PREFIX, takePumpLock, type HeldPumpLock } from './pump-lock.js';
import { deliveryHeaders } from './signing.js';
import type { TargetName, WebhookFailure, WebhookTarget, WebhookTargets } from './targets.js';

// Webhook delivery on one BullMQ queue that every server works (not a worker per device):
//
// - wake(deviceId), told of each new event, marks each of the device's targets woken and adds a
//   small `pump` job per target.
// - A pump takes the target's pump lock (one run per target of a device, cluster-wide). If it
//   cannot, it returns: the holder clears the wake flag before each read and checks it again
//   after letting go, so an event appended at any moment is read by someone. (Should the holder
//   die, BullMQ's stall check runs its job again; and a pump that found the lock held while woken
//   leaves a delayed pump for when the hold runs out.)
// - The holder reads the events after the target's cursor from the event log and POSTs them one
//   by one, in sequence, moving the cursor past each on a 2xx (fenced by the lock: a run that lost
//   it writes nothing).
// - An event that fails (not 2xx in time, a refused address) becomes its own `retry` job
//   (exponential back-off with jitter, for up to WEBHOOK_RETRY_HOURS); the cursor moves past it
//   and the target is paused for that first retry interval, so a failing event holds back the
//   rest for one interval at most. After its last try it is dead-lettered: a failed job (in
//   BullBoard) and an entry in the target's failures list (GET /api/devices/:id/webhook/failures).
// - A run yields after maxRunMs (a new pump goes to the back of the queue), so a slow receiver
//   holds one worker slot at a time, and other devices' pumps run beside it.
//
// Ordering: per target of a device, in sequence while the receiver answers; at least once (a run
// that dies between a 2xx and its cursor move sends that event again); retries may arrive after
// later events.

const advanceScript = loadLuaScript(new URL('./lua/', import.meta.url), 'advanceWebhookCursor-3.lua');

export const WEBHOOK_QUEUE = 'wa-webhooks';

/** What delivery counts; metrics/ registers it (a declared need, as cluster/ declares LeaseMetrics). */
export interface WebhookMetrics {
  /** Delivery attempts by target (`device`, `operator`) and outcome (`delivered`, `failed`). */
  readonly webhookDeliveries: Counter<'target' | 'outcome'>;
  /** Events given up on after their last retry, by target. */
  readonly webhookDeadLetters: Counter<'target'>;
}

interface PumpJob {
  kind: 'pump';
  deviceId: string;
  target: TargetName;
  /** Counts the delayed pumps left after a held lock, so each gets a job id of its own. */
  round: number;
}

interface RetryJob {
  kind: 'retry';
  deviceId: string;
  target: TargetName;
  payload: EventView;
  /** Attempts so far, the pump's first one included. */
  attempts: number;
  /** ms since the epoch: the retry window runs from here. */
  firstAttemptAt: number;
  lastError: string;
}

type WebhookJob = PumpJob | RetryJob;

export interface DeliveryTuning {
  /** The first retry interval (and a failing target's pause); doubles per try up to retryCapMs. */
  retryBaseMs: number;
  retryCapMs: number;
  /** The pump lock's hold, renewed at a third of it; also the BullMQ lock of a job. */
  lockMs: number;
  /** A run yields (its target goes to the back of the queue) after this long. */
  maxRunMs: number;
  /** Events read from the log at a time. */
  batchSize: number;
  /** How long dead letters are kept (the list and the failed jobs). */
  deadLetterMs: number;
  /** Dead letters kept per target of a device. */
  maxDeadLetters: number;
}

export const DEFAULT_DELIVERY_TUNING: Readonly<DeliveryTuning> = Object.freeze({
  retryBaseMs: 5000,
  retryCapMs: 3_600_000,
  lockMs: 30_000,
  maxRunMs: 10_000,
  batchSize: 100,
  deadLetterMs: 7 * 86_400_000,
  maxDeadLetters: 1000,
});

export interface WebhookDeliveryOptions {
  /** Commands (locks, cursors, flags). */
  redis: Redis;
  /** BullMQ's connection (no retry limit: its blocking reads need one). */
  bull: Redis;
  keys: ClusterKeys;
  events: Pick<EventLog, 'read'>;
  targets: Pick<WebhookTargets, 'active' | 'resolve'>;
  /** The guarded client, with WEBHOOK_TIMEOUT_MS and no redirects followed: `user` for URLs users gave, `trusted` for the operator's. */
  http: { user: GuardedHttpClient; trusted: GuardedHttpClient };
  log: Logger;
  /** WEBHOOK_RETRY_HOURS in ms: an event is retried for this long after its first try. */
  retryMs: number;
  /** Jobs one server works at once (WEBHOOK_CONCURRENCY). */
  concurrency: number;
  /** How long the event log keeps events (EVENTS_RETENTION_HOURS): a wake flag lives as long. */
  eventRetentionMs: number;
  tuning?: Partial<DeliveryTuning>;
  metrics?: WebhookMetrics;
  /**
   * Told how far the device's webhooks have got for good: every target of the device (its own
   * webhook, the operator's) is done with every event up to `sequence` (delivered, not subscribed
   * to, or dead-lettered; an event still being retried holds it below). For writing the progress
   * behind to the store, from which the event restore sets both cursors after Redis lost its data.
   */
  onDelivered?: (deviceId: string, sequence: number) => void;
}

export interface WebhookDelivery {
  /** The device has new events: each of its targets is worked soon. Never throws. */
  wake(deviceId: string): Promise<void>;
  /** This server's worker on the queue (every server runs one). */
  startWorkers(): Promise<void>;
  jobCounts(): Promise<{ waiting: number; active: number; delayed: number; failed: number }>;
  close(): Promise<void>;
}

type SendResult = { ok: true } | { ok: false; error: string };
type RunOutcome = { kind: 'done' } | { kind: 'yield' } | { kind: 'lost' } | { kind: 'paused'; pauseMs: number };

export function createWebhookDelivery(options: WebhookDeliveryOptions): WebhookDelivery {
  const { redis, bull, keys, events, targets, http, log, metrics } = options;
  const tuning: DeliveryTuning = { ...DEFAULT_DELIVERY_TUNING, ...options.tuning };
  const queue = new Queue<WebhookJob>(WEBHOOK_QUEUE, { connection: bull, prefix: keys.bullPrefix });
  let worker: Worker<WebhookJob> | undefined;
  let closing: Promise<void> | undefined;

  // A pump that throws met Redis failing outside a run (taking the lock): tried again shortly.
  // Its failed jobs are kept an hour only, apart from the dead letters (retry jobs), kept a week.
  const pumpOptions: JobsOptions = { removeOnComplete: true, removeOnFail: { age: 3600 }, attempts: 5, backoff: { type: 'exponential', delay: 500 } };
  const wakeKey = (deviceId: string, target: TargetName) => keys.webhookWake(deviceId, target);

  /** Full back-off for the n-th retry (n >= 1), with ±25 % jitter so a burst of failures spreads out. */
  const retryDelay = (n: number): number => Math.min(tuning.retryCapMs, tuning.retryBaseMs * 2 ** (n - 1)) * (0.75 + Math.random() * 0.5);

  const addPump = (deviceId: string, target: TargetName, round: number, delayMs: number, jobId?: string) =>
    queue.add('pump', { kind: 'pump', deviceId, target, round }, { ...pumpOptions, ...(jobId ? { jobId } : {}), delay: Math.max(0, Math.round(delayMs)) });

  /** A pump for when `holder`'s hold runs out; one per holder and round (the id), however many find it held. */
  const pumpAfter = (deviceId: string, target: TargetName, holder: string, round: number, delayMs: number) =>
    addPump(deviceId, target, round, delayMs, `after.${target}.${deviceId}.${holder}.${round}`);

  const send = async (target: WebhookTarget, payload: EventView): Promise<SendResult> => {
    const body = JSON.stringify(payload);
    try {
      const res = await (target.trusted ? http.trusted : http.user).request(target.url, { method: 'POST', headers: deliveryHeaders(payload.id, body, target.secret, Date.now()), body, readBody: false });
      if (res.status >= 200 && res.status < 300) return { ok: true };
      return { ok: false, error: `${redactUserUrl(target.url)} answered ${res.status}` };
    } catch (err) {
      return { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
  };

  const counted = (target: TargetName, result: SendResult) => metrics?.webhookDeliveries.inc({ target, outcome: result.ok ? 'delivered' : 'failed' });

  const advance = async (deviceId: string, target: TargetName, lock: HeldPumpLock, sequence: number): Promise<boolean> => {
    const moved = await runLua<number>(redis, advanceScript, [keys.webhookPump(deviceId, target), keys.webhookCursor(deviceId, target), keys.eventSeq(deviceId)], [lock.holder, sequence]);
    if (moved !== 1) return false;
    if (options.onDelivered) await reportProgress(deviceId);
    return true;
  };

  /**
   * How far every target of the device has got for good: each target's cursor, but below the
   * first event it is still retrying (retry jobs live in Redis only; after a loss the restore
   * starts each target again from here, so a retried event is delivered again, not forgotten).
   */
  const reportProgress = async (deviceId: string): Promise<void> => {
    const names = await targets.active(deviceId);
    if (names.length === 0) return;
    const reads = redis.multi();
    for (const name of names) reads.get(keys.webhookCursor(deviceId, name)).zrange(keys.webhookRetrying(deviceId, name), 0, 0);
    const replies = ((await reads.exec()) ?? []).map(([err, value]) => {
      if (err) throw err;
      return value;
    });
    let progress = Infinity;
    for (let i = 0; i < replies.length; i += 2) {
      const cursor = Number(replies[i] ?? 0);
      const [firstRetrying] = replies[i + 1] as string[];
      progress = Math.min(progress, firstRetrying === undefined ? cursor : Math.min(cursor, Number(firstRetrying) - 1));
    }
    if (progress > 0) options.onDelivered?.(deviceId, progress);
  };

  /** A retried event is settled (delivered, no longer wanted, or dead-lettered): progress may move past it. */
  const settled = async (deviceId: string, target: TargetName, sequence: number): Promise<void> => {
    await redis.zrem(keys.webhookRetrying(deviceId, target), String(sequence));
    if (options.onDelivered) await reportProgress(deviceId);
  };

  /** The holder's work: every event after the cursor, in sequence, until none is left (or it must stop). */
  const drain = async (deviceId: string, target: TargetName, lock: HeldPumpLock): Promise<RunOutcome> => {
    const started = performance.now();
    for (;;) {
      // Cleared before reading: whatever is appended from here on is either in this read or
      // sets the flag again, which this run checks once more before it ends.
      await redis.del(wakeKey(deviceId, target));
      const resolved = await targets.resolve(deviceId, target);
      if (!resolved) return { kind: 'done' };
      const [[, cursorRaw], [, lastRaw], [, storedRaw]] = (await redis
        .multi()
        .get(keys.webhookCursor(deviceId, target))
        .get(keys.eventSeq(deviceId))
        .get(keys.eventStored(deviceId))
        .exec()) as [[unknown, string | null], [unknown, string | null], [unknown, string | null]];
      // Only what the store has: a number handed to a receiver must survive Redis losing its data.
      // The write-behind wakes this target again when it applies more.
      const last = Math.min(Number(lastRaw ?? 0), Number(storedRaw ?? 0));
      // A cursor past the numbering is from before the device's numbering started again (its
      // events were deleted, or Redis lost them with no store to restore them from).
      const cursor = Number(cursorRaw ?? 0) > Number(lastRaw ?? 0) ? 0 : Number(cursorRaw ?? 0);
      if (cursor >= last) return { kind: 'done' };
      const batch = (await events.read(deviceId, cursor, tuning.batchSize)).filter((event) => event.sequence <= last);
      if (batch.length === 0) return { kind: 'done' };
      for (const event of batch) {
        if (lock.lost) return { kind: 'lost' };
        if (!resolved.events || resolved.events.includes(event.type)) {
          const payload = eventView(deviceId, event);
          const result = await send(resolved, payload);
          counted(target, result);
          if (!result.ok) {
            const pauseMs = retryDelay(1);
            log.info({ deviceId, target, eventId: event.id, sequence: event.sequence, retryInMs: Math.round(pauseMs), error: result.error }, 'webhook delivery failed; retrying it on its own');
            const retry: RetryJob = { kind: 'retry', deviceId, target, payload, attempts: 1, firstAttemptAt: Date.now(), lastError: result.error };
            // Before the cursor moves past it: the progress written to the store stays below it until it is settled.
            const retrying = keys.webhookRetrying(deviceId, target);
            await redis.multi().zadd(retrying, event.sequence, String(event.sequence)).pexpire(retrying, options.retryMs + tuning.retryCapMs).exec();
            await queue.add('retry', retry, {
              jobId: `retry.${target}.${deviceId}.${event.id}`,
              delay: Math.round(pauseMs),
              removeOnComplete: { age: 3600, count: 1000 },
              removeOnFail: { age: Math.round(tuning.deadLetterMs / 1000) },
            });
            if (!(await advance(deviceId, target, lock, event.sequence))) return { kind: 'lost' };
            return { kind: 'paused', pauseMs };
          }
        }
        if (!(await advance(deviceId, target, lock, event.sequence))) return { kind: 'lost' };
        if (performance.now() - started > tuning.maxRunMs) return { kind: 'yield' };
      }
    }
  };

  const pump = async ({ deviceId, target, round }: PumpJob): Promise<string> => {
    for (;;) {
      const took = await takePumpLock(redis, keys, deviceId, target, tuning.lockMs);
      if (!took.taken) {
        const { holder } = took;
        // Let go between the SET and the GET: free again, so try again.
        if (holder === null) continue;
        // Held by a live run, which sees the wake flag; or by a run whose server died (BullMQ's
        // stall check re-runs its job, maybe before the hold runs out); or paused after a failure.
        // Either way a pump is left for when the hold ends, once per holder.
        const paused = holder.startsWith(PAUSED_PREFIX);
        if (paused || (await redis.exists(wakeKey(deviceId, target))) === 1) {
          await pumpAfter(deviceId, target, holder, round + 1, took.ttlMs + 100);
        }
        return paused ? 'paused' : 'held elsewhere';
      }
      const { lock } = took;
      let outcome: RunOutcome;
      try {
        outcome = await drain(deviceId, target, lock);
      } catch (err) {
        // The store or Redis failed under the run: nothing is lost (the cursor moved only past
        // what was handed on); the target is tried again shortly.
        log.warn({ err, deviceId, target }, 'webhook delivery run failed; trying again shortly');
        await redis.set(wakeKey(deviceId, target), '1', 'PX', options.eventRetentionMs);
        await lock.release(tuning.retryBaseMs);
        await pumpAfter(deviceId, target, lock.pauseValue, 0, tuning.retryBaseMs + 50);
        return 'failed';
      }
      switch (outcome.kind) {
        case 'lost':
          return 'lock lost';
        case 'paused':
          if (await lock.release(outcome.pauseMs)) await pumpAfter(deviceId, target, lock.pauseValue, 0, outcome.pauseMs + 50);
          return 'paused';
        case 'yield':
          await redis.set(wakeKey(deviceId, target), '1', 'PX', options.eventRetentionMs);
          await lock.release();
          await addPump(deviceId, target, 0, 0);
          return 'yielded';
        case 'done':
          await lock.release();
          // An event appended after the last read and before the release found the lock held.
          if ((await redis.exists(wakeKey(deviceId, target))) === 0) return 'done';
      }
    }
  };

  const deadLetter = async (job: RetryJob, now: number): Promise<void> => {
    const failure: WebhookFailure = {
      eventId: job.payload.id,
      type: job.payload.type,
      attempts: job.attempts,
      lastError: job.lastError,
      lastAttemptAt: new Date(now).toISOString(),
    };
    const key = keys.webhookFailures(job.deviceId, job.target);
    await redis
      .multi()
      .lpush(key, JSON.stringify(failure))
      .ltrim(key, 0, tuning.maxDeadLetters - 1)
      .pexpire(key, tuning.deadLetterMs)
      .exec();
    metrics?.webhookDeadLetters.inc({ target: job.target });
    log.warn({ deviceId: job.deviceId, target: job.target, eventId: failure.eventId, attempts: failure.attempts, error: failure.lastError }, 'webhook delivery dead-lettered');
  };

  const retry = async (job: Job<WebhookJob>, data: RetryJob, token: string | undefined): Promise<string> => {
    let result: SendResult;
    try {
      const target = await targets.resolve(data.deviceId, data.target);
      // Removed since, or no longer subscribed: nobody wants it any more.
      if (!target || (target.events && !target.events.includes(data.payload.type))) {
        await settled(data.deviceId, data.target, data.payload.sequence);
        return target ? 'not subscribed' : 'target removed';
      }
      result = await send(target, data.payload);
    } catch (err) {
      result = { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
    counted(data.target, result);
    if (result.ok) {
      await settled(data.deviceId, data.target, data.payload.sequence);
      return 'delivered';
    }
    const now = Date.now();
    const next: RetryJob = { ...data, attempts: data.attempts + 1, lastError: result.error };
    const delay = retryDelay(next.attempts);
    if (now + delay > data.firstAttemptAt + options.retryMs) {
      await deadLetter(next, now);
      await settled(data.deviceId, data.target, data.payload.sequence);
      throw new UnrecoverableError(`dead-lettered after ${next.attempts} attempts: ${result.error}`);
    }
    await job.updateData(next);
    await job.moveToDelayed(now + Math.round(delay), token);
    throw new DelayedError();
  };

  return {
    async wake(deviceId) {
      try {
        const names = await targets.active(deviceId);
        if (names.length === 0) return;
        const flags = redis.multi();
        for (const target of names) flags.set(wakeKey(deviceId, target), '1', 'PX', options.eventRetentionMs);
        await flags.exec();
        await queue.addBulk(names.map((target) => ({ name: 'pump', data: { kind: 'pump', deviceId, target, round: 0 }, opts: pumpOptions })));
      } catch (err) {
        log.warn({ err, deviceId }, "webhook wake failed; the device's next event wakes its delivery again");
      }
    },

    async startWorkers() {
      if (worker) return;
      worker = new Worker<WebhookJob>(
        WEBHOOK_QUEUE,
        async (job, token) => (job.data.kind === 'pump' ? pump(job.data) : retry(job, job.data, token)),
        {
          connection: bull,
          prefix: keys.bullPrefix,
          concurrency: options.concurrency,
          lockDuration: tuning.lockMs,
          stalledInterval: Math.max(1000, Math.floor(tuning.lockMs / 2)),
          // A pump or a retry whose server died is run again (at least once), however often.
          maxStalledCount: 1000,
        },
      );
      worker.on('error', (err) => log.warn({ err }, 'webhook worker error'));
      worker.on('failed', (job, err) => {
        if (job?.data.kind === 'pump') log.warn({ err, jobId: job.id, deviceId: job.data.deviceId }, 'webhook pump failed');
      });
      await worker.waitUntilReady();
    },

    async jobCounts() {
      const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'failed');
      return { waiting: counts.wait ?? 0, active: counts.active ?? 0, delayed: counts.delayed ?? 0, failed: counts.failed ?? 0 };
    },

    close() {
      closing ??= (async () => {
        for (const step of [() => worker?.close(), () => queue.close()]) {
          try {
            await step();
          } catch (err) {
            log.warn({ err }, 'webhook delivery close step failed');
          }
        }
      })();
      return closing;
    },
  };
}
