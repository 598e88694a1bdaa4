import { connect } from 'node:net';
import { PGlite } from '@electric-sql/pglite';
import type { Logger } from 'pino';
import { StoreHostLockedError, StoreUnavailableError } from './errors.js';
import { createPgliteExecutor, createPoolExecutor } from './executor.js';
import { hostLockPath } from './host-lock.js';
import { DEFAULT_HOST_MAX_CONNECTIONS, isMemoryDir, startStoreHost, type StoreHost } from './host.js';
import type { CallOperation } from './operations.js';
import { createPgPool, createSqlStore, sqlCaller } from './sql-store.js';
import type { Store } from './types.js';

export interface PgliteStoreOptions {
  dataDir: string;
  host: string;
  port: number;
  poolMax: number;
  hostMode?: 'auto' | 'client';
}

export interface PgliteStoreTuning {
  /** How long a process that lost the race to host waits for the winner to answer. */
  hostWaitMs?: number;
  /** Connection limit of the host, should this process become it. */
  hostMaxConnections?: number;
}

/**
 * STORE=pglite. Every server process on the host is a client of one store host over the wire
 * protocol; the first process that finds nobody answering becomes the host (in-process), and
 * when the host goes away, the first client to notice takes over its data directory.
 */
export async function createPgliteStore(
  options: PgliteStoreOptions,
  log: Logger,
  tuning: PgliteStoreTuning = {},
): Promise<Store> {
  const target = `${options.host}:${options.port}`;
  let hosted: StoreHost | undefined;
  let ensuring: Promise<void> | undefined;
  const ensureHost = () => {
    ensuring ??= connectOrHost(options, log, tuning)
      .then((host) => {
        if (host) hosted = host;
      })
      .finally(() => (ensuring = undefined));
    return ensuring;
  };
  await ensureHost();

  const pool = createPgPool({ host: options.host, port: options.port, user: 'postgres', database: 'postgres' }, options.poolMax);
  const executor = createPoolExecutor({ pool, target, pgliteHost: true, log });
  const plain = sqlCaller(executor);
  const call: CallOperation = async (name, args) => {
    try {
      return await plain(name, args);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError && err.code === 'store_unreachable') || hosted) throw err;
      log.warn({ target }, 'PGlite store host is gone; taking over or waiting for the new host');
      await ensureHost();
      return plain(name, args);
    }
  };
  return createSqlStore({ kind: 'pglite', executor, log, call, after: [async () => hosted?.stop()] });
}

/** Returns the host this process started, or undefined when another process serves the store. */
async function connectOrHost(options: PgliteStoreOptions, log: Logger, tuning: PgliteStoreTuning): Promise<StoreHost | undefined> {
  const waitMs = tuning.hostWaitMs ?? 15_000;
  const deadline = Date.now() + waitMs;
  let lockOwner: number | undefined;
  for (;;) {
    if (await answers(options.host, options.port)) return undefined;
    if (options.hostMode === 'client') {
      if (Date.now() >= deadline) {
        throw new StoreUnavailableError(
          'store_host_not_answering',
          `no PGlite store host answered at ${options.host}:${options.port} within ${Math.round(waitMs / 1000)} s ` +
            '(PGLITE_HOST_MODE=client never hosts; is the wafleet-store app running?)',
        );
      }
      await new Promise((done) => setTimeout(done, 200));
      continue;
    }
    try {
      return await startStoreHost({
        dataDir: options.dataDir,
        host: options.host,
        port: options.port,
        maxConnections: tuning.hostMaxConnections ?? DEFAULT_HOST_MAX_CONNECTIONS,
        log,
      });
    } catch (err) {
      // Another process won the race: it holds the directory, or already listens on the port.
      if (err instanceof StoreHostLockedError) lockOwner = err.ownerPid;
      else if (!(err instanceof StoreUnavailableError && err.code === 'store_host_port_in_use')) throw err;
    }
    if (Date.now() >= deadline) {
      const holder =
        lockOwner === undefined || isMemoryDir(options.dataDir)
          ? ''
          : ` Process ${lockOwner} holds ${hostLockPath(options.dataDir)} but does not serve there; if it is not a ` +
            'wafleet store host, stop it or remove the lock file.';
      throw new StoreUnavailableError(
        'store_host_not_answering',
        `no PGlite store host answered at ${options.host}:${options.port} within ${Math.round(waitMs / 1000)} s.${holder}`,
      );
    }
    await new Promise((done) => setTimeout(done, 200));
  }
}

/** A TCP accept is enough: the host listens only once it has migrated. */
function answers(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host, port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(1000, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * A store on a PGlite database inside this process, for tests and one-off tools. Never for
 * server processes: they share one host (see createPgliteStore).
 */
export async function createInProcessPgliteStore(
  log: Logger,
  options: { db?: PGlite; dataDir?: string } = {},
): Promise<Store> {
  const db = options.db ?? (await PGlite.create(options.dataDir ?? 'memory://'));
  const executor = createPgliteExecutor(db, { closeDb: !options.db });
  return createSqlStore({ kind: 'pglite', executor, log });
}
