import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../harness/local-redis.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { spawnServer, stopAll, type ServerProcess } from '../../harness/processes.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// One SERVER_ID, one process: a copied `.env` must not give two live processes one identity, and
// pm2 restarting a crashed server under its id must not wait for the dead one's TTL.

// Long, so that starting at once after a crash is plainly not waiting for the TTL.
const LEASE_TTL_MS = 10_000;
let redis: TestRedis;
let db: TestDatabase;
const processes: ServerProcess[] = [];

beforeAll(async () => {
  [redis, db] = await Promise.all([useTestRedis(), createTestDatabase()]);
});
afterEach(async () => {
  await stopAll(processes.splice(0));
});
afterAll(async () => {
  await redis?.cleanup();
  await db?.drop();
});

async function server(serverId: string): Promise<ServerProcess> {
  const p = spawnServer(
    { SERVER_ID: serverId, REDIS_URL: redis.url, WAFLEET_KEY_PREFIX: redis.prefix, STORE: 'postgres', DATABASE_URL: db.url, LEASE_TTL_MS: String(LEASE_TTL_MS) },
    await freePort(),
  );
  processes.push(p);
  return p;
}

async function serverUrl(serverId: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    return (await client.query<{ server_url: string }>('select server_url from backend_servers where id = $1', [serverId])).rows[0]?.server_url;
  } finally {
    await client.end();
  }
}

/** The message the process stopped with (its fatal log line; the output is pino's JSON). */
function fatalMessage(p: ServerProcess): string {
  for (const line of p.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    const entry = JSON.parse(line) as { level: number; msg: string };
    if (entry.level === 60) return entry.msg;
  }
  return '';
}

describe('two processes with one SERVER_ID', () => {
  it('the second exits 1 naming the live one, its URL and heartbeat age, and changes nothing', async () => {
    const a = await server('srv-twin');
    await a.waitForHealth();
    const urlA = `http://127.0.0.1:${a.port}`;

    const b = await server('srv-twin');
    expect(await b.exited).toBe(1);
    expect(fatalMessage(b)).toMatch(
      new RegExp(`^SERVER_ID "srv-twin" is already in use by a live server at ${urlA.replace(/\./g, '\\.')} \\(boot [0-9a-f]{12}, last heartbeat \\d+\\.\\d s ago\\)`),
    );
    expect(fatalMessage(b)).toContain('give this one its own SERVER_ID');
    // B stopped before registering: the store still names A's URL, and A still answers.
    expect(await serverUrl('srv-twin')).toBe(urlA);
    expect((await a.waitForHealth(2000)).status).toBe('ok');
  });

  it('of two started at once, one runs and the other exits 1', async () => {
    const [a, b] = await Promise.all([server('srv-race'), server('srv-race')]);
    const settle = (p: ServerProcess) => p.waitForHealth().then(() => 'healthy', async () => `exited ${await p.exited}`);
    const [outcomeA, outcomeB] = await Promise.all([settle(a), settle(b)]);
    expect([outcomeA, outcomeB].sort()).toEqual(['exited 1', 'healthy']);
    const refused = outcomeA === 'healthy' ? b : a;
    expect(fatalMessage(refused)).toMatch(/^SERVER_ID "srv-race" is already in use by a (live server|server starting) at http:\/\/127\.0\.0\.1:\d+ /);
  });

  it('a server restarted under its id after a crash starts at once, taking the dead boot as dead', async () => {
    const a = await server('srv-crash');
    await a.waitForHealth();
    a.signal('SIGKILL');
    await a.exited;
    const killedAt = Date.now();

    const c = await server('srv-crash');
    await c.waitForHealth(5000);
    const tookMs = Date.now() - killedAt;
    console.log(`restart after SIGKILL: healthy ${tookMs} ms after the kill (LEASE_TTL_MS ${LEASE_TTL_MS})`);
    expect(tookMs).toBeLessThan(5000);
    expect(c.output()).toMatch(/previous boot [0-9a-f]{12} of this server id has no connection left in Redis: taken as dead/);
  });
});
