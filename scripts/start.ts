// `npm start`: a three-server cluster on this host under pm2, on the embedded store. Starts a
// local Redis first when none answers, then waits until every server answers /health.
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { redactUrl } from '../src/shared/redact.js';
import { ensureRedis } from './lib/local-redis.js';
import { loadConfigOrExit } from './lib/cli.js';

interface App {
  name: string;
  env?: Record<string, string>;
}

const HEALTH_TIMEOUT_MS = 90_000;

async function health(port: string): Promise<Record<string, unknown> | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
    return (await res.json()) as Record<string, unknown>;
  } catch {
    return null;
  }
}

const config = loadConfigOrExit();
try {
  const outcome = await ensureRedis(config.redis.url);
  if (outcome === 'started') console.log(`Started a local redis-server for ${redactUrl(config.redis.url)} (log: logs/redis.log).`);
} catch (err) {
  console.error(`wafleet: ${(err as Error).message}`);
  process.exit(1);
}

const pm2 = resolve('node_modules/.bin/pm2');
const started = spawnSync(pm2, ['start', 'ecosystem.config.js'], { stdio: 'inherit' });
if (started.status !== 0) process.exit(started.status ?? 1);

const { apps } = (await import(pathToFileURL(resolve('ecosystem.config.js')).href)) as { apps: App[] };
const servers = apps.filter((app) => app.env?.PORT !== undefined && app.env.SERVER_ID !== undefined);
console.log(`\nWaiting for ${servers.length} servers to answer /health ...`);
const deadline = Date.now() + HEALTH_TIMEOUT_MS;
const pending = new Set(servers);
while (pending.size > 0 && Date.now() < deadline) {
  for (const app of [...pending]) {
    const report = await health(app.env!.PORT!);
    if (report) {
      pending.delete(app);
      console.log(`  ${app.env!.SERVER_ID}  http://127.0.0.1:${app.env!.PORT}/health  ${report.status}`);
    }
  }
  if (pending.size > 0) await new Promise((r) => setTimeout(r, 500));
}
if (pending.size > 0) {
  console.error(`\n${[...pending].map((a) => a.name).join(', ')} did not answer within ${HEALTH_TIMEOUT_MS / 1000} s; see \`npm run logs\` and logs/.`);
  process.exit(1);
}
console.log('\nCluster up. `pm2 ls` lists it, `npm run logs` follows the logs, `npm stop` stops it.');
