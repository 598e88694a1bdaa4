import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../harness/local-redis.js';
import { discoverQueueNames } from '../../src/monitoring/queue-board.js';
import { startTestCluster, TEST_LEASE_ENV, waitUntil, type TestCluster } from '../../harness/cluster.js';
import { spawnMonitor, type ServerProcess } from '../../harness/processes.js';

// An operator's view, in a real browser: Debian's chromium driven by playwright-core logs in to
// the monitor (a real process) of a real two-server cluster, sees the queues on BullBoard, follows
// BullBoard's menu to the cluster page, and finds there the servers and leases Redis holds; the
// page follows a drain by itself. Screenshots go to test-results/ (git-ignored).

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];
const KEY = 'browser-internal-key-0123456789abcdef';
const USER = 'night-ops';
const PASSWORD = 'browser-test-password-4711';
const FAILURES_PER_MINUTE = 3;
const DEVICES = 6;
const TTL = Number(TEST_LEASE_ENV.LEASE_TTL_MS);
const SCREENSHOTS = resolve(import.meta.dirname, '../../test-results');

let cluster: TestCluster;
let a: ServerProcess;
let b: ServerProcess;
let monitor: ServerProcess;
let browser: Browser;
let context: BrowserContext;
let base: string;
let devices: string[];
const messageQueues: string[] = [];

async function api(server: ServerProcess, method: string, path: string, body?: unknown) {
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as any };
}

/** What Redis says, read the way an operator would: live server keys and lease keys. */
async function redisTruth(): Promise<{ liveServers: string[]; leases: Map<string, string> }> {
  const { redis } = cluster.redis;
  const announced = await redis.smembers(cluster.keys.servers);
  const alive = await Promise.all(announced.map(async (id) => ((await redis.exists(cluster.keys.server(id))) === 1 ? id : null)));
  return { liveServers: alive.filter((id): id is string => id !== null).sort(), leases: await cluster.owners(devices) };
}

async function rows(page: Page, selector: string): Promise<number> {
  return page.locator(selector).count();
}

