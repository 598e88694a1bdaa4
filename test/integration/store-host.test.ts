import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../harness/local-redis.js';
import { hostLockPath } from '../../src/store/host-lock.js';
import { createPgliteStore } from '../../src/store/pglite.js';
import {
  createStore,
  startStoreHost,
  StoreHostLockedError,
  StoreUnavailableError,
  type Store,
  type StoreHost,
} from '../../src/store/index.js';

const ROOT = resolve(import.meta.dirname, '../..');
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

const dirs: string[] = [];
const hosts: StoreHost[] = [];
const stores: Store[] = [];
const children: ChildProcess[] = [];

async function tempDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'wafleet-store-host-'));
  dirs.push(dir);
  return join(dir, 'pglite');
}

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((done) => child.once('exit', done));
    }
  }
  await Promise.all(stores.splice(0).map((s) => s.close()));
  await Promise.all(hosts.splice(0).map((h) => h.stop()));
});

afterAll(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

// A server process reduced to its store: opens STORE=pglite, registers itself, then answers
// `list` and `exit` on stdin with JSON lines on stdout (pino's lines go there too).
const CHILD = `
  const { createStore } = await import(process.env.STORE_MODULE);
  const { default: pino } = await import('pino');
  const { createInterface } = await import('node:readline');
  const log = pino({ level: 'info' });
  const store = await createStore(
    { kind: 'pglite', dataDir: process.env.PGLITE_DIR, host: '127.0.0.1', port: Number(process.env.PGLITE_PORT), poolMax: 2, hostMode: 'auto' },
    { log },
  );
  const say = (line) => console.log(JSON.stringify(line));
  const list = async (tag) => {
    try {
      say({ tag, servers: (await store.listServers()).map((s) => s.id).sort() });
    } catch (err) {
      say({ tag: 'error', code: err.code, message: err.message });
    }
  };
  await store.migrate();
  const id = process.env.SERVER_ID;
  await store.registerServer({ id, serverName: id, serverUrl: 'http://' + id, serverType: 'vps', region: 'test', maxCapacity: 10, priority: 0 });
  await list('ready');
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'list') await list('list');
    if (line === 'exit') {
      await store.close();
      process.exit(0);
    }
  }
`;

interface Child {
  process: ChildProcess;
  lines: Array<Record<string, unknown>>;
  output(): string;
  waitFor(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  send(command: string): void;
}

function spawnStoreProcess(env: Record<string, string>): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', STORE_MODULE: join(ROOT, 'src/store/index.ts'), ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: Array<Record<string, unknown>> = [];
  let output = '';
  let pending = '';
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    pending += chunk.toString();
    const complete = pending.split('\n');
    pending = complete.pop() ?? '';
    for (const line of complete) {
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not ours
      }
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return {
    process: child,
    lines,
    output: () => output,
    async waitFor(predicate, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = lines.find(predicate);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`timed out; process ${child.pid} wrote:\n${output}`);
        if (child.exitCode !== null) throw new Error(`process ${child.pid} exited (${child.exitCode}):\n${output}`);
        await new Promise((done) => setTimeout(done, 50));
      }
    },
    send: (command) => child.stdin.write(`${command}\n`),
  };
}

const isHostLine = (line: Record<string, unknown>) => line.msg === 'PGlite store host listening';

async function lockOwnerPid(dataDir: string): Promise<number> {
  return (JSON.parse(await readFile(hostLockPath(dataDir), 'utf8')) as { pid: number }).pid;
}

