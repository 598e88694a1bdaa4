import { randomUUID } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInProcessPgliteStore, loadMigrations, migrate, type Store } from '../../src/store/index.js';
import { createPgliteExecutor } from '../../src/store/executor.js';
import { OPERATIONS } from '../../src/store/operations.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

// What a Supabase project has before wafleet migrates: its roles, an `auth` schema with uid(),
// and default privileges that hand every new table and function to anon and authenticated.
// PGlite keeps roles per database, so this touches nothing outside the test.
const SUPABASE_LOOKALIKE = `
  create role anon nologin;
  create role authenticated nologin;
  create role service_role nologin bypassrls;
  create schema auth;
  create function auth.uid() returns uuid language sql stable as
    $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
  grant usage on schema auth to anon, authenticated, service_role;
  grant usage on schema public to anon, authenticated, service_role;
  alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
  alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
  alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
`;

describe('migrations on a Supabase-like database', () => {
  let db: PGlite;
  let store: Store;

  beforeAll(async () => {
    db = await PGlite.create('memory://');
    await db.exec(SUPABASE_LOOKALIKE);
    store = await createInProcessPgliteStore(log, { db });
    await store.migrate();
  });

  afterAll(async () => {
    await store?.close();
    await db?.close();
  });

  async function as<T>(role: string, sub: string | null, fn: () => Promise<T>): Promise<T> {
    await db.query(`select set_config('request.jwt.claim.sub', $1, false)`, [sub ?? '']);
    await db.exec(`set role ${role}`);
    try {
      return await fn();
    } finally {
      await db.exec('reset role');
    }
  }

  it('enables row level security on every table', async () => {
    const { rows } = await db.query<{ relname: string; relrowsecurity: boolean }>(
      `select relname, relrowsecurity from pg_class
       where relname in ('backend_servers', 'devices', 'device_sessions', 'server_logs', 'device_connection_logs', 'device_lease_events',
                         'outbound_messages', 'token_epochs', 'inbound_events', 'event_cursors')
       order by relname`,
    );
    expect(rows).toHaveLength(10);
    expect(rows.every((r) => r.relrowsecurity)).toBe(true);
  });

  it('lets only the service role call the operations', async () => {
    for (const role of ['anon', 'authenticated']) {
      await expect(as(role, null, () => db.query('select * from wafleet_list_servers()'))).rejects.toMatchObject({ code: '42501' });
      await expect(as(role, null, () => db.query('select get_best_available_server()'))).rejects.toMatchObject({ code: '42501' });
      await expect(as(role, null, () => db.query('select * from wafleet_list_event_cursors(null, 10)'))).rejects.toMatchObject({ code: '42501' });
      await expect(as(role, null, () => db.query('select wafleet_prune_events(now(), 10)'))).rejects.toMatchObject({ code: '42501' });
    }
    const rows = await as('service_role', null, async () => {
      await db.query(`select * from wafleet_register_server('srv-rls', 'n', 'http://n', 'vps', 'eu', 10, 0, null, '{}')`);
      return (await db.query<{ id: string }>('select * from wafleet_list_servers()')).rows;
    });
    expect(rows.map((r) => r.id)).toContain('srv-rls');
  });

  it('lets only the service role take a token epoch', async () => {
    for (const role of ['anon', 'authenticated']) {
      await expect(as(role, null, () => db.query(`select wafleet_next_token_epoch('run', 'srv-rls')`))).rejects.toMatchObject({ code: '42501' });
      await expect(as(role, null, () => db.query(`select nextval('token_epoch_seq')`))).rejects.toMatchObject({ code: '42501' });
    }
    const epoch = await as('service_role', null, async () => (await db.query<{ e: string }>(`select wafleet_next_token_epoch('run', 'srv-rls')::text as e`)).rows[0]!.e);
    expect(Number(epoch)).toBeGreaterThanOrEqual(1);
  });

  it('shows signed-in users their own devices and never session data', async () => {
    const alice = randomUUID();
    const bob = randomUUID();
    for (const [user, name] of [
      [alice, 'alice-phone'],
      [bob, 'bob-phone'],
    ] as const) {
      const device = await store.createDevice({ userId: user, deviceName: name, connectionMethod: 'qr' });
      await db.query(`insert into device_sessions (device_id, creds) values ($1, '{"secret": true}')`, [device.id]);
    }

    const seen = await as('authenticated', alice, async () => ({
      devices: (await db.query<{ device_name: string }>('select device_name from devices')).rows.map((r) => r.device_name),
      sessions: (await db.query('select * from device_sessions')).rows.length,
    }));
    expect(seen).toEqual({ devices: ['alice-phone'], sessions: 0 });

    const anonymous = await as('anon', null, async () => (await db.query('select * from devices')).rows.length);
    expect(anonymous).toBe(0);
  });
});

