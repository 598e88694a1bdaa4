import { randomUUID } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import type { SessionSnapshotWriter } from '../devices/auth-state/auth-state.js';
import type { Metrics, QueueCounts } from '../metrics/index.js';
import type { Logger } from '../shared/logger.js';
import { StoreUnavailableError } from '../store/errors.js';
import type { ApplyRecordsReport, Store, StoreRecord } from '../store/types.js';

// Write-behind to the store on BullMQ. The lease core never waits on the store: a record is put
// in a BullMQ job (so it survives this process) and applied to the store by whichever server's
// worker takes the job, retried for as long as the store is down.
//
// Order per device: records are sharded by device (server logs by server) over STORE_SYNC_SHARDS
// queues `wa-sync-<n>`, each with a global concurrency of one, so across the whole cluster one
// batch of a shard is applied at a time, oldest first. A batch the store cannot take goes back to
// the head of its queue (BullMQ's rate-limit mechanism, which pauses the shard for every worker)
// instead of being retried behind later batches. Applying a batch twice changes nothing (record
// ids, fenced updates), so a worker dying mid-batch is harmless.

export const STORE_SYNC_QUEUE_PREFIX = 'wa-sync-';
/**
 * Fixed: a device's shard must not change while records are in flight. Four queues keep batches
 * of different devices apart without one blocking connection per device.
 */
export const STORE_SYNC_SHARDS = 4;
export const storeSyncQueueName = (shard: number) => `${STORE_SYNC_QUEUE_PREFIX}${shard}`;

/** The durable session snapshot: read from the Redis hot copy when applied, fenced by epoch. */
export interface SessionSnapshotRecord {
  kind: 'session_snapshot';
  at: string;
  deviceId: string;
  epoch: number;
}

export type SyncRecord = StoreRecord | SessionSnapshotRecord;

/** What a record needs besides its content: the caller never makes ids or timestamps. */
export type NewSyncRecord = SyncRecord extends infer R ? (R extends SyncRecord ? Omit<R, 'id' | 'at'> : never) : never;

export interface StoreSyncOptions {
  /** A connection without a retry limit (BullMQ's blocking reads need one). */
  redis: Redis;
  keys: ClusterKeys;
  store: Pick<Store, 'applyRecords'>;
  snapshots: SessionSnapshotWriter;
  log: Logger;
  /** Records gathered for this long go out as one job. */
  batchDelayMs?: number;
  /** Largest batch per job. */
  maxBatch?: number;
  /** Retry pacing while the store is down: doubles from the first value up to the second. */
  retryBackoffMs?: readonly [number, number];
  /** Completed jobs are kept this long for inspection in BullBoard; failed ones for retentionMs. */
  retentionMs: number;
  /**
   * How long a worker's hold on a batch lasts without renewal. A server that dies holding a batch
   * blocks its shard (global concurrency one) until the lock runs out and another worker's stall
   * check puts the batch back: the lease TTL is the natural bound.
   */
  lockDurationMs: number;
  /**
   * Told of each batch once the store has it, before its job completes: a failure here puts the
   * batch back like a store failure (applying it again changes nothing), so it is told again.
   */
  onApplied?: (records: readonly SyncRecord[]) => Promise<void>;
  /** Counts batches applied (`completed`) and put back while the store is down (`deferred`). */
  metrics?: Pick<Metrics, 'jobs'>;
}

export interface StoreSyncStats {
  /** Jobs waiting or being applied, all shards. */
  pending: number;
  /** Age of the oldest job not yet applied (0 when none): how far the store trails Redis. */
  lagMs: number;
}

export interface StoreSync {
  /** Queues a record behind the earlier records of its device (or server). Never throws. */
  push(record: NewSyncRecord): void;
  /** Resolves when every record pushed so far is in Redis (in a job), not necessarily applied. */
  flush(): Promise<void>;
  /** Starts this server's share of the workers (every server runs one per shard). */
  startWorkers(): Promise<void>;
  stats(): Promise<StoreSyncStats>;
  /** Jobs by state over every shard, for the queue-depth metric. */
  jobCounts(): Promise<QueueCounts>;
  /**
   * Waits until no record is pending in any shard (true) or `timeoutMs` passes (false). A server
   * that stops calls it after flush so its last records reach the store while its workers still
   * run; whatever is left waits in Redis for the next server.
   */
  settle(timeoutMs: number): Promise<boolean>;
  /** Stops the workers (a batch in hand finishes or goes back) and the producers. */
  close(): Promise<void>;
}