beforeAll(async () => {
  await mkdir(SCREENSHOTS, { recursive: true });
  cluster = await startTestCluster();
  [a, b] = await Promise.all([cluster.start('browser-a', { INTERNAL_API_KEY: KEY }), cluster.start('browser-b', { INTERNAL_API_KEY: KEY })]);
  devices = await cluster.addDevices(DEVICES);
  await waitUntil(async () => (await cluster.connectedCount(devices)) === DEVICES, 60_000, async () => `${await cluster.connectedCount(devices)} connected`);
  // Messages for two devices, so their outbound queues exist.
  for (const deviceId of devices.slice(0, 2)) {
    for (const text of ['first', 'second']) {
      const accepted = await api(a, 'POST', `/api/devices/${deviceId}/messages`, { to: '4915112345678', type: 'text', text });
      expect(accepted.status).toBe(202);
    }
    messageQueues.push(`wa-out-${deviceId}`);
  }

  const port = await freePort();
  monitor = spawnMonitor(
    {
      REDIS_URL: cluster.redis.url,
      WAFLEET_KEY_PREFIX: cluster.redis.prefix,
      STORE: 'postgres',
      DATABASE_URL: cluster.db.url,
      ADMIN_USERNAME: USER,
      ADMIN_PASSWORD: PASSWORD,
      ADMIN_LOGIN_FAILURES_PER_MINUTE: String(FAILURES_PER_MINUTE),
    },
    port,
  );
  await monitor.waitForHealth();
  base = `http://127.0.0.1:${port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  context = await browser.newContext({ httpCredentials: { username: USER, password: PASSWORD }, viewport: { width: 1440, height: 960 } });
});

afterAll(async () => {
  await context?.close();
  await browser?.close();
  monitor?.signal('SIGTERM');
  await monitor?.exited;
  await cluster?.stop();
});

describe('monitoring in a browser', () => {
  let page: Page;

  it('logs in to BullBoard and sees the queues', async () => {
    page = await context.newPage();
    const response = await page.goto(`${base}/admin/queues`);
    expect(response!.status()).toBe(200);
    // Every queue under the cluster's BullMQ prefix (outbound, write-behind), the two with messages among them.
    const inRedis = await discoverQueueNames(cluster.redis.redis, cluster.keys.bullPrefix);
    expect(inRedis).toEqual(expect.arrayContaining(messageQueues));
    for (const name of inRedis) await page.getByText(name, { exact: true }).first().waitFor({ timeout: 30_000 });
    await page.getByText('Loading...').waitFor({ state: 'hidden', timeout: 30_000 });
    await page.screenshot({ path: resolve(SCREENSHOTS, 'monitoring-bullboard.png') });
  });

  it("opens the cluster page from BullBoard's menu and finds the servers and leases Redis holds", async () => {
    // The menu's last entry opens the links given to BullBoard (uiConfig.miscLinks).
    await page.locator('header ul li').last().locator('button').click();
    await page.getByText('Cluster: servers and leases').click();
    await page.waitForURL(`${base}/admin/cluster`);
    await page.locator('#servers tbody tr[data-server-id]').first().waitFor();

    const truth = await redisTruth();
    expect(truth.liveServers).toEqual(['browser-a', 'browser-b']);
    expect(truth.leases.size).toBe(DEVICES);
    expect(await rows(page, '#servers tbody tr[data-state="live"]')).toBe(truth.liveServers.length);
    expect(await page.locator('#servers tbody tr[data-state="live"]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-server-id')).sort())).toEqual(
      truth.liveServers,
    );
    expect(await rows(page, '#leases tbody tr[data-device-id]')).toBe(truth.leases.size);
    const shown = await page
      .locator('#leases tbody tr[data-device-id]')
      .evaluateAll((trs) => trs.map((tr) => [tr.getAttribute('data-device-id'), tr.getAttribute('data-server-id')]));
    expect(new Map(shown as Array<[string, string]>)).toEqual(truth.leases);
    await expect.poll(() => page.locator('#lease-count').textContent()).toBe(String(DEVICES));

    // Filtering by server narrows the leases to that server's.
    const onA = [...truth.leases.values()].filter((owner) => owner === 'browser-a').length;
    await page.locator('#filters select[name="server"]').selectOption('browser-a');
    await expect.poll(() => rows(page, '#leases tbody tr[data-device-id]'), { timeout: 10_000 }).toBe(onA);
    expect(page.url()).toBe(`${base}/admin/cluster?server=browser-a`);
    await page.locator('#filters select[name="server"]').selectOption('');
    await expect.poll(() => rows(page, '#leases tbody tr[data-device-id]'), { timeout: 10_000 }).toBe(DEVICES);
    await page.screenshot({ path: resolve(SCREENSHOTS, 'monitoring-cluster.png'), fullPage: true });
  });

  it('follows a drain without a reload: one live server holds every lease, and the drains are listed', async () => {
    const heldByA = [...(await cluster.owners(devices)).values()].filter((owner) => owner === 'browser-a').length;
    a.signal('SIGTERM');
    expect(await a.exited).toBe(0);
    await waitUntil(async () => (await cluster.connectedCount(devices, ['browser-b'])) === DEVICES, TTL * 5);

    await expect.poll(() => rows(page, '#servers tbody tr[data-state="live"]'), { timeout: 20_000 }).toBe(1);
    await expect.poll(() => rows(page, '#leases tbody tr[data-server-id="browser-b"]'), { timeout: 20_000 }).toBe(DEVICES);
    expect(await page.locator('#servers tbody tr[data-server-id="browser-a"]').getAttribute('data-state')).toBe('stopped');
    // Lease events reach the store behind the lease core, so they may trail the move a little.
    await expect.poll(() => rows(page, '#events tbody tr[data-type="drain"]'), { timeout: 30_000 }).toBe(heldByA);
    await page.screenshot({ path: resolve(SCREENSHOTS, 'monitoring-cluster-after-drain.png'), fullPage: true });
    expect(b.output()).not.toContain('shutdown deadline passed');
  });

  it('answers a wrong password with 401, and repeated wrong passwords with 429', async () => {
    const wrong = `Basic ${Buffer.from(`${USER}:not-the-password`).toString('base64')}`;
    const attempt = () => fetch(`${base}/admin/queues`, { headers: { authorization: wrong } });
    for (let i = 0; i < FAILURES_PER_MINUTE; i++) {
      const res = await attempt();
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
    }
    const limited = await attempt();
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(monitor.output()).not.toContain(PASSWORD);
  });
});
