import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { redactUrl } from '../src/shared/redact.js';

// Starting a local Redis for newcomers and for tests: the README promises that `npm start` and
// `npm test` work on a machine that has only Node.js and a redis-server binary.

/** True when something at host:port answers PING with PONG. */
export function redisAnswers(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((done) => {
    const socket = net.connect({ host, port });
    let buffer = '';
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.on('error', () => finish(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      buffer += chunk.toString();
      // "-NOAUTH" still proves a Redis is there; the caller's client will authenticate.
      if (buffer.includes('\r\n')) finish(buffer.startsWith('+PONG') || buffer.startsWith('-NOAUTH'));
    });
  });
}

export class RedisServerMissingError extends Error {
  constructor() {
    super(
      'No Redis answers and `redis-server` is not installed. Install it (Debian/Ubuntu: ' +
        '`sudo apt-get install redis-server`; macOS: `brew install redis`) or set REDIS_URL to a running Redis.',
    );
    this.name = 'RedisServerMissingError';
  }
}

export function redisServerInstalled(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function waitForRedis(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await redisAnswers(host, port, 300)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`redis-server was started on ${host}:${port} but did not answer within ${timeoutMs} ms`);
}

export interface LocalRedis {
  port: number;
  /** The redis-server child's pid (ephemeral ones), for a last-resort kill when its parent crashes. */
  pid?: number;
  /** Stops a Redis this process started; a no-op for a daemonised one. */
  stop(): Promise<void>;
}

/**
 * Daemonised Redis for `npm start`: it must outlive the start script, and keeps an append-only
 * file under `dir` so a restart of the dev cluster keeps its leases' record.
 */
export async function startDaemonRedis(options: { port: number; dir: string; logFile: string }): Promise<void> {
  if (!redisServerInstalled()) throw new RedisServerMissingError();
  mkdirSync(options.dir, { recursive: true });
  mkdirSync(resolve(options.logFile, '..'), { recursive: true });
  const result = spawnSync(
    'redis-server',
    [
      '--daemonize', 'yes',
      '--bind', '127.0.0.1',
      '--port', String(options.port),
      '--dir', resolve(options.dir),
      '--appendonly', 'yes',
      '--save', '',
      '--logfile', resolve(options.logFile),
      '--notify-keyspace-events', 'Ex',
    ],
    { encoding: 'utf8' },
  );
  if (result.status !== 0) throw new Error(`redis-server failed to start: ${result.stderr || result.stdout}`);
  await waitForRedis('127.0.0.1', options.port, 10_000);
}

/**
 * Throwaway Redis for a test run: no persistence, a child of this process, stopped afterwards.
 * `extraArgs` are more redis-server options (`['--maxmemory-policy', 'allkeys-lru']`).
 */
export async function startEphemeralRedis(port: number, extraArgs: readonly string[] = []): Promise<LocalRedis> {
  if (!redisServerInstalled()) throw new RedisServerMissingError();
  const child = spawn(
    'redis-server',
    ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', ...extraArgs],
    { stdio: 'ignore' },
  );
  await waitForRedis('127.0.0.1', port, 10_000);
  return {
    port,
    ...(child.pid === undefined ? {} : { pid: child.pid }),
    stop: () =>
      new Promise((done) => {
        if (child.exitCode !== null) return done();
        child.once('exit', () => done());
        child.kill('SIGTERM');
      }),
  };
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = net.createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

export async function ensureRedis(redisUrl: string): Promise<'running' | 'started'> {
  const url = new URL(redisUrl);
  const port = Number(url.port || 6379);
  if (await redisAnswers(url.hostname, port)) return 'running';
  if (!LOCAL_HOSTS.has(url.hostname)) {
    throw new Error(`No Redis answers at ${redactUrl(redisUrl)}, and it is not on this host, so wafleet will not start one.`);
  }
  await startDaemonRedis({ port, dir: 'data/redis', logFile: 'logs/redis.log' });
  return 'started';
}