describe('embedded PGlite store host', () => {
  it('two processes racing for one PGLITE_DIR end with one host, and both can query', async () => {
    const dataDir = await tempDataDir();
    const port = await freePort();
    const env = { PGLITE_DIR: dataDir, PGLITE_PORT: String(port) };
    const [a, b] = [spawnStoreProcess({ ...env, SERVER_ID: 'race-a' }), spawnStoreProcess({ ...env, SERVER_ID: 'race-b' })];
    await Promise.all([a.waitFor((l) => l.tag === 'ready'), b.waitFor((l) => l.tag === 'ready')]);

    const hostsSeen = [a, b].filter((c) => c.lines.some(isHostLine));
    expect(hostsSeen, `${a.output()}\n---\n${b.output()}`).toHaveLength(1);
    const [host] = hostsSeen;
    const client = host === a ? b : a;
    expect(await lockOwnerPid(dataDir)).toBe(host!.process.pid);

    for (const child of [a, b]) {
      child.send('list');
      expect(await child.waitFor((l) => l.tag === 'list')).toEqual({ tag: 'list', servers: ['race-a', 'race-b'] });
    }

    // The host dies without cleaning up: the client takes over its directory, data included.
    host!.process.kill('SIGKILL');
    await new Promise((done) => host!.process.once('exit', done));
    const deadline = Date.now() + 30_000;
    let answer: Record<string, unknown> | undefined;
    while (!answer && Date.now() < deadline) {
      client.lines.length = 0;
      client.send('list');
      const line = await client.waitFor((l) => l.tag === 'list' || l.tag === 'error');
      // A connection that was open to the dead host may fail once before the pool notices.
      if (line.tag === 'list') answer = line;
      else expect(line.code).toMatch(/^store_(connection_lost|unreachable)$/);
    }
    expect(answer).toEqual({ tag: 'list', servers: ['race-a', 'race-b'] });
    expect(client.output()).toContain('PGlite store host listening');
    expect(await lockOwnerPid(dataDir)).toBe(client.process.pid);

    client.send('exit');
    await new Promise((done) => client.process.once('exit', done));
  });

  it('refuses a data directory whose lock a live process holds, and takes over a dead one', async () => {
    const dataDir = await tempDataDir();
    const lock = hostLockPath(dataDir);
    await startStoreHost({ dataDir, host: '127.0.0.1', port: 0, log }).then((h) => h.stop()); // creates the directory
    const owner = (pid: number) => JSON.stringify({ pid, hostname: hostname(), instance: randomUUID(), acquiredAt: new Date().toISOString() });

    // Our parent (the vitest main process) is certainly alive.
    await writeFile(lock, owner(process.ppid));
    const locked = await startStoreHost({ dataDir, host: '127.0.0.1', port: 0, log }).catch((err: unknown) => err);
    expect(locked).toBeInstanceOf(StoreHostLockedError);
    expect(locked).toMatchObject({ ownerPid: process.ppid, lockPath: lock });

    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((done) => dead.once('exit', done));
    await writeFile(lock, owner(dead.pid!));
    const host = await startStoreHost({ dataDir, host: '127.0.0.1', port: 0, log });
    hosts.push(host);
    expect(await lockOwnerPid(dataDir)).toBe(process.pid);
    await host.stop();
    await expect(readFile(lock)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a process that cannot host waits a bounded time, then names host:port and the lock', async () => {
    const dataDir = await tempDataDir();
    await writeFile(`${dataDir}.lock`, JSON.stringify({ pid: process.ppid, hostname: hostname(), instance: 'other', acquiredAt: '' }));
    const port = await freePort();
    const started = Date.now();
    const error = await createPgliteStore({ dataDir, host: '127.0.0.1', port, poolMax: 2 }, log, { hostWaitMs: 1500 }).catch(
      (err: unknown) => err,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(error).toMatchObject({ code: 'store_host_not_answering' });
    expect((error as Error).message).toContain(`127.0.0.1:${port}`);
    expect((error as Error).message).toContain(hostLockPath(dataDir));
  });

  it('connections past maxConnections fail with a clear error', async () => {
    const host = await startStoreHost({ dataDir: 'memory://', host: '127.0.0.1', port: 0, maxConnections: 2, log });
    hosts.push(host);
    const store = await createStore({ kind: 'pglite', dataDir: 'memory://', host: '127.0.0.1', port: host.port, poolMax: 4, hostMode: 'auto' }, { log });
    stores.push(store);

    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => store.listServers()));
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as Error);
    expect(refused.length).toBeGreaterThan(0);
    for (const err of refused) {
      expect(err).toBeInstanceOf(StoreUnavailableError);
      expect(err).toMatchObject({ code: 'store_host_full' });
      expect(err.message).toContain(`127.0.0.1:${host.port}`);
      expect(err.message).toContain('maxConnections');
    }
    // The connections it did accept keep working.
    await expect(store.listServers()).resolves.toEqual([]);
  });

  // Also the measurement behind DEFAULT_HOST_MAX_CONNECTIONS and STORE_POOL_MAX's default:
  // run with `npx vitest run --project integration test/integration/store-host -t throughput`.
  it.each([
    { processes: 1, poolMax: 1, disk: false },
    { processes: 3, poolMax: 4, disk: false },
    { processes: 3, poolMax: 4, disk: true },
    { processes: 16, poolMax: 4, disk: true },
  ])('throughput: $processes processes x poolMax $poolMax (on disk: $disk) get correct answers', async ({ processes, poolMax, disk }) => {
    const dataDir = disk ? await tempDataDir() : 'memory://';
    const host = await startStoreHost({ dataDir, host: '127.0.0.1', port: 0, log });
    hosts.push(host);
    const clients: Store[] = [];
    for (let i = 0; i < processes; i++) {
      const store = await createStore({ kind: 'pglite', dataDir, host: '127.0.0.1', port: host.port, poolMax, hostMode: 'auto' }, { log });
      stores.push(store);
      clients.push(store);
    }
    const perProcess = 60;
    let calls = 0;
    const started = performance.now();
    await Promise.all(
      clients.flatMap((store, p) =>
        Array.from({ length: perProcess }, async (_, i) => {
          const id = `tp-${p}-${i}`;
          await store.registerServer({ id, serverName: `n${id}`, serverUrl: `http://${id}`, serverType: 'vps', region: 'r', maxCapacity: 10, priority: p });
          const server = await store.getServer(id);
          expect(server).toMatchObject({ id, serverName: `n${id}`, priority: p });
          const userId = randomUUID();
          const device = await store.createDevice({ userId, deviceName: id, connectionMethod: 'qr' });
          expect(await store.getDevice(device.id)).toMatchObject({ userId, deviceName: id });
          expect(await store.recordAssignment(device.id, id, i + 2)).toBe(true);
          expect(await store.recordAssignment(device.id, id, i + 1)).toBe(false);
          calls += 6;
        }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    expect((await clients[0]!.listServers()).filter((s) => s.id.startsWith('tp-'))).toHaveLength(processes * perProcess);
    console.info(
      `[store host, ${disk ? 'disk' : 'memory'}] ${processes} processes x poolMax ${poolMax} = ${processes * poolMax} connections: ` +
        `${calls} calls in ${seconds.toFixed(2)} s = ${Math.round(calls / seconds)} calls/s, all answers correct`,
    );
  });
});
