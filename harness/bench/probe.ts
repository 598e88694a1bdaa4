import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';

// What the benchmarks read off Redis and off processes: round trips a client makes, Redis's own
// CPU time and memory, and a process's resident memory.

export interface RoundTrips {
  /** Request batches written that wait for their replies: a pipeline counts once. */
  roundTrips: number;
  commands: number;
  /** EVAL/EVALSHA among the commands. */
  scripts: number;
}

/**
 * Counts what a connection sends, from inside ioredis: every command passes through
 * `sendCommand`, and the commands of one pipeline share the pipeline's write stream, so each
 * distinct stream is one round trip. Count on a connection that is ready: commands queued while
 * it connects pass through `sendCommand` twice.
 */
export function countRoundTrips(redis: Redis): { read(): RoundTrips } {
  const counts: RoundTrips = { roundTrips: 0, commands: 0, scripts: 0 };
  const pipelines = new WeakSet<object>();
  type Send = (command: { name: string }, stream?: { isPipeline?: boolean }, node?: unknown) => unknown;
  const target = redis as unknown as { sendCommand: Send };
  const original = target.sendCommand;
  target.sendCommand = function (this: unknown, command, stream, node) {
    counts.commands += 1;
    if (/^eval/i.test(command.name)) counts.scripts += 1;
    if (stream?.isPipeline) {
      if (!pipelines.has(stream)) {
        pipelines.add(stream);
        counts.roundTrips += 1;
      }
    } else counts.roundTrips += 1;
    return original.call(this, command, stream, node);
  };
  return { read: () => ({ ...counts }) };
}

export const difference = (after: RoundTrips, before: RoundTrips): RoundTrips => ({
  roundTrips: after.roundTrips - before.roundTrips,
  commands: after.commands - before.commands,
  scripts: after.scripts - before.scripts,
});

export async function redisInfo(redis: Redis, section: string): Promise<Record<string, string>> {
  const fields: Record<string, string> = {};
  for (const line of (await redis.info(section)).split('\r\n')) {
    const at = line.indexOf(':');
    if (at > 0 && !line.startsWith('#')) fields[line.slice(0, at)] = line.slice(at + 1);
  }
  return fields;
}

/** Redis's CPU seconds so far (user + system, main process), from INFO cpu. */
export async function redisCpuSeconds(redis: Redis): Promise<number> {
  const cpu = await redisInfo(redis, 'cpu');
  return Number(cpu.used_cpu_user) + Number(cpu.used_cpu_sys);
}

export async function redisUsedMemory(redis: Redis): Promise<number> {
  return Number((await redisInfo(redis, 'memory')).used_memory);
}

/** Resident memory of a process, bytes (Linux /proc, else ps). */
export function residentBytes(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (match) return Number(match[1]) * 1024;
  } catch {
    // not Linux
  }
  return Number(execFileSync('ps', ['-o', 'rss=', '-p', String(pid)], { encoding: 'utf8' }).trim()) * 1024;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs `work` and returns its wall time (ms) with the Redis CPU seconds it cost meanwhile. */
export async function measured<T>(redis: Redis, work: () => Promise<T>): Promise<{ result: T; ms: number; redisCpuS: number }> {
  const cpuBefore = await redisCpuSeconds(redis);
  const started = performance.now();
  const result = await work();
  const ms = performance.now() - started;
  return { result, ms, redisCpuS: (await redisCpuSeconds(redis)) - cpuBefore };
}
