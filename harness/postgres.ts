import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { redactUrl } from '../src/shared/redact.js';
import { startStoreHost } from '../src/store/host.js';

export interface TestDatabase {
  /** postgres:// URL of a database nobody else uses. */
  url: string;
  kind: 'postgres' | 'pglite';
  drop(): Promise<void>;
}

const DEFAULT_URLS = ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'];

let serverUrl: Promise<string | null> | undefined;

/**
 * A fresh database per call: on the PostgreSQL at TEST_DATABASE_URL (or the local default), or,
 * when none answers (or WAFLEET_TEST_PG=pglite), an in-memory PGlite served over the wire by
 * an embedded store host in this process. PGlite databases come migrated (the host migrates
 * before it listens); PostgreSQL ones come empty.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  serverUrl ??= findPostgres();
  const admin = await serverUrl;
  return admin ? createPostgresDatabase(admin) : createPgliteDatabase();
}

async function findPostgres(): Promise<string | null> {
  if (process.env.WAFLEET_TEST_PG === 'pglite') return null;
  const configured = process.env.TEST_DATABASE_URL;
  for (const url of configured ? [configured] : DEFAULT_URLS) {
    for (const candidate of [url, withDatabase(url, 'postgres')]) {
      if (await answers(candidate)) return candidate;
    }
  }
  // A URL someone set on purpose must not silently turn into PGlite.
  if (configured) throw new Error(`TEST_DATABASE_URL is set but no PostgreSQL answers there (${redactUrl(configured)})`);
  return null;
}

async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function createPostgresDatabase(adminUrl: string): Promise<TestDatabase> {
  const name = `wafleet_t_${randomBytes(6).toString('hex')}`;
  await withAdmin(adminUrl, (client) => client.query(`create database ${name}`));
  let dropped: Promise<void> | undefined;
  return {
    url: withDatabase(adminUrl, name),
    kind: 'postgres',
    drop() {
      dropped ??= withAdmin(adminUrl, async (client) => {
        // A pool someone forgot to end would otherwise make DROP DATABASE fail.
        await client.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [
          name,
        ]);
        await client.query(`drop database if exists ${name}`);
      });
      return dropped;
    },
  };
}

async function createPgliteDatabase(): Promise<TestDatabase> {
  const host = await startStoreHost({
    dataDir: 'memory://',
    host: '127.0.0.1',
    port: 0,
    log: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
  });
  return { url: host.url, kind: 'pglite', drop: () => host.stop() };
}

async function withAdmin<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await fn(client);
  } finally {
    await client.end();
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
