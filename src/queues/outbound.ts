import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { BullQueuePart, ClusterKeys } from '../cluster/keys.js';
import type { LeaseGuard } from '../cluster/lease-guard.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics, QueueCounts } from '../metrics/index.js';
import { WafleetError } from '../shared/errors.js';
import { defineLuaScripts, loadLuaScript, runLua } from '../shared/lua.js';
import { waMessageIdFor, type MessageRecords, type OutboundMessage } from './messages.js';
import { holderId } from '../cluster/lease-value.js';

// Outbound messages on BullMQ: one queue per device, `wa-out-<deviceId>`, so a device's messages
// keep their order (one worker, concurrency 1), are paced per device (a sliding window checked
// in beginSend, the queue paused until a slot frees), and stay in Redis when the device moves: the new owner opens a worker on the same
// queue and carries on. Only the lease holder runs a device's worker, and every send checks the
// lease token immediately before it happens (beginSend).

const reclaimScript = loadLuaScript(new URL('./lua/', import.meta.url), 'reclaimActiveJobs.lua');
const orderScript = loadLuaScript(new URL('./lua/', import.meta.url), 'orderWaitingJobs-1.lua');

export const OUTBOUND_QUEUE_PREFIX = 'wa-out-';
export const outboundQueueName = (deviceId: string) => `${OUTBOUND_QUEUE_PREFIX}${deviceId}`;

/** A send that can never succeed (invalid number, logged out): failed at once, not retried. */
export class PermanentSendError extends WafleetError {
  constructor(message: string) {
    super('permanent_send_error', message);
  }
}

export interface MessageSender {
  /** Whether the device runs here under `token` with a connected socket. */
  ready(deviceId: string, token: number): boolean;
  /** Sends through the device's open socket, with WhatsApp's message id fixed in advance. */
  send(deviceId: string, token: number, message: OutboundMessage, waMessageId: string): Promise<void>;
}

export interface OutboundOptions {
  redis: Redis;
  keys: ClusterKeys;
  records: MessageRecords;
  guard: LeaseGuard;
  sender: MessageSender;
  log: Logger;
  serverId: string;
  /** This process's boot id, named in the lease values it holds (absent: the bare server id). */
  bootId?: string;
  /** Messages per minute per device (ban protection): never more in any 60-second window. */
  ratePerMinute: number;
  /** The rate window; 60 s in production, shorter in tests. */
  rateWindowMs?: number;
  /** Random pause before each send, like the seed's broadcast delays; [0, 0] for none. */
  delayMs: readonly [number, number];
  attempts: number;
  /** How long a job stays locked by its worker; a dead owner's job is retried after this. */
  lockDurationMs: number;
  retentionMs: number;
  /**
   * The producer to queue with, when the composition root shares one (the message restore runs
   * before this exists); its owner closes it. Without it, this makes and closes its own.
   */
  producer?: OutboundProducer;
  metrics?: Pick<Metrics, 'jobs' | 'messagesSent' | 'messagesFailed'>;
}

export interface OutboundProducer {
  /** Queues an accepted message on its device's queue (idempotent by message id). */
  enqueue(messageId: string, deviceId: string): Promise<void>;
  /**
   * Queues a message whose Redis record had to be re-created (Redis lost its data): a job left
   * for it finished as `missing` without sending, and would keep a plain enqueue from adding it,
   * so it goes first (unless a worker holds it).
   */
  requeue(messageId: string, deviceId: string): Promise<void>;
  /**
   * Moves the device's waiting jobs among `messageIds` (in accept order) to just behind `anchor`
   * ('' for the head of the line); returns the new anchor (see orderWaitingJobs-1.lua).
   */
  orderWaiting(deviceId: string, anchor: string, messageIds: readonly string[]): Promise<string>;
  close(): Promise<void>;
}

