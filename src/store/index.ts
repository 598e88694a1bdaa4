import type { Logger } from 'pino';
import { createPgliteStore } from './pglite.js';
import { createPostgresStore } from './sql-store.js';
import { createSupabaseStore } from './supabase.js';
import type { Store, StoreOptions } from './types.js';

export * from './types.js';
export { CONNECTION_LOG_EVENT_TYPES, type ConnectionLogEventType } from './connection-events.js';
export { StoreHostLockedError, StoreQueryError, StoreSchemaError, StoreUnavailableError } from './errors.js';
export { DEFAULT_HOST_MAX_CONNECTIONS, startStoreHost, type StoreHost, type StoreHostOptions } from './host.js';
export { loadMigrations, migrate, MIGRATIONS_DIR, type Migration } from './migrate.js';
export { createInProcessPgliteStore } from './pglite.js';

/** The store for STORE=pglite|postgres|supabase. Does not migrate; call store.migrate(). */
export async function createStore(options: StoreOptions, deps: { log: Logger }): Promise<Store> {
  const log = deps.log.child({ module: 'store', store: options.kind });
  switch (options.kind) {
    case 'postgres':
      return createPostgresStore(options, log);
    case 'supabase':
      return createSupabaseStore(options, log);
    case 'pglite':
      return createPgliteStore(options, log);
  }
}
