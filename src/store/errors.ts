import { DependencyUnavailableError, WafleetError } from '../shared/errors.js';

export type StoreUnavailableCode =
  /** Nothing answers at the configured address (connection refused, DNS, timeout). */
  | 'store_unreachable'
  /** A connection broke while a query was running; the query may or may not have committed. */
  | 'store_connection_lost'
  /** The embedded PGlite host closed a new connection: it serves a bounded number of them. */
  | 'store_host_full'
  /** An embedded PGlite host should be running (its lock is held) but never answered. */
  | 'store_host_not_answering'
  /** The embedded host's port is taken by something that is not a PGlite store host. */
  | 'store_host_port_in_use';

/**
 * The store cannot be reached right now. Write-behind jobs retry on it; start-up stops on it.
 * Messages name the target with its password hidden, never a key.
 */
export class StoreUnavailableError extends DependencyUnavailableError {
  declare readonly code: StoreUnavailableCode;

  constructor(code: StoreUnavailableCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The database refused an operation (constraint, bad input, missing function). Retrying will not help. */
export class StoreQueryError extends WafleetError {
  /** SQLSTATE (e.g. 23514 check_violation), or a PostgREST code (PGRST202) for the supabase adapter. */
  readonly sqlState: string | undefined;

  constructor(message: string, sqlState: string | undefined, options?: { cause?: unknown }) {
    super('store_query_failed', message, options);
    this.sqlState = sqlState;
  }
}

/** The database schema is not the one this build expects, and this adapter cannot fix it itself. */
export class StoreSchemaError extends WafleetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('store_schema_mismatch', message, options);
  }
}

/** Another live process holds the embedded store host's lock for this data directory. */
export class StoreHostLockedError extends WafleetError {
  readonly lockPath: string;
  readonly ownerPid: number;

  constructor(lockPath: string, ownerPid: number) {
    super('store_host_locked', `PGlite data directory is held by process ${ownerPid} (lock file ${lockPath})`);
    this.lockPath = lockPath;
    this.ownerPid = ownerPid;
  }
}