describe('migrations on plain PostgreSQL (no auth schema)', () => {
  it('leaves row level security off', async () => {
    const db = await PGlite.create('memory://');
    const store = await createInProcessPgliteStore(log, { db });
    try {
      await store.migrate();
      const { rows } = await db.query<{ on: boolean }>(`select bool_or(relrowsecurity) as on from pg_class where relname like 'device%'`);
      expect(rows[0]?.on).toBe(false);
    } finally {
      await store.close();
      await db.close();
    }
  });
});

describe('migration 008 (token epochs) on a store that already holds leases', () => {
  it('learns who recorded each existing lease_epoch, so the new fence holds for rows written before it', async () => {
    const db = await PGlite.create('memory://');
    const executor = createPgliteExecutor(db, { closeDb: false });
    const store = await createInProcessPgliteStore(log, { db });
    try {
      const migrations = await loadMigrations();
      await migrate(executor, log, { migrations: migrations.filter((m) => m.version < 8) });
      await db.query(`select * from wafleet_register_server('srv-old', 'n', 'http://n', 'vps', 'eu', 10, 0, null, '{}')`);
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'upgraded', connectionMethod: 'qr' });
      await db.query(`select wafleet_record_assignment($1, 'srv-old', 41)`, [device.id]);

      expect((await store.migrate()).applied).toEqual(migrations.filter((m) => m.version >= 8).map((m) => m.name));
      const { rows } = await db.query<{ lease_epoch_server_id: string | null }>('select lease_epoch_server_id from devices where id = $1', [device.id]);
      expect(rows).toEqual([{ lease_epoch_server_id: 'srv-old' }]);
      await db.query(`select * from wafleet_register_server('srv-new', 'n', 'http://n', 'vps', 'eu', 10, 0, null, '{}')`);
      expect(await store.recordAssignment(device.id, 'srv-new', 41)).toBe(false);
      expect(await store.recordAssignment(device.id, 'srv-old', 41)).toBe(true);
      expect(await store.nextTokenEpoch(null, 'srv-new')).toBe(1);
    } finally {
      await store.close();
      await db.close();
    }
  });

  it('refuses to hand out an epoch whose tokens would pass 2^53', async () => {
    const db = await PGlite.create('memory://');
    const store = await createInProcessPgliteStore(log, { db });
    try {
      await store.migrate();
      const last = 2 ** 21 - 1;
      // The highest token of the last epoch is still a safe integer; the next epoch's first is not.
      expect(Number.isSafeInteger(last * 2 ** 32 + (2 ** 32 - 1))).toBe(true);
      expect(Number.isSafeInteger((last + 1) * 2 ** 32 + 1)).toBe(false);
      await db.query('select setval($1, $2, false)', ['token_epoch_seq', last]);
      expect(await store.nextTokenEpoch('run', 'srv-x')).toBe(last);
      await expect(store.nextTokenEpoch('run', 'srv-x')).rejects.toThrow(/maximum value/);
    } finally {
      await store.close();
      await db.close();
    }
  });
});

describe('operation catalogue', () => {
  it('matches the SQL functions the migrations define, parameter names included', async () => {
    const db = await PGlite.create('memory://');
    const store = await createInProcessPgliteStore(log, { db });
    try {
      await store.migrate();
      const { rows } = await db.query<{ proname: string; args: string[] | null; modes: string[] | null; defaults: number }>(
        `select p.proname, p.proargnames as args, p.proargmodes as modes, p.pronargdefaults as defaults
         from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and (p.proname like 'wafleet\\_%' or p.proname = 'get_best_available_server')
           and p.prorettype <> 'trigger'::regtype`,
      );
      const defined = new Map(rows.map((r) => [r.proname, r]));
      expect(rows).toHaveLength(defined.size); // no overloads: PostgREST could not tell them apart

      for (const spec of Object.values(OPERATIONS)) {
        const fn = defined.get(spec.fn);
        expect(fn, spec.fn).toBeDefined();
        // Only input parameters: `returns table (...)` columns are listed as OUT arguments.
        const args = (fn!.args ?? []).filter((_, i) => !fn!.modes || ['i', 'b', 'v'].includes(fn!.modes[i]!));
        // Parameters the catalogue leaves out must have defaults.
        const required = args.slice(0, args.length - fn!.defaults);
        expect(required.sort(), spec.fn).toEqual(Object.keys(spec.params).sort());
      }
      const catalogued = new Set<string>(Object.values(OPERATIONS).map((spec) => spec.fn));
      // Called by migrations only (Supabase grants), never by the runtime.
      const migrationHelpers = new Set(['wafleet_restrict_to_service_role']);
      expect([...defined.keys()].filter((name) => !catalogued.has(name) && !migrationHelpers.has(name))).toEqual([]);
    } finally {
      await store.close();
      await db.close();
    }
  });
});
