import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, inject } from 'vitest';
import { removeKeys } from '../../harness/redis.js';

// `npm run demo -- --exit`: the whole demo for real (its own store host, three servers, the
// monitor, devices added through the API, a SIGKILL), ending in the recovery line, exit 0, and
// nothing left behind: no process, no key under its prefix.

const ROOT = resolve(import.meta.dirname, '../..');
let pgid: number | undefined;
let prefix: string | undefined;
let output = '';
/** The apps the demo started, each in a process group of its own, as it printed them. */
const startedPids = () => [...output.matchAll(/\(pid (\d+)[;)]/g)].map((m) => Number(m[1]));
const redis = new Redis(inject('redisUrl'), { maxRetriesPerRequest: 3 });

afterAll(async () => {
  // Only if the demo failed to clean up after itself (or the test timed out).
  if (pgid !== undefined) {
    for (const group of [pgid, ...startedPids()]) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  if (prefix) {
    await removeKeys(redis, `*{${prefix}}*`);
    rmSync(resolve(ROOT, 'logs/demo', prefix), { recursive: true, force: true });
  }
  redis.disconnect();
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('npm run demo', () => {
  it('kills a server, prints the recovery, and cleans up after itself', async () => {
    const child = spawn('npm', ['run', 'demo', '--', '--exit', '--devices', '60', '--ttl-ms', '3000'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', REDIS_URL: inject('redisUrl') },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so a failed run can be stopped whole.
      detached: true,
    });
    pgid = child.pid;
    child.stdout.on('data', (c) => (output += c.toString()));
    child.stderr.on('data', (c) => (output += c.toString()));
    const code = await new Promise<number | null>((done) => child.once('exit', (c) => done(c)));
    prefix = /keys under \{(demo[0-9a-f]+)\}/.exec(output)?.[1];

    expect(code, output).toBe(0);
    pgid = undefined;
    expect(prefix).toBeDefined();
    expect(output).toMatch(/All 60 devices connected: demo-1 \d+, demo-2 \d+, demo-3 \d+/);
    const victim = /SIGKILL (demo-\d) \(pid \d+\), holding (\d+) devices/.exec(output);
    expect(victim).not.toBeNull();
    const recovered = new RegExp(`Recovered: ${victim![2]} devices moved from ${victim![1]} to demo-\\d \\(\\d+\\)`).exec(output);
    expect(recovered, output).not.toBeNull();
    expect(output).toMatch(/in \d+\.\d s after the kill, \d+\.\d s after its last renewal \(\d+\.\d\d x TTL; target TTL \+ 1 s = 4\.0 s\)/);
    expect(output).toMatch(/BullBoard\s+http:\/\/127\.0\.0\.1:\d+\/admin\/queues/);
    expect(output).toContain('Demo stopped; every process it started has exited.');

    // Nothing left: every process it started has exited, and its keys are gone.
    const pids = startedPids();
    expect(pids.length).toBeGreaterThanOrEqual(4);
    expect(pids.filter(alive)).toEqual([]);
    expect(await removeKeys(redis, `*{${prefix}}*`)).toBe(0);
  });
});
