import { createClient } from '@supabase/supabase-js';
import type { Logger } from 'pino';
import { redactUrl } from '../shared/redact.js';
import { createCatalogueStore } from './core.js';
import { StoreQueryError, StoreSchemaError, StoreUnavailableError } from './errors.js';
import { createPoolExecutor } from './executor.js';
import { latestVersion, loadMigrations, migrate } from './migrate.js';
import { OPERATIONS, type CallOperation } from './operations.js';
import { toNumber } from './rows.js';
import { createPgPool } from './sql-store.js';
import type { MigrationReport, Store } from './types.js';

export interface SupabaseStoreOptions {
  url: string;
  serviceRoleKey: string;
  databaseUrl?: string | undefined;
}

// PostgREST answers these when it cannot reach its own database.
const POSTGREST_UNAVAILABLE = new Set(['PGRST000', 'PGRST001', 'PGRST002', 'PGRST003']);

/** STORE=supabase: every operation is a PostgREST RPC to the same SQL functions the SQL adapters call. */
export function createSupabaseStore(options: SupabaseStoreOptions, log: Logger): Store {
  const client = createClient(options.url, options.serviceRoleKey, {
    auth: { persistSession: false, autoRefreshToken: false },
    // wafleet never uses Realtime, and on Node 20 supabase-js refuses to start without a
    // WebSocket implementation; this one fails loudly should anything ever try.
    realtime: { transport: NoRealtime as never },
  });
  const target = redactUrl(options.url);

  const call: CallOperation = async (name, args) => {
    const spec = OPERATIONS[name];
    const response = await client.rpc(spec.fn, args);
    // PostgREST answers untyped JSON; the row mappers check each field.
    const data: unknown = response.data;
    const { error, status } = response;
    if (error) {
      if (!error.code || status === 0 || POSTGREST_UNAVAILABLE.has(error.code)) {
        throw new StoreUnavailableError('store_unreachable', `Supabase at ${target} did not answer ${spec.fn}: ${error.message}`);
      }
      throw new StoreQueryError(`${spec.fn}: ${error.message}`, error.code);
    }
    if (spec.returns === 'rows') return data ?? [];
    return spec.returns === 'scalar' ? (data ?? null) : undefined;
  };

  async function migrateSupabase(): Promise<MigrationReport> {
    const migrations = await loadMigrations();
    if (options.databaseUrl) {
      const pool = createPgPool({ connectionString: options.databaseUrl }, 1);
      const executor = createPoolExecutor({ pool, target: redactUrl(options.databaseUrl), pgliteHost: false, log });
      try {
        return await migrate(executor, log, { migrations });
      } finally {
        await executor.close();
      }
    }
    // PostgREST cannot run DDL, so without the direct connection all we can do is check.
    const wanted = latestVersion(migrations);
    let current = 0;
    try {
      current = toNumber(await call('schemaVersion', {}));
    } catch (err) {
      if (!(err instanceof StoreQueryError)) throw err;
    }
    if (current < wanted) {
      throw new StoreSchemaError(
        `the Supabase database is at schema version ${current}, this build needs ${wanted}. Run \`npm run migrate\` ` +
          `with DATABASE_URL set to the project's direct connection string (Supabase: Project Settings > Database), ` +
          `or set DATABASE_URL for the servers so they migrate at start.`,
      );
    }
    return { applied: [], alreadyApplied: migrations.filter((m) => m.version <= current).map((m) => m.name) };
  }

  return createCatalogueStore({ kind: 'supabase', call, migrate: migrateSupabase, cleanups: [], log });
}

class NoRealtime {
  constructor() {
    throw new Error('wafleet does not use Supabase Realtime');
  }
}
