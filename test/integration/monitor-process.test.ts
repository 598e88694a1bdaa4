import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../harness/local-redis.js';
import { createStore } from '../../src/store/index.js';
import { waitUntil } from '../../harness/cluster.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { spawnMonitor, spawnServer, stopAll, type ServerProcess } from '../../harness/processes.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// `npm run monitor` as an operator runs it: a real process that refuses to start without a
// password (or, in production, with a weak one), says why, and never prints the password.

const STRONG = 'Vq8#tLm2!pZx4@Rw';
const INTERNAL_API_KEY = 'k'.repeat(40);
let redis: TestRedis;
let db: TestDatabase;
const processes: ServerProcess[] = [];

beforeAll(async () => {
  redis = await useTestRedis();
  db = await createTestDatabase();
  // Servers migrate the store when they start; the monitor only reads it.
  const store = await createStore({ kind: 'postgres', databaseUrl: db.url, poolMax: 1 }, { log: pino({ level: 'silent' }) });
  await store.migrate();
  await store.close();
});
afterEach(async () => {
  await stopAll(processes.splice(0));
});
afterAll(async () => {
  await db?.drop();
  await redis?.cleanup();
});

async function monitor(env: Record<string, string>): Promise<ServerProcess> {
  const p = spawnMonitor({ REDIS_URL: redis.url, WAFLEET_KEY_PREFIX: redis.prefix, STORE: 'postgres', DATABASE_URL: db.url, ...env }, await freePort());
  processes.push(p);
  return p;
}

async function listening(port: number): Promise<boolean> {
  return fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) }).then(
    () => true,
    () => false,
  );
}

describe('the monitor process', () => {
  it('refuses to start without ADMIN_PASSWORD, exits 1 and says why', async () => {
    const p = await monitor({});
    expect(await p.exited).toBe(1);
    expect(p.output()).toMatch(/wafleet monitor: Invalid configuration:\n {2}- ADMIN_PASSWORD: is required to start the monitor/);
    expect(await listening(p.port)).toBe(false);
  });

  it('refuses a weak password in production, naming what is wrong but not the password', async () => {
    const weak = 'Tr0ub4dor&3';
    const p = await monitor({ NODE_ENV: 'production', INTERNAL_API_KEY, ADMIN_PASSWORD: weak });
    expect(await p.exited).toBe(1);
    expect(p.output()).toMatch(/ADMIN_PASSWORD: is shorter than 12 characters; NODE_ENV=production needs a strong password/);
    expect(p.output()).not.toContain(weak);

    const same = await monitor({ NODE_ENV: 'production', INTERNAL_API_KEY, ADMIN_USERNAME: 'night-shift-operator', ADMIN_PASSWORD: 'night-shift-operator' });
    expect(await same.exited).toBe(1);
    expect(same.output()).toMatch(/ADMIN_PASSWORD: is the same as ADMIN_USERNAME/);
    expect(same.output()).not.toContain('night-shift-operator');
  });

  it("starts in production on a server's environment with a strong password, and stops cleanly on SIGTERM", async () => {
    // The environment pm2 hands every app: a server's variables, and a HOSTNAME that would not
    // do as a server id (the monitor is not a server).
    const p = await monitor({ NODE_ENV: 'production', INTERNAL_API_KEY, ADMIN_PASSWORD: STRONG, HOSTNAME: 'db', PORT: '3000', SERVER_MAX_CAPACITY: '50' });
    await p.waitForHealth();
    // The store is connected in the background; the monitor answers before it is.
    await waitUntil(
      async () => ((await (await fetch(`http://127.0.0.1:${p.port}/health`)).json()) as { status: string }).status === 'ok',
      30_000,
      () => p.output(),
    );
    const res = await fetch(`http://127.0.0.1:${p.port}/admin/cluster.json`, {
      headers: { authorization: `Basic ${Buffer.from(`admin:${STRONG}`).toString('base64')}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('strict-transport-security')).toMatch(/max-age=/);
    p.signal('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(p.output()).toMatch(/monitoring on port \d+: BullBoard at \/admin\/queues, cluster page at \/admin\/cluster/);
    expect(p.output()).toContain('monitor stopped');
    expect(p.output()).not.toContain(STRONG);
  });

  it('warns about a weak password outside production, and starts', async () => {
    const p = await monitor({ ADMIN_PASSWORD: 'admin' });
    await p.waitForHealth();
    expect(p.output()).toMatch(/ADMIN_PASSWORD is weak; NODE_ENV=production would refuse it/);
  });

  it('a server starts without ADMIN_PASSWORD', async () => {
    const p = spawnServer({ REDIS_URL: redis.url, WAFLEET_KEY_PREFIX: redis.prefix, STORE: 'postgres', DATABASE_URL: db.url, SERVER_ID: 'no-admin-pw' }, await freePort());
    processes.push(p);
    expect(await p.waitForHealth()).toMatchObject({ status: 'ok', serverId: 'no-admin-pw' });
  });
});
