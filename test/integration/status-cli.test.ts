import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../harness/local-redis.js';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';

// `npm run status` against real server processes: the table and JSON agree with Redis, one
// device's owner, token, TTL and events are shown, and the exit code turns 1 once the cluster is
// unhealthy (every server killed: no live server, then leases overdue).

const ROOT = resolve(import.meta.dirname, '../..');
const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
const SERVERS = ['st-a', 'st-b', 'st-c'];
const DEVICES = 30;

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs scripts/status.ts as an operator would, with only the variables a tool needs. */
function status(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/status.ts', ...args], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        REDIS_URL: cluster.redis.url,
        WAFLEET_KEY_PREFIX: cluster.redis.prefix,
        LEASE_TTL_MS: TEST_LEASE_ENV.LEASE_TTL_MS,
        STORE: 'postgres',
        DATABASE_URL: cluster.db.url,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c.toString()));
    child.stderr.on('data', (c) => (stderr += c.toString()));
    child.once('exit', (code) => done({ code, stdout, stderr }));
  });
}

async function statusJson(args: string[] = [], env?: Record<string, string>): Promise<{ code: number | null; json: Record<string, any> }> {
  const run = await status(['--json', ...args], env);
  try {
    return { code: run.code, json: JSON.parse(run.stdout) as Record<string, any> };
  } catch {
    throw new Error(`status --json printed no JSON (exit ${run.code}):\n${run.stdout}\n${run.stderr}`);
  }
}

describe('npm run status', () => {
  it('reports a healthy cluster, one device, and exits 1 once no server is left', async () => {
    await Promise.all(SERVERS.map((id) => cluster.start(id)));
    const devices = await cluster.addDevices(DEVICES);
    await waitUntil(async () => (await cluster.connectedCount(devices)) === DEVICES, 60_000);

    // No SERVER_ID, no INTERNAL_API_KEY, even in production: the tool needs none of them.
    const healthy = await statusJson([], { NODE_ENV: 'production' });
    expect(healthy.code).toBe(0);
    expect(healthy.json.healthy).toBe(true);
    expect(healthy.json.problems).toEqual([]);
    expect(healthy.json.servers.map((s: { id: string }) => s.id).sort()).toEqual(SERVERS);
    expect(healthy.json.servers.every((s: { state: string }) => s.state === 'live')).toBe(true);
    const owners = await cluster.owners(devices);
    for (const server of healthy.json.servers) {
      expect(server.leases).toBe(devices.filter((d) => owners.get(d) === server.id).length);
      expect(server.heartbeatAgeMs).toBeLessThan(TTL);
    }
    expect(healthy.json.totals).toMatchObject({ live: 3, leases: DEVICES, wanted: DEVICES, wantedUnowned: 0, overdueLeases: 0 });

    const table = await status([]);
    expect(table.code).toBe(0);
    for (const id of SERVERS) expect(table.stdout).toMatch(new RegExp(`^${id}\\s+live\\s+no\\s+\\d+\\s+500\\s`, 'm'));
    expect(table.stdout).toContain(`leases    ${DEVICES}`);
    expect(table.stdout.trimEnd().endsWith('healthy')).toBe(true);

    // One device: its owner, token and TTL as Redis has them, and its claim from the store.
    const device = devices[0]!;
    const fence = Number(await cluster.redis.redis.get(cluster.keys.fence(device)));
    await waitUntil(async () => (await statusJson(['--device', device])).json.events.items.some((e: { type: string }) => e.type === 'claim'), 10_000);
    const one = await statusJson(['--device', device]);
    expect(one.code).toBe(0);
    expect(one.json.lease).toMatchObject({ serverId: owners.get(device), token: fence, ownerLive: true });
    expect(one.json.lease.ttlMs).toBeGreaterThan(0);
    expect(one.json.lease.ttlMs).toBeLessThanOrEqual(TTL);
    expect(one.json.live).toMatchObject({ status: 'connected', serverId: owners.get(device), token: fence });
    expect(one.json.events.source).toBe('store');
    expect(one.json.events.items[0]).toMatchObject({ type: 'claim', serverId: owners.get(device), token: fence });
    const text = await status(['--device', device]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`owner\\s+${owners.get(device)} \\(live\\)`));
    expect(text.stdout).toMatch(new RegExp(`fence token\\s+${fence} `));
    expect(text.stdout).toMatch(/TTL\s+\d+\.\d s left/);

    // Usage: unknown devices, bad options and bad variables are told apart by the exit code.
    expect((await status(['--device', randomUUID()])).code).toBe(3);
    expect((await status(['--device', 'not-a-device'])).code).toBe(2);
    expect((await status(['--frobnicate'])).code).toBe(2);
    const badEnv = await status([], { LEASE_TTL_MS: 'soon' });
    expect(badEnv.code).toBe(2);
    expect(badEnv.stderr).toContain('LEASE_TTL_MS');
    const noRedis = await status([], { REDIS_URL: `redis://127.0.0.1:${await freePort()}` });
    expect(noRedis.code).toBe(1);
    expect(noRedis.stderr).toContain('Cannot reach Redis');

    // Every server dies: once their keys expire there is no live server, and once their leases
    // are a TTL past their deadline with nobody to sweep them, they are overdue.
    for (const id of SERVERS) cluster.servers.get(id)!.signal('SIGKILL');
    await Promise.all(SERVERS.map((id) => cluster.servers.get(id)!.exited));
    await waitUntil(async () => (await statusJson()).json.totals.overdueLeases === DEVICES, TTL * 5);
    const down = await statusJson();
    expect(down.code).toBe(1);
    expect(down.json.healthy).toBe(false);
    expect(down.json.totals.live).toBe(0);
    expect(down.json.problems).toEqual([
      'no live server',
      `${DEVICES} leases past their deadline by more than ${TTL / 1000} s and not swept: nobody is sweeping`,
    ]);
    expect(down.json.servers.every((s: { state: string }) => s.state === 'down')).toBe(true);
    const downTable = await status([]);
    expect(downTable.code).toBe(1);
    expect(downTable.stdout).toContain('UNHEALTHY: no live server');

    const orphan = await statusJson(['--device', device]);
    expect(orphan.code).toBe(1);
    expect(orphan.json.lease).toBeNull();
    expect(orphan.json.lastHolder).toEqual({ serverId: owners.get(device), bootId: expect.stringMatching(/^[0-9a-f]{12}$/), token: fence });
    expect(orphan.json.deadlineInMs).toBeLessThan(-TTL);
  });
});