/** Any server queues messages for any device; the queue lives in Redis, not with the owner. */
export function createOutboundProducer({ redis, keys, retentionMs }: { redis: Redis; keys: ClusterKeys; retentionMs: number }): OutboundProducer {
  const queues = new Map<string, Queue>();
  defineLuaScripts(redis, [orderScript]);
  const queueOf = (deviceId: string): Queue => {
    let queue = queues.get(deviceId);
    if (!queue) {
      queue = new Queue(outboundQueueName(deviceId), { connection: redis, prefix: keys.bullPrefix });
      queues.set(deviceId, queue);
    }
    return queue;
  };
  const enqueue = async (messageId: string, deviceId: string): Promise<void> => {
    await queueOf(deviceId).add(
      'send',
      { messageId },
      {
        jobId: messageId,
        // Retries happen at the head of the line (see processFor); BullMQ's own retries would
        // let later messages overtake.
        attempts: 1,
        removeOnComplete: { age: 3600, count: 1000 },
        removeOnFail: { age: Math.round(retentionMs / 1000) },
      },
    );
  };
  return {
    enqueue,
    async requeue(messageId, deviceId) {
      await queueOf(deviceId).remove(messageId);
      await enqueue(messageId, deviceId);
    },
    async orderWaiting(deviceId, anchor, messageIds) {
      if (messageIds.length === 0) return anchor;
      return runLua<string>(redis, orderScript, [keys.bullQueue(outboundQueueName(deviceId), 'wait')], [anchor, ...messageIds]);
    },
    async close() {
      await Promise.allSettled([...queues.values()].map((queue) => queue.close()));
      queues.clear();
    },
  };
}

export interface Outbound extends OutboundProducer {
  /** Starts the device's worker under the lease token (on claim). */
  startDevice(deviceId: string, token: number): void;
  /**
   * Stops the device's worker (lease lost, drain, stop, retired); its jobs wait for the next
   * owner. With `token`, only the worker started under that token.
   */
  stopDevice(deviceId: string, token?: number): Promise<void>;
  /** Devices whose worker runs here. */
  devices(): string[];
  stopAllDevices(): Promise<void>;
  /** Jobs by state over the queues of the devices this server runs, in one round trip. */
  jobCounts(): Promise<QueueCounts>;
  close(): Promise<void>;
}

