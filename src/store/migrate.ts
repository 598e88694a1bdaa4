import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { StoreSchemaError } from './errors.js';
import type { SqlExecutor } from './executor.js';
import type { MigrationReport } from './types.js';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

// Any fixed 64-bit key works; this one is "wafleet" in ASCII, recognisable in pg_locks.
const MIGRATION_LOCK_KEY = BigInt('0x7761666c656574').toString();

const MIGRATION_FILE = /^(\d{3})_[a-z0-9_]+\.sql$/;

export interface Migration {
  version: number;
  /** File name without `.sql`, e.g. `001_init`. */
  name: string;
  sql: string;
  checksum: string;
}

export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = MIGRATION_FILE.exec(file);
    if (!match) throw new StoreSchemaError(`migration file ${file} is not named NNN_lower_snake.sql`);
    const version = Number(match[1]);
    if (migrations.some((m) => m.version === version)) {
      throw new StoreSchemaError(`two migration files share version ${match[1]}`);
    }
    const sql = await readFile(`${dir}/${file}`, 'utf8');
    migrations.push({ version, name: file.slice(0, -4), sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return migrations;
}

const CREATE_MIGRATIONS_TABLE = `
  create table if not exists wafleet_migrations (
    version integer primary key,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
  )`;

/**
 * Applies pending migrations, each in its own transaction, and records them. Concurrent starts
 * against PostgreSQL queue on an advisory lock held for the whole run. The embedded PGlite host
 * shares one backend session among all its clients, where advisory locks exclude nobody; there
 * the per-migration table lock and re-check still keep each file applied once, and the host has
 * migrated in-process before it listens anyway.
 */
export async function migrate(
  executor: SqlExecutor,
  log: Logger,
  options: { migrations?: Migration[] } = {},
): Promise<MigrationReport> {
  const migrations = options.migrations ?? (await loadMigrations());
  return executor.session(async (session) => {
    await session.query('select pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
    try {
      await session.exec(CREATE_MIGRATIONS_TABLE);
      const recorded = new Map(
        (await session.query('select version, checksum from wafleet_migrations')).map((r) => [
          Number(r.version),
          String(r.checksum),
        ]),
      );
      const report: MigrationReport = { applied: [], alreadyApplied: [] };
      for (const migration of migrations) {
        const checksum = recorded.get(migration.version);
        if (checksum !== undefined) {
          if (checksum !== migration.checksum) {
            log.warn({ migration: migration.name }, 'applied migration file has changed since; it is not re-run');
          }
          report.alreadyApplied.push(migration.name);
          continue;
        }
        const applied = await session.transaction(async (tx) => {
          await tx.exec('lock table wafleet_migrations in exclusive mode');
          const again = await tx.query('select 1 from wafleet_migrations where version = $1', [migration.version]);
          if (again.length > 0) return false;
          await tx.exec(migration.sql);
          await tx.query('insert into wafleet_migrations (version, name, checksum) values ($1, $2, $3)', [
            migration.version,
            migration.name,
            migration.checksum,
          ]);
          return true;
        });
        (applied ? report.applied : report.alreadyApplied).push(migration.name);
        if (applied) log.info({ migration: migration.name }, 'migration applied');
      }
      const ahead = [...recorded.keys()].filter((v) => v > latestVersion(migrations));
      if (ahead.length > 0) {
        log.warn({ versions: ahead }, 'database has migrations this build does not know; a newer wafleet ran here');
      }
      return report;
    } finally {
      await session
        .query('select pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY])
        .catch((err: unknown) => log.warn({ err }, 'could not release the migration lock'));
    }
  });
}

/** Highest migration version this build ships. */
export function latestVersion(migrations: Migration[]): number {
  return Math.max(0, ...migrations.map((m) => m.version));
}
