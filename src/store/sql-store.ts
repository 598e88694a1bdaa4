import pg from 'pg';
import type { Logger } from 'pino';
import { redactUrl } from '../shared/redact.js';
import { createCatalogueStore } from './core.js';
import { createPoolExecutor, type SqlExecutor } from './executor.js';
import { migrate } from './migrate.js';
import { OPERATIONS, operationSql, operationValues, type CallOperation, type OperationName } from './operations.js';
import type { Store } from './types.js';

const STATEMENTS = Object.fromEntries(
  Object.entries(OPERATIONS).map(([name, spec]) => [name, operationSql(spec)]),
) as Record<OperationName, string>;

/** Runs catalogue operations as SQL through an executor. */
export function sqlCaller(executor: SqlExecutor): CallOperation {
  return async (name, args) => {
    const spec = OPERATIONS[name];
    const rows = await executor.query(STATEMENTS[name], operationValues(spec, args));
    if (spec.returns === 'rows') return rows;
    return spec.returns === 'scalar' ? (rows[0]?.value ?? null) : undefined;
  };
}

export interface SqlStoreParts {
  kind: Store['kind'];
  executor: SqlExecutor;
  log: Logger;
  /** Run after the executor is closed (e.g. stopping an embedded host this process runs). */
  after?: Array<() => Promise<void>>;
  /** Wraps each operation, e.g. to fail over to a new embedded host. */
  call?: CallOperation;
}

export function createSqlStore({ kind, executor, log, after = [], call }: SqlStoreParts): Store {
  return createCatalogueStore({
    kind,
    call: call ?? sqlCaller(executor),
    migrate: () => migrate(executor, log),
    cleanups: [() => executor.close(), ...after],
    log,
  });
}

export function createPgPool(connection: pg.PoolConfig, poolMax: number): pg.Pool {
  return new pg.Pool({ ...connection, max: poolMax, connectionTimeoutMillis: 10_000, idleTimeoutMillis: 30_000 });
}

/** STORE=postgres: a local PostgreSQL, or Supabase's direct connection. */
export function createPostgresStore(options: { databaseUrl: string; poolMax: number }, log: Logger): Store {
  const pool = createPgPool({ connectionString: options.databaseUrl }, options.poolMax);
  const executor = createPoolExecutor({ pool, target: redactUrl(options.databaseUrl), pgliteHost: false, log });
  return createSqlStore({ kind: 'postgres', executor, log });
}