export function createOutbound(options: OutboundOptions): Outbound {
  const { redis, keys, records, guard, sender, log, metrics } = options;
  const counted = (outcome: 'completed' | 'failed' | 'retried' | 'deferred') => metrics?.jobs.inc({ queue: 'outbound', outcome });
  const ownProducer = options.producer ? null : createOutboundProducer(options);
  const producer = options.producer ?? ownProducer!;
  const workers = new Map<string, { worker: Worker; token: number }>();
  const stopWorker = async (deviceId: string, token: number): Promise<void> => {
    const current = workers.get(deviceId);
    if (!current || current.token !== token) return;
    workers.delete(deviceId);
    await current.worker.close().catch(() => undefined);
  };
  defineLuaScripts(redis, [reclaimScript]);

  /** Puts a job the previous owner left active back at the head of the queue (see the script). */
  const reclaim = async (deviceId: string): Promise<number> => {
    const queue = outboundQueueName(deviceId);
    const key = (part: BullQueuePart) => keys.bullQueue(queue, part);
    const active = (await redis.lrange(key('active'), 0, -1)).reverse();
    if (active.length === 0) return 0;
    return runLua<number>(
      redis,
      reclaimScript,
      [key('active'), key('wait'), key('stalled'), key('marker'), ...active.map((id) => key(`${id}:lock`))],
      active,
    );
  };

  /**
   * One message, head of its device's line. Anything that means "not now" (the socket is not
   * connected yet, the lease is moving, a send failed in a way that may pass) puts the job back at
   * the head of the queue and pauses the device's queue for a while (BullMQ's rate-limit
   * mechanism, which neither counts an attempt nor lets the next message overtake). Attempts are
   * counted in the message record; past MESSAGE_ATTEMPTS, or on a permanent error, the message
   * fails with its reason and the line moves on.
   */
  const processFor = (deviceId: string, token: number, worker: () => Worker) => async (job: Job<{ messageId: string }>) => {
    const { messageId } = job.data;
    const later = async (ms: number, outcome: 'retried' | 'deferred' = 'deferred'): Promise<never> => {
      counted(outcome);
      await worker().rateLimit(ms);
      throw Worker.RateLimitError();
    };
    try {
      guard.check(deviceId, token);
    } catch {
      // The device stopped here without the coordinator (retired: logged out, never scanned):
      // nothing will run this queue under this token again, so the worker goes too.
      if (guard.tokenOf(deviceId) !== token && !guard.isFenced()) void stopWorker(deviceId, token);
      return later(1000);
    }
    if (!sender.ready(deviceId, token)) return later(250);
    const [min, max] = options.delayMs;
    if (max > 0) await new Promise((r) => setTimeout(r, min + Math.random() * (max - min)));
    const begun = await records.begin(messageId, deviceId, holderId(options.serverId, options.bootId), token, {
      limit: options.ratePerMinute,
      windowMs: options.rateWindowMs ?? 60_000,
    });
    if (begun.outcome === 'sent' || begun.outcome === 'missing') {
      counted('completed');
      return;
    }
    if (begun.outcome === 'not_owner') return later(1000);
    if (begun.outcome === 'wait') return later(begun.ms);
    const record = await records.get(messageId);
    if (!record) {
      counted('completed');
      return;
    }
    const waMessageId = waMessageIdFor(messageId);
    try {
      await sender.send(deviceId, token, record, waMessageId);
    } catch (err) {
      const reason = (err as Error).message;
      if (err instanceof PermanentSendError || begun.attempt >= options.attempts) {
        await records.finish(messageId, deviceId, 'failed', reason);
        counted('failed');
        metrics?.messagesFailed.inc();
        log.warn({ deviceId, messageId, attempt: begun.attempt, reason }, 'message failed');
        throw new UnrecoverableError(reason);
      }
      log.info({ deviceId, messageId, attempt: begun.attempt, reason }, 'message send failed; retrying');
      return later(Math.min(60_000, 1000 * 2 ** (begun.attempt - 1)), 'retried');
    }
    await records.finish(messageId, deviceId, 'sent', waMessageId, options.rateWindowMs ?? 60_000);
    counted('completed');
    metrics?.messagesSent.inc();
  };

  return {
    enqueue: producer.enqueue,
    requeue: producer.requeue,
    orderWaiting: producer.orderWaiting,

    startDevice(deviceId, token) {
      const current = workers.get(deviceId);
      if (current?.token === token) return;
      if (current) void current.worker.close().catch(() => undefined);
      const worker: Worker = new Worker(outboundQueueName(deviceId), processFor(deviceId, token, () => worker), {
        connection: redis,
        prefix: keys.bullPrefix,
        concurrency: 1,
        lockDuration: options.lockDurationMs,
        stalledInterval: Math.max(1000, Math.floor(options.lockDurationMs / 2)),
        // Started below, once a job the previous owner left active is back in line.
        autorun: false,
      });
      worker.on('failed', (job, err) => {
        // Unexpected errors (Redis trouble inside the processor): the record says why.
        if (job && !(err instanceof UnrecoverableError)) {
          counted('failed');
          metrics?.messagesFailed.inc();
          void records.finish((job.data as { messageId: string }).messageId, deviceId, 'failed', err.message).catch(() => undefined);
        }
      });
      worker.on('error', (err) => log.warn({ deviceId, err }, 'outbound worker error'));
      workers.set(deviceId, { worker, token });
      void reclaim(deviceId)
        .then((moved) => {
          if (moved > 0) log.info({ deviceId, moved }, 'took back a message the previous owner had in hand');
        })
        .catch((err) => log.warn({ deviceId, err }, 'could not take back active messages'))
        .finally(() => {
          if (workers.get(deviceId)?.worker === worker) void worker.run().catch((err) => log.warn({ deviceId, err }, 'outbound worker stopped'));
        });
    },

    async stopDevice(deviceId, token) {
      const current = workers.get(deviceId);
      if (current) await stopWorker(deviceId, token ?? current.token);
    },

    devices: () => [...workers.keys()],

    async stopAllDevices() {
      const running = [...workers.values()];
      workers.clear();
      await Promise.allSettled(running.map(({ worker }) => worker.close()));
    },

    async jobCounts() {
      const deviceIds = [...workers.keys()];
      if (deviceIds.length === 0) return { waiting: 0, active: 0, delayed: 0, failed: 0 };
      // BullMQ's own key layout (the same one reclaim uses): raw reads pipelined in one round
      // trip, rather than one getJobCounts script per device queue.
      const pipeline = redis.pipeline();
      for (const deviceId of deviceIds) {
        const key = (part: BullQueuePart) => keys.bullQueue(outboundQueueName(deviceId), part);
        pipeline.llen(key('wait')).llen(key('paused')).zcard(key('prioritized')).llen(key('active')).zcard(key('delayed')).zcard(key('failed'));
      }
      const results = (await pipeline.exec()) ?? [];
      const n = (i: number) => {
        const [err, value] = results[i] ?? [null, 0];
        if (err) throw err;
        return Number(value) || 0;
      };
      const counts = { waiting: 0, active: 0, delayed: 0, failed: 0 };
      for (let i = 0; i < results.length; i += 6) {
        counts.waiting += n(i) + n(i + 1) + n(i + 2);
        counts.active += n(i + 3);
        counts.delayed += n(i + 4);
        counts.failed += n(i + 5);
      }
      return counts;
    },

    async close() {
      await this.stopAllDevices();
      await ownProducer?.close();
    },
  };
}
