import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../harness/local-redis.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { spawnServer, stopAll, type ServerProcess } from '../../harness/processes.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// `npm run server` as an operator runs it: a real process, real Redis, a real store.

let redis: TestRedis;
const processes: ServerProcess[] = [];
const databases: TestDatabase[] = [];

beforeAll(async () => {
  redis = await useTestRedis();
});
afterEach(async () => {
  await stopAll(processes.splice(0));
  await Promise.all(databases.splice(0).map((db) => db.drop()));
});
afterAll(async () => {
  await redis.cleanup();
});

async function database(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  databases.push(db);
  return db;
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** Rows in a table, or 0 when the table does not even exist. */
async function rowCount(url: string, table: string): Promise<number> {
  const [exists] = await query<{ present: boolean }>(url, 'select to_regclass($1) is not null as present', [table]);
  if (!exists?.present) return 0;
  const [row] = await query<{ n: string }>(url, `select count(*)::text as n from ${table}`);
  return Number(row!.n);
}

async function server(env: Record<string, string>): Promise<ServerProcess> {
  const port = await freePort();
  const p = spawnServer({ REDIS_URL: redis.url, WAFLEET_KEY_PREFIX: redis.prefix, ...env }, port);
  processes.push(p);
  return p;
}

describe('start-up refuses bad configuration before touching anything', () => {
  it.each([
    ['SERVER_ID=admin', { SERVER_ID: 'admin' }, /SERVER_ID: server id "admin" .*reserved/],
    ['SERVER_ID=../etc', { SERVER_ID: '../etc' }, /SERVER_ID: server id "\.\.\/etc" must not contain '\.\.'/],
    ['SERVER_ID=ab', { SERVER_ID: 'ab' }, /SERVER_ID: server id "ab" must be 3-128 characters long \(got 2\)/],
    ['a 129-character SERVER_ID', { SERVER_ID: 's'.repeat(129) }, /SERVER_ID: server id .* must be 3-128 characters long \(got 129\)/],
    ['LOG_LEVEL=loud', { SERVER_ID: 'srv-ok', LOG_LEVEL: 'loud' }, /LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent/],
  ])('%s exits 1 naming the rule, and writes nothing to the store', async (_name, env, rule) => {
    const db = await database();
    const p = await server({ STORE: 'postgres', DATABASE_URL: db.url, ...env });
    expect(await p.exited).toBe(1);
    expect(p.output()).toMatch(/Invalid configuration/);
    expect(p.output()).toMatch(rule);
    expect(await rowCount(db.url, 'backend_servers')).toBe(0);
    expect(await rowCount(db.url, 'server_logs')).toBe(0);
  });

  it('lists every invalid variable in one message', async () => {
    const p = await server({ SERVER_ID: 'root', PORT: 'x', STORE: 'mysql' });
    expect(await p.exited).toBe(1);
    for (const name of ['SERVER_ID', 'PORT', 'STORE']) expect(p.output()).toContain(`  - ${name}:`);
  });

  it('an unreachable Redis stops start-up with the URL, its password hidden, and a hint', async () => {
    const port = await freePort();
    const p = await server({ SERVER_ID: 'srv-no-redis', REDIS_URL: `redis://default:hunter2secret@127.0.0.1:${port}` });
    expect(await p.exited).toBe(1);
    expect(p.output()).toContain(`Cannot reach Redis at redis://default:***@127.0.0.1:${port}`);
    expect(p.output()).toContain('npm run redis');
    expect(p.output()).not.toContain('hunter2secret');
  });
});

describe('a server process', () => {
  it('registers, answers /health, logs its identity, and on SIGTERM marks itself inactive and exits 0', async () => {
    const db = await database();
    const p = await server({ SERVER_ID: 'srv-life', STORE: 'postgres', DATABASE_URL: db.url, REGION: 'eu-test', SERVER_PRIORITY: '7' });
    const health = await p.waitForHealth();
    expect(health).toMatchObject({ status: 'ok', activeConnections: 0, serverId: 'srv-life', leases: 0, draining: false });
    expect(Date.parse(health.timestamp as string)).not.toBeNaN();
    expect(p.output()).toContain('Server identified: srv-life (from SERVER_ID)');

    const [row] = await query<{ id: string; is_active: boolean; region: string; priority: number; server_url: string }>(
      db.url,
      'select id, is_active, region, priority, server_url from backend_servers',
    );
    expect(row).toEqual({ id: 'srv-life', is_active: true, region: 'eu-test', priority: 7, server_url: `http://127.0.0.1:${p.port}` });

    const unknown = await fetch(`http://127.0.0.1:${p.port}/nope`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: { code: 'not_found', message: 'No route for GET /nope' } });

    p.signal('SIGTERM');
    expect(await p.exited).toBe(0);
    const [after] = await query<{ is_active: boolean }>(db.url, 'select is_active from backend_servers');
    expect(after!.is_active).toBe(false);
    const events = await query<{ event: string }>(db.url, "select event from server_logs where server_id = 'srv-life' order by id");
    expect(events.map((e) => e.event)).toEqual(['server_started', 'server_drained', 'server_stopped']);
  });

  it('two servers starting at once on a fresh database do not race over migrations', async () => {
    const db = await database();
    const [a, b] = await Promise.all([
      server({ SERVER_ID: 'srv-race-a', STORE: 'postgres', DATABASE_URL: db.url }),
      server({ SERVER_ID: 'srv-race-b', STORE: 'postgres', DATABASE_URL: db.url }),
    ]);
    await Promise.all([a.waitForHealth(), b.waitForHealth()]);
    const ids = await query<{ id: string }>(db.url, 'select id from backend_servers order by id');
    expect(ids.map((r) => r.id)).toEqual(['srv-race-a', 'srv-race-b']);
    const migrations = await query<{ n: string; distinct_n: string }>(
      db.url,
      'select count(*)::text as n, count(distinct version)::text as distinct_n from wafleet_migrations',
    );
    expect(migrations[0]!.n).toBe(migrations[0]!.distinct_n);
  });

  it('on the embedded store, two servers share one PGlite record: one hosts it, the other connects', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wafleet-server-'));
    try {
      const storePort = String(await freePort());
      const env = { STORE: 'pglite', PGLITE_DIR: join(dir, 'pglite'), PGLITE_PORT: storePort };
      const [a, b] = await Promise.all([server({ SERVER_ID: 'srv-pg-a', ...env }), server({ SERVER_ID: 'srv-pg-b', ...env })]);
      await Promise.all([a.waitForHealth(), b.waitForHealth()]);
      const url = `postgres://postgres@127.0.0.1:${storePort}/postgres`;
      const ids = await query<{ id: string }>(url, 'select id from backend_servers order by id');
      expect(ids.map((r) => r.id)).toEqual(['srv-pg-a', 'srv-pg-b']);
      const hosts = [a, b].filter((p) => p.output().includes('PGlite store host listening'));
      expect(hosts).toHaveLength(1);
    } finally {
      await stopAll(processes.splice(0));
      await rm(dir, { recursive: true, force: true });
    }
  });
});
