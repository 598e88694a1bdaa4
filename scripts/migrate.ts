// `npm run migrate`: applies pending migrations to the configured store (STORE, DATABASE_URL,
// PGLITE_*). Safe to run while servers start: migrations take an advisory lock. For Supabase,
// set DATABASE_URL to the project's direct connection.
import { createLogger } from '../src/shared/logger.js';
import { createStore } from '../src/store/index.js';
import { loadConfigOrExit } from './lib/cli.js';

const config = loadConfigOrExit();
const log = createLogger({ level: config.logLevel === 'info' ? 'warn' : config.logLevel });
try {
  const store = await createStore(config.store, { log });
  try {
    const report = await store.migrate();
    console.log(
      report.applied.length > 0
        ? `Applied ${report.applied.length} migration(s): ${report.applied.join(', ')}`
        : `Nothing to apply; ${report.alreadyApplied.length} migration(s) already applied.`,
    );
  } finally {
    await store.close();
  }
} catch (err) {
  console.error(`wafleet: migration failed: ${(err as Error).message}`);
  process.exitCode = 1;
}
