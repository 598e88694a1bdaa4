import type { PGlite, Transaction } from '@electric-sql/pglite';
import type pg from 'pg';
import type { Logger } from 'pino';
import { WafleetError } from '../shared/errors.js';
import { StoreQueryError, StoreUnavailableError } from './errors.js';
import type { Row } from './rows.js';

/** What the SQL store and the migration runner need from a database connection. */
export interface SqlQueryable {
  query(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  /** A script of several statements (simple protocol); used for migration files. */
  exec(sql: string): Promise<void>;
}

export interface SqlSession extends SqlQueryable {
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T>;
}

export interface SqlExecutor extends SqlQueryable {
  /**
   * Runs `fn` with all its queries on one database session, so session state (advisory locks)
   * holds from one query to the next. Calls on the same executor run one at a time.
   */
  session<T>(fn: (session: SqlSession) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface PoolExecutorOptions {
  pool: pg.Pool;
  /** How to name the database in errors and logs, password already hidden. */
  target: string;
  /** The pool talks to an embedded PGlite host, whose refusals look like dropped connections. */
  pgliteHost: boolean;
  log: Logger;
}

export function createPoolExecutor({ pool, target, pgliteHost, log }: PoolExecutorOptions): SqlExecutor {
  // Without a listener, an idle connection dropped by the server (restart, host hand-over)
  // would crash the process with an unhandled 'error' event.
  pool.on('error', (err) => log.warn({ err, target }, 'idle store connection dropped'));

  const translate = (err: unknown, phase: Phase) => translateError(err, { target, phase, pgliteHost });

  async function connect(): Promise<pg.PoolClient> {
    try {
      return await pool.connect();
    } catch (err) {
      throw translate(err, 'connect');
    }
  }

  /** Borrows one connection for `fn`; a connection that failed other than by a database error is discarded. */
  async function withClient<T>(fn: (run: (sql: string, params?: readonly unknown[]) => Promise<Row[]>) => Promise<T>): Promise<T> {
    const client = await connect();
    let broken = false;
    // pg-pool listens for errors only on idle connections. One that breaks while lent out but
    // between two queries (the store stopped, a proxy cut it) would otherwise emit an unhandled
    // 'error' and crash the server; it is discarded instead.
    const onError = (err: Error) => {
      broken = true;
      log.warn({ err, target }, 'store connection dropped while in use');
    };
    client.on('error', onError);
    const run = async (sql: string, params?: readonly unknown[]) => {
      try {
        return (await client.query(sql, params as unknown[] | undefined)).rows as Row[];
      } catch (err) {
        if (!isDatabaseError(err)) broken = true;
        throw translate(err, 'query');
      }
    };
    try {
      return await fn(run);
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  let sessionQueue: Promise<unknown> = Promise.resolve();

  return {
    query: (sql, params) => withClient((run) => run(sql, params)),
    exec: (sql) => withClient(async (run) => void (await run(sql))),
    session(fn) {
      const next = sessionQueue.then(() =>
        withClient((run) => {
          const queryable: SqlQueryable = { query: run, exec: async (sql) => void (await run(sql)) };
          return fn({
            ...queryable,
            async transaction(body) {
              await run('begin');
              try {
                const result = await body(queryable);
                await run('commit');
                return result;
              } catch (err) {
                await run('rollback').catch(() => undefined);
                throw err;
              }
            },
          });
        }),
      );
      sessionQueue = next.catch(() => undefined);
      return next;
    },
    close: () => pool.end(),
  };
}

/**
 * An in-process PGlite database. Only for a process that is the database's sole user (tests,
 * one-off tools, the store host before it listens): once a socket server shares the database,
 * direct queries could run inside a socket client's open transaction, so the host's own process
 * must go through the socket too.
 */
export function createPgliteExecutor(db: PGlite, options: { closeDb: boolean }): SqlExecutor {
  const wrap = (q: Pick<Transaction, 'query' | 'exec'>): SqlQueryable => ({
    async query(sql, params) {
      try {
        return (await q.query<Row>(sql, params as unknown[] | undefined)).rows;
      } catch (err) {
        throw translateError(err, { target: 'in-process PGlite', phase: 'query', pgliteHost: false });
      }
    },
    async exec(sql) {
      try {
        await q.exec(sql);
      } catch (err) {
        throw translateError(err, { target: 'in-process PGlite', phase: 'query', pgliteHost: false });
      }
    },
  });
  const direct = wrap(db);
  let sessionQueue: Promise<unknown> = Promise.resolve();

  return {
    ...direct,
    session(fn) {
      // PGlite has a single backend session; the queue keeps two callers' lock/unlock pairs apart.
      const next = sessionQueue.then(() => fn({ ...direct, transaction: (body) => db.transaction((tx) => body(wrap(tx))) }));
      sessionQueue = next.catch(() => undefined);
      return next;
    },
    close: async () => {
      if (options.closeDb && !db.closed) await db.close();
    },
  };
}

type Phase = 'connect' | 'query';

const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT']);

interface DatabaseErrorLike {
  code: string;
  severity: string;
  message: string;
}

function isDatabaseError(err: unknown): err is DatabaseErrorLike {
  const e = err as Partial<DatabaseErrorLike> | null;
  return typeof e?.code === 'string' && typeof e.severity === 'string';
}

/** Turns driver errors into the store's error classes, naming the target (never a password). */
export function translateError(
  err: unknown,
  { target, phase, pgliteHost }: { target: string; phase: Phase; pgliteHost: boolean },
): Error {
  if (err instanceof WafleetError) return err;
  if (isDatabaseError(err)) {
    if (err.code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(err.code)) {
      return new StoreUnavailableError(
        phase === 'connect' ? 'store_unreachable' : 'store_connection_lost',
        `store at ${target} is unavailable: ${err.message}`,
        { cause: err },
      );
    }
    return new StoreQueryError(err.message, err.code, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (phase === 'connect') {
    if (typeof code === 'string' && UNREACHABLE_CODES.has(code)) {
      return new StoreUnavailableError('store_unreachable', `nothing answers at ${target} (${code})`, { cause: err });
    }
    // The PGlite socket server turns away connections past its limit by closing them before the
    // handshake (Node's server.maxConnections, or its raw "Too many connections" text), which pg
    // can only report as a dropped connection.
    if (pgliteHost && (code === 'ECONNRESET' || code === 'EPIPE' || /terminated unexpectedly/i.test(message))) {
      return new StoreUnavailableError(
        'store_host_full',
        `PGlite store host at ${target} closed a new connection before the handshake: all of its connections ` +
          `(maxConnections) are in use. Each server process holds up to STORE_POOL_MAX of them; lower ` +
          `STORE_POOL_MAX or raise the host's maxConnections.`,
        { cause: err },
      );
    }
    return new StoreUnavailableError('store_unreachable', `cannot connect to store at ${target}: ${message}`, {
      cause: err,
    });
  }
  return new StoreUnavailableError('store_connection_lost', `connection to store at ${target} failed: ${message}`, {
    cause: err,
  });
}
