// `npm start`: a three-server cluster on this host under pm2, on the embedded store, and the
// monitor. Starts a local Redis first when none answers, then waits until every server answers
// /health, and prints where BullBoard and the cluster page are. The monitor is left out, with the
// reason, when its configuration is refused (no ADMIN_PASSWORD, or a weak one in production).
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfigFromProcess } from '../src/config/index.js';
import { CLUSTER_JSON_PATH, CLUSTER_PAGE_PATH, QUEUES_PATH } from '../src/monitoring/cluster-page.js';
import { ConfigError } from '../src/shared/errors.js';
import { redactUrl } from '../src/shared/redact.js';
import { ensureRedis } from '../harness/local-redis.js';
import { loadConfigOrExit } from './lib/cli.js';

interface App {
  name: string;
  args?: string[];
  env?: Record<string, string>;
}

const HEALTH_TIMEOUT_MS = 90_000;
// The monitor needs no store to answer: once the servers are up it follows within seconds.
const MONITOR_TIMEOUT_MS = 30_000;

async function health(port: string | number): Promise<Record<string, unknown> | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
    return (await res.json()) as Record<string, unknown>;
  } catch {
    return null;
  }
}

const config = loadConfigOrExit();
try {
  // Only a standalone Redis on this host is started here; Sentinel and Cluster are the operator's.
  const { target } = config.redis;
  if (target.mode === 'standalone') {
    const outcome = await ensureRedis(target.url);
    if (outcome === 'started') console.log(`Started a local redis-server for ${redactUrl(target.url)} (log: logs/redis.log).`);
  }
} catch (err) {
  console.error(`wafleet: ${(err as Error).message}`);
  process.exit(1);
}

// The monitor reads the same environment with its own rules; ask them before pm2 would restart
// a refused monitor over and over.
let monitorRefused: string | null = null;
try {
  loadConfigFromProcess('.env', 'monitor');
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  monitorRefused = err.message;
}

const { apps } = (await import(pathToFileURL(resolve('ecosystem.config.js')).href)) as { apps: App[] };
const isMonitor = (app: App) => app.args?.includes('src/monitor.ts') ?? false;
const toStart = monitorRefused ? ['--only', apps.filter((app) => !isMonitor(app)).map((app) => app.name).join(',')] : [];

const pm2 = resolve('node_modules/.bin/pm2');
const started = spawnSync(pm2, ['start', 'ecosystem.config.js', ...toStart], { stdio: 'inherit' });
if (started.status !== 0) process.exit(started.status ?? 1);

const servers = apps.filter((app) => app.env?.PORT !== undefined && app.env.SERVER_ID !== undefined);
console.log(`\nWaiting for ${servers.length} servers to answer /health ...`);
const deadline = Date.now() + HEALTH_TIMEOUT_MS;
const pending = new Set(servers);
while (pending.size > 0 && Date.now() < deadline) {
  for (const app of [...pending]) {
    const report = await health(app.env!.PORT!);
    if (report) {
      pending.delete(app);
      console.log(`  ${app.env!.SERVER_ID}  http://127.0.0.1:${app.env!.PORT}/health  ${String(report.status)}`);
    }
  }
  if (pending.size > 0) await new Promise((r) => setTimeout(r, 500));
}
if (pending.size > 0) {
  console.error(`\n${[...pending].map((a) => a.name).join(', ')} did not answer within ${HEALTH_TIMEOUT_MS / 1000} s; see \`npm run logs\` and logs/.`);
  process.exit(1);
}

const monitoringUrl = `http://127.0.0.1:${config.monitoring.port}`;
if (monitorRefused) {
  console.log(`\nThe monitor (BullBoard, cluster page) was not started:\n${monitorRefused.replace(/^/gm, '  ')}`);
  console.log('  Set ADMIN_PASSWORD in .env (see .env.example), then `npm start` again.');
} else {
  let report: Record<string, unknown> | null = null;
  for (const deadline = Date.now() + MONITOR_TIMEOUT_MS; !report && Date.now() < deadline; ) {
    report = await health(config.monitoring.port);
    if (!report) await new Promise((r) => setTimeout(r, 500));
  }
  if (report) {
    console.log(`\n  BullBoard     ${monitoringUrl}${QUEUES_PATH}   (user ${config.monitoring.adminUsername}, password ADMIN_PASSWORD)`);
    console.log(`  Cluster page  ${monitoringUrl}${CLUSTER_PAGE_PATH}   (JSON: ${monitoringUrl}${CLUSTER_JSON_PATH})`);
  } else {
    console.error(`\nThe monitor did not answer ${monitoringUrl}/health; see \`npx pm2 logs wafleet-monitor\` and logs/.`);
  }
}
console.log('\nCluster up. `pm2 ls` lists it, `npm run logs` follows the logs, `npm stop` stops it.');