/** FNV-1a: stable across processes and releases, unlike anything keyed on object identity. */
export function syncShardOf(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % STORE_SYNC_SHARDS;
}

const orderKey = (record: NewSyncRecord): string => (record.kind === 'server_log' ? `server:${record.serverId}` : record.deviceId);

export function createStoreSync(options: StoreSyncOptions): StoreSync {
  const { redis, keys, store, snapshots, log } = options;
  const batchDelayMs = options.batchDelayMs ?? 5;
  const maxBatch = options.maxBatch ?? 500;
  const [firstBackoffMs, maxBackoffMs] = options.retryBackoffMs ?? [250, 5000];
  const retentionSeconds = Math.round(options.retentionMs / 1000);

  const queues = Array.from({ length: STORE_SYNC_SHARDS }, (_, shard) => new Queue(storeSyncQueueName(shard), { connection: redis, prefix: keys.bullPrefix }));
  const buffers: SyncRecord[][] = queues.map(() => []);
  // One add in flight per shard, so this server's jobs enter each queue in the order pushed.
  const sending: Array<Promise<void> | undefined> = queues.map(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const send = (shard: number): Promise<void> => {
    const inFlight = sending[shard];
    if (inFlight) return inFlight;
    const run = (async () => {
      let backoff = firstBackoffMs;
      while (buffers[shard]!.length > 0) {
        const batch = buffers[shard]!.slice(0, maxBatch);
        try {
          await queues[shard]!.add('records', { records: batch }, {
            removeOnComplete: { age: 3600, count: 1000 },
            removeOnFail: { age: retentionSeconds },
          });
          buffers[shard]!.splice(0, batch.length);
          backoff = firstBackoffMs;
        } catch (err) {
          // Redis itself is unreachable: the records stay here, in order, until it answers.
          if (closed) throw err;
          log.warn({ shard, buffered: buffers[shard]!.length, err }, 'write-behind records not queued yet; retrying');
          await new Promise((resolve) => setTimeout(resolve, backoff));
          backoff = Math.min(maxBackoffMs, backoff * 2);
        }
      }
    })().finally(() => {
      sending[shard] = undefined;
    });
    sending[shard] = run;
    return run;
  };

  const sendAll = () => {
    timer = undefined;
    buffers.forEach((buffer, shard) => {
      if (buffer.length > 0) void send(shard).catch(() => undefined);
    });
  };

  const workers: Worker[] = [];

  /** Jobs not yet applied, over every shard. */
  const pendingJobs = async (): Promise<number> => {
    const counts = await Promise.all(queues.map((queue) => queue.getJobCounts('wait', 'active', 'prioritized', 'delayed')));
    return counts.reduce((n, c) => n + Object.values(c).reduce((sum, k) => sum + k, 0), 0);
  };

  const applyBatch = async (records: SyncRecord[]): Promise<ApplyRecordsReport> => {
    const total: ApplyRecordsReport = { applied: 0, duplicate: 0, fenced: 0, rejected: 0, errors: [] };
    let run: StoreRecord[] = [];
    const applyRun = async () => {
      if (run.length === 0) return;
      const report = await store.applyRecords(run);
      total.applied += report.applied;
      total.duplicate += report.duplicate;
      total.fenced += report.fenced;
      total.rejected += report.rejected;
      total.errors.push(...report.errors);
      run = [];
    };
    for (const [index, record] of records.entries()) {
      if (record.kind !== 'session_snapshot') {
        run.push(record);
        continue;
      }
      // The snapshot is read from Redis when applied, so only the batch's last one per device counts.
      const later = records.slice(index + 1).some((r) => r.kind === 'session_snapshot' && r.deviceId === record.deviceId && r.epoch >= record.epoch);
      if (later) continue;
      await applyRun();
      if (await snapshots.save(record.deviceId, record.epoch)) total.applied += 1;
      else total.fenced += 1;
    }
    await applyRun();
    return total;
  };

  const processorFor = (shard: number, worker: () => Worker) => {
    let backoff = firstBackoffMs;
    return async (job: Job<{ records: SyncRecord[] }>) => {
      try {
        const report = await applyBatch(job.data.records);
        await options.onApplied?.(job.data.records);
        backoff = firstBackoffMs;
        options.metrics?.jobs.inc({ queue: 'store-sync', outcome: 'completed' });
        if (report.rejected > 0) log.warn({ shard, jobId: job.id, rejected: report.rejected, errors: report.errors }, 'store refused some write-behind records');
        return { applied: report.applied, duplicate: report.duplicate, fenced: report.fenced, rejected: report.rejected };
      } catch (err) {
        // Whatever stops a whole batch (the store down, a schema not migrated) stops the shard,
        // with the batch back at its head: applying later records first would break their order.
        const unavailable = err instanceof StoreUnavailableError;
        const fields = { shard, jobId: job.id, retryInMs: backoff, err };
        if (unavailable) log.warn(fields, 'store unavailable; write-behind paused');
        else log.error(fields, 'write-behind batch failed; retrying');
        options.metrics?.jobs.inc({ queue: 'store-sync', outcome: 'deferred' });
        const wait = backoff;
        backoff = Math.min(maxBackoffMs, backoff * 2);
        await worker().rateLimit(wait);
        throw Worker.RateLimitError();
      }
    };
  };

  return {
    push(record) {
      if (closed) {
        log.warn({ kind: record.kind }, 'write-behind record after close dropped');
        return;
      }
      // Appended records get an id (a repeated batch inserts nothing twice); updates need none.
      const appended = record.kind === 'lease_event' || record.kind === 'connection_event' || record.kind === 'server_log';
      const full = { ...record, at: new Date().toISOString(), ...(appended ? { id: randomUUID() } : {}) } as SyncRecord;
      buffers[syncShardOf(orderKey(record))]!.push(full);
      timer ??= setTimeout(sendAll, batchDelayMs);
    },

    async flush() {
      clearTimeout(timer);
      timer = undefined;
      while (buffers.some((b) => b.length > 0) || sending.some(Boolean)) {
        await Promise.all(buffers.map((buffer, shard) => (buffer.length > 0 || sending[shard] ? send(shard) : Promise.resolve())));
      }
    },

    async startWorkers() {
      await Promise.all(queues.map((queue) => queue.setGlobalConcurrency(1)));
      for (const [shard] of queues.entries()) {
        const worker: Worker = new Worker(storeSyncQueueName(shard), processorFor(shard, () => worker), {
          connection: redis,
          prefix: keys.bullPrefix,
          concurrency: 1,
          lockDuration: options.lockDurationMs,
          stalledInterval: Math.max(1000, Math.floor(options.lockDurationMs / 2)),
          // A batch whose holders keep dying is still only records to apply: never fail it for that.
          maxStalledCount: 1000,
        });
        worker.on('error', (err) => log.warn({ shard, err }, 'write-behind worker error'));
        workers.push(worker);
      }
    },

    async stats() {
      const now = Date.now();
      const pending = await pendingJobs();
      if (pending === 0) return { pending, lagMs: 0 };
      // Only a backlog has an age: the oldest job of each shard, read when there is one.
      const heads = await Promise.all(queues.map((queue) => queue.getJobs(['active', 'wait'], 0, 0, true)));
      const oldest = Math.min(now, ...heads.flat().map((job) => job?.timestamp ?? now));
      return { pending, lagMs: now - oldest };
    },

    async jobCounts() {
      const counts = await Promise.all(queues.map((queue) => queue.getJobCounts('wait', 'active', 'delayed', 'failed')));
      const sum = (state: string) => counts.reduce((n, c) => n + (c[state] ?? 0), 0);
      return { waiting: sum('wait'), active: sum('active'), delayed: sum('delayed'), failed: sum('failed') };
    },

    async settle(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if ((await pendingJobs()) === 0) return true;
        if (Date.now() >= deadline) return false;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },

    async close() {
      // Records pushed since the last flush (devices stopping during shutdown) still go to Redis,
      // unless Redis itself is gone: then they are lost with this process, and the log says so.
      const left = Promise.race([this.flush().then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, 2000, false).unref())]);
      if (!(await left)) log.warn({ records: buffers.reduce((n, b) => n + b.length, 0) }, 'write-behind records not queued at close');
      closed = true;
      clearTimeout(timer);
      await Promise.allSettled(workers.splice(0).map((worker) => worker.close()));
      await Promise.allSettled(queues.map((queue) => queue.close()));
    },
  };
}
