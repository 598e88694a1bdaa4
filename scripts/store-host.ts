// `npm run store` (pm2 app `wafleet-store`): holds the embedded PGlite store for every server on
// this host and serves it over the PostgreSQL wire protocol on PGLITE_HOST:PGLITE_PORT. When
// another process already hosts it, this one stands by and takes over if that host goes away.
import { createLogger } from '../src/shared/logger.js';
import { createStore } from '../src/store/index.js';
import { loadConfigOrExit } from './lib/cli.js';

const STANDBY_PING_MS = 2000;

const config = loadConfigOrExit();
const log = createLogger({ level: config.logLevel }).child({ module: 'store-host' });
if (config.store.kind !== 'pglite') {
  log.info({ store: config.store.kind }, 'STORE is not pglite: there is no embedded store to host');
  process.exit(0);
}

const store = await createStore(config.store, { log }).catch((err: Error) => {
  log.fatal({ err }, 'cannot host or reach the store');
  process.exit(1);
});
log.info({ host: config.store.host, port: config.store.port, dataDir: config.store.dataDir }, 'store host up');

// A client of another host notices that host's death on its next query, and takes over.
const standby = setInterval(() => {
  store.ping().catch((err: Error) => log.warn({ err }, 'store ping failed'));
}, STANDBY_PING_MS);

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  clearInterval(standby);
  log.info({ signal }, 'store host stopping');
  await store.close().catch((err: Error) => log.error({ err }, 'store close failed'));
  process.exit(0);
};
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
