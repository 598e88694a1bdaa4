// `npm stop`: stops the pm2 cluster of ecosystem.config.js. Servers go first, so they can still
// reach the embedded store while they drain and mark themselves inactive, and the monitor still
// shows the drain; then the monitor; the store host last.
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const { apps } = (await import(pathToFileURL(resolve('ecosystem.config.js')).href)) as { apps: Array<{ name: string; args?: string[] }> };
const isStoreHost = (app: { args?: string[] }) => app.args?.includes('scripts/store-host.ts') ?? false;
const isMonitor = (app: { args?: string[] }) => app.args?.includes('src/monitor.ts') ?? false;
const servers = apps.filter((app) => !isStoreHost(app) && !isMonitor(app)).map((app) => app.name);
const monitors = apps.filter(isMonitor).map((app) => app.name);
const storeHosts = apps.filter(isStoreHost).map((app) => app.name);

const pm2 = resolve('node_modules/.bin/pm2');
const running = new Set(
  (JSON.parse(spawnSync(pm2, ['jlist'], { encoding: 'utf8' }).stdout || '[]') as Array<{ name: string }>).map((p) => p.name),
);
let failed = false;
for (const names of [servers, monitors, storeHosts]) {
  // pm2 deletes the named apps in parallel and returns once they have exited.
  const targets = names.filter((name) => running.has(name));
  if (targets.length === 0) continue;
  const result = spawnSync(pm2, ['delete', ...targets], { stdio: ['ignore', 'ignore', 'inherit'] });
  failed ||= result.status !== 0;
}
console.log(failed ? 'Some apps did not stop; see `pm2 ls`.' : `Stopped ${[...servers, ...monitors, ...storeHosts].filter((n) => running.has(n)).join(', ') || 'nothing (no wafleet app was running)'}.`);
process.exit(failed ? 1 : 0);
