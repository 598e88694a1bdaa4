import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { sleep } from '../../harness/bench/probe.js';
import { useTestRedis } from '../../harness/redis.js';
import type { BenchContext } from './context.js';

// What the pipeline scenarios (messages, events) share: the load pattern, waiting for its end, its
// figures, and their baseline, a bare BullMQ queue and worker on the bench's Redis.

/** Items in flight per device: enough that the producer's own wait is not what is measured. */
export const DEPTH = 4;

/** Runs `perDevice` sends for each of `devices` lines at once, each line DEPTH at a time. */
export async function inLines(devices: number, perDevice: number, send: (line: number, i: number) => Promise<void>): Promise<void> {
  await Promise.all(
    Array.from({ length: devices }, async (_, line) => {
      let next = 0;
      const sender = async () => {
        for (let i = next++; i < perDevice; i = next++) await send(line, i);
      };
      await Promise.all(Array.from({ length: Math.min(DEPTH, perDevice) }, sender));
    }),
  );
}

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what: () => Promise<string> | string): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${await what()} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** One pipeline run: items that went in at `start` and came out at `end` (ms). */
export interface Flow {
  count: number;
  /** items per second from the first in to the last out */
  perSecond: number;
  /**
   * items per second from the first in to the last in: the producer's side. When it outruns the
   * pipeline, the latencies are mostly the wait in line.
   */
  inPerSecond: number;
  /** in-to-out latencies, ascending, ms */
  latencies: number[];
}

export function flowOf(pairs: ReadonlyArray<{ start: number; end: number }>): Flow {
  const first = Math.min(...pairs.map((p) => p.start));
  const lastIn = Math.max(...pairs.map((p) => p.start));
  const lastOut = Math.max(...pairs.map((p) => p.end));
  return {
    count: pairs.length,
    perSecond: (pairs.length * 1000) / Math.max(1, lastOut - first),
    inPerSecond: (pairs.length * 1000) / Math.max(1, lastIn - first),
    latencies: pairs.map((p) => p.end - p.start).sort((a, b) => a - b),
  };
}

export interface BareLine {
  line: number;
  i: number;
}

/**
 * A queue and a worker of `concurrency` running `process`, under a key prefix of their own that
 * goes when the scenario ends; answers the queue, the worker ready.
 */
export async function bareQueue(ctx: BenchContext, label: string, process: (job: Job<BareLine>) => Promise<void>, concurrency: number): Promise<Queue<BareLine>> {
  const t = await useTestRedis(ctx.redisUrl, `b-${label}-`);
  ctx.defer(() => t.cleanup());
  const connection = new Redis(ctx.redisUrl, { maxRetriesPerRequest: null });
  const prefix = `{${t.prefix}}:bull`;
  const queue = new Queue<BareLine>('bare', { connection, prefix });
  const worker = new Worker<BareLine>('bare', process, { connection, prefix, concurrency });
  ctx.defer(async () => {
    await worker.close();
    await queue.close();
    connection.disconnect();
  });
  await worker.waitUntilReady();
  return queue;
}
