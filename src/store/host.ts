import type { Server } from 'node:net';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import type { Logger } from 'pino';
import { StoreUnavailableError } from './errors.js';
import { createPgliteExecutor } from './executor.js';
import { acquireHostLock, type HostLock } from './host-lock.js';
import { migrate, type Migration } from './migrate.js';

/**
 * PGlite serves every connection from one backend session, one query at a time, so more
 * connections add queueing, not throughput. 64 lets 16 server processes with the default pool of
 * 4 share one host; pglite-socket's own default is 1. Measured in test/integration/store-host.test.ts.
 */
export const DEFAULT_HOST_MAX_CONNECTIONS = 64;

export interface StoreHostOptions {
  /** A directory, or `memory://` for a database that lives as long as the host. */
  dataDir: string;
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  maxConnections?: number;
  log: Logger;
  migrations?: Migration[];
}

export interface StoreHost {
  /** Connection URL for pg; PGlite ignores credentials. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  stop(): Promise<void>;
}

export function isMemoryDir(dataDir: string): boolean {
  return dataDir.startsWith('memory://');
}

/**
 * Opens PGlite, migrates it, then serves it over the PostgreSQL wire protocol. Throws
 * StoreHostLockedError when another live process holds the data directory, and
 * StoreUnavailableError('store_host_port_in_use') when the port is taken.
 */
export async function startStoreHost(options: StoreHostOptions): Promise<StoreHost> {
  const log = options.log.child({ module: 'store-host' });
  const maxConnections = options.maxConnections ?? DEFAULT_HOST_MAX_CONNECTIONS;
  const memory = isMemoryDir(options.dataDir);
  const lock: HostLock | null = memory ? null : await acquireHostLock(options.dataDir);
  let db: PGlite | undefined;
  let server: PGLiteSocketServer | undefined;

  try {
    db = await PGlite.create(memory ? 'memory://' : options.dataDir);
    // Before listening: the socket shares one backend session among all clients, so their
    // advisory locks could not keep two clients' migration runs apart. Here nobody else is
    // connected yet, and clients' migrate() later finds nothing to do.
    const migrations = options.migrations ? { migrations: options.migrations } : {};
    await migrate(createPgliteExecutor(db, { closeDb: false }), log, migrations);

    server = new PGLiteSocketServer({ db, host: options.host, port: options.port, maxConnections });
    try {
      await server.start();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new StoreUnavailableError(
          'store_host_port_in_use',
          `cannot host the PGlite store at ${options.host}:${options.port}: the port is in use`,
          { cause: err },
        );
      }
      throw err;
    }
  } catch (err) {
    await server?.stop().catch(() => undefined);
    await db?.close().catch(() => undefined);
    await lock?.release().catch(() => undefined);
    throw err;
  }

  const port = Number(server.getServerConn().split(':').pop());
  const netServer = (server as unknown as { server?: Server | null }).server;
  // Refused connections are otherwise invisible on the host side; the client gets a
  // 'store_host_full' error, the operator gets this line.
  netServer?.on('drop', () => log.warn({ maxConnections }, 'store host refused a connection: connection limit reached'));
  log.info({ host: options.host, port, dataDir: options.dataDir, maxConnections }, 'PGlite store host listening');

  const openDb = db;
  const openServer = server;
  let stopping: Promise<void> | undefined;
  const urlHost = options.host.includes(':') ? `[${options.host}]` : options.host;

  return {
    url: `postgres://postgres@${urlHost}:${port}/postgres`,
    host: options.host,
    port,
    stop() {
      stopping ??= (async () => {
        const steps: Array<[string, () => Promise<void>]> = [
          ['stop socket server', () => openServer.stop()],
          ['close PGlite', () => openDb.close()],
          ['release data directory lock', async () => lock?.release()],
        ];
        for (const [step, run] of steps) {
          try {
            await run();
          } catch (err) {
            log.warn({ err, step }, 'store host shutdown step failed');
          }
        }
        log.info({ port }, 'PGlite store host stopped');
      })();
      return stopping;
    },
  };
}
