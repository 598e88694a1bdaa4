import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');

export interface ServerProcess {
  child: ChildProcess;
  port: number;
  /** Everything the process wrote so far, stdout and stderr interleaved. */
  output(): string;
  /** Resolves with the exit code (or the signal's name) once the process has ended. */
  exited: Promise<number | string>;
  waitForHealth(timeoutMs?: number): Promise<Record<string, unknown>>;
  signal(signal: NodeJS.Signals): void;
}

/**
 * Starts `src/main.ts` as a real process (node --import tsx, one process so signals reach the
 * server itself). The environment is exactly `env` plus PATH/HOME: nothing leaks in from the
 * test runner's own environment.
 */
export function spawnServer(env: Record<string, string>, port: number): ServerProcess {
  // DEVICE_DRIVER defaults to baileys, which cannot reach WhatsApp from a test: simulated unless a test says otherwise.
  return spawnEntry('src/main.ts', { DEVICE_DRIVER: 'simulated', PORT: String(port), ...env }, port);
}

/**
 * Starts the monitor (`src/monitor.ts`) as a real process, answering on `port` (its
 * MONITORING_PORT), with exactly `env` plus PATH/HOME, like spawnServer.
 */
export function spawnMonitor(env: Record<string, string>, port: number): ServerProcess {
  return spawnEntry('src/monitor.ts', { MONITORING_PORT: String(port), ...env }, port);
}

function spawnEntry(entry: string, env: Record<string, string>, port: number): ServerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((done) => {
    child.once('exit', (code, signal) => done(code ?? signal ?? 'unknown'));
  });
  let ended = false;
  void exited.then(() => (ended = true));

  return {
    child,
    port,
    output: () => output,
    exited,
    signal: (signal) => {
      if (!ended) child.kill(signal);
    },
    async waitForHealth(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (ended) throw new Error(`${entry} on port ${port} exited before answering /health:\n${output}`);
        try {
          const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
          if (res.ok) return (await res.json()) as Record<string, unknown>;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`${entry} on port ${port} did not answer /health within ${timeoutMs} ms:\n${output}`);
    },
  };
}

/** Stops every process still running; for afterEach/afterAll. */
export async function stopAll(processes: ServerProcess[]): Promise<void> {
  await Promise.all(
    processes.map(async (p) => {
      p.signal('SIGKILL');
      await p.exited;
    }),
  );
}
