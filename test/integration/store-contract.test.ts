import { randomBytes, randomUUID } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONNECTION_LOG_EVENT_TYPES,
  createInProcessPgliteStore,
  createStore,
  loadMigrations,
  startStoreHost,
  StoreQueryError,
  type MigrationReport,
  type ServerRegistration,
  type Store,
} from '../../src/store/index.js';
import type { StoreRecord } from '../../src/store/types.js';
import { createTestDatabase } from '../../harness/postgres.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/** Device ids the cases wrote events for, so a shared (Supabase) database can be cleaned. */
const deviceIds: string[] = [];

function newDeviceId(): string {
  const id = randomUUID();
  deviceIds.push(id);
  return id;
}

type Probe = (sql: string, params?: unknown[]) => Promise<Record<string, unknown>[]>;

interface Opened {
  store: Store;
  /** Raw SQL on the same database, for fixtures the Store API does not offer and for checks. */
  probe: Probe;
  /** No migration has run yet: the first migrate() must apply everything. */
  fresh: boolean;
  cleanup(): Promise<void>;
}

interface Pair {
  stores: [Store, Store];
  probe: Probe;
  fresh: boolean;
  cleanup(): Promise<void>;
}

interface Target {
  name: string;
  /** Only this suite writes to the database, so cases may deactivate every server. */
  isolated: boolean;
  open(): Promise<Opened>;
  /** Two stores on one database, for concurrent migrations. */
  openPair(): Promise<Pair>;
}

function pgProbe(url: string): { probe: Probe; end(): Promise<void> } {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  return { probe: async (sql, params) => (await pool.query(sql, params)).rows, end: () => pool.end() };
}

const inProcessPglite: Target = {
  name: 'PGlite in process (memory)',
  isolated: true,
  async open() {
    const db = await PGlite.create('memory://');
    const store = await createInProcessPgliteStore(log, { db });
    return {
      store,
      probe: async (sql, params) => (await db.query<Record<string, unknown>>(sql, params)).rows,
      fresh: true,
      cleanup: async () => {
        await store.close();
        await db.close();
      },
    };
  },
  async openPair() {
    const db = await PGlite.create('memory://');
    const stores: [Store, Store] = [await createInProcessPgliteStore(log, { db }), await createInProcessPgliteStore(log, { db })];
    return {
      stores,
      probe: async (sql, params) => (await db.query<Record<string, unknown>>(sql, params)).rows,
      fresh: true,
      cleanup: async () => {
        await Promise.all(stores.map((s) => s.close()));
        await db.close();
      },
    };
  },
};

async function openOverHost(count: number) {
  const host = await startStoreHost({ dataDir: 'memory://', host: '127.0.0.1', port: 0, log });
  const stores: Store[] = [];
  for (let i = 0; i < count; i++) {
    stores.push(await createStore({ kind: 'pglite', dataDir: 'memory://', host: '127.0.0.1', port: host.port, poolMax: 4, hostMode: 'auto' }, { log }));
  }
  const probe = pgProbe(host.url);
  return {
    stores,
    probe: probe.probe,
    // The host migrates before it listens.
    fresh: false,
    cleanup: async () => {
      await Promise.all(stores.map((s) => s.close()));
      await probe.end();
      await host.stop();
    },
  };
}

const pgliteOverHost: Target = {
  name: 'PGlite through the embedded store host',
  isolated: true,
  async open() {
    const { stores, ...rest } = await openOverHost(1);
    return { store: stores[0]!, ...rest };
  },
  async openPair() {
    const { stores, ...rest } = await openOverHost(2);
    return { stores: [stores[0]!, stores[1]!], ...rest };
  },
};

async function openTestDatabase(count: number) {
  const database = await createTestDatabase();
  const stores: Store[] = [];
  for (let i = 0; i < count; i++) {
    stores.push(await createStore({ kind: 'postgres', databaseUrl: database.url, poolMax: 4 }, { log }));
  }
  const probe = pgProbe(database.url);
  return {
    stores,
    probe: probe.probe,
    fresh: database.kind === 'postgres',
    cleanup: async () => {
      await Promise.all(stores.map((s) => s.close()));
      await probe.end();
      await database.drop();
    },
  };
}

const testDatabase: Target = {
  // PostgreSQL when one answers (see harness/postgres.ts), else PGlite over the wire.
  name: 'postgres adapter on createTestDatabase()',
  isolated: true,
  async open() {
    const { stores, ...rest } = await openTestDatabase(1);
    return { store: stores[0]!, ...rest };
  },
  async openPair() {
    const { stores, ...rest } = await openTestDatabase(2);
    return { stores: [stores[0]!, stores[1]!], ...rest };
  },
};

function supabaseTarget(): Target {
  const url = process.env.SUPABASE_URL!;
  const serviceRoleKey = process.env.SUPABASE_SERVICE_ROLE_KEY;
  const databaseUrl = process.env.SUPABASE_DB_URL;
  if (!serviceRoleKey || !databaseUrl) {
    throw new Error('SUPABASE_URL is set: also set SUPABASE_SERVICE_ROLE_KEY and SUPABASE_DB_URL (direct connection)');
  }
  const open = async () => {
    const store = await createStore({ kind: 'supabase', url, serviceRoleKey, databaseUrl }, { log });
    const probe = pgProbe(databaseUrl);
    return { store, probe: probe.probe, end: () => probe.end() };
  };
  return {
    name: 'Supabase',
    // A real project: other rows exist, so cases clean up after themselves by id instead.
    isolated: false,
    async open() {
      const { store, probe, end } = await open();
      return {
        store,
        probe,
        fresh: false,
        cleanup: async () => {
          await probe(`delete from backend_servers where id like 'ct-%'`);
          await probe(`delete from server_logs where server_id like 'ct-%'`);
          await probe(`delete from token_epochs where server_id like 'ct-%'`);
          await probe('delete from device_lease_events where device_id = any($1::uuid[])', [deviceIds]);
          await probe('delete from device_connection_logs where device_id = any($1::uuid[])', [deviceIds]);
          await probe(`delete from devices where device_name like 'ct-%'`);
          await store.close();
          await end();
        },
      };
    },
    async openPair() {
      const a = await open();
      const b = await open();
      return {
        stores: [a.store, b.store],
        probe: a.probe,
        fresh: false,
        cleanup: async () => {
          await Promise.all([a.store.close(), b.store.close()]);
          await Promise.all([a.end(), b.end()]);
        },
      };
    },
  };
}

/** Server ids unique to one case, all under `ct-` so the Supabase cleanup can find them. */
function ids(): (name: string) => string {
  const run = randomBytes(4).toString('hex');
  return (name) => `ct-${run}-${name}`;
}

function registration(id: string, overrides: Partial<ServerRegistration> = {}): ServerRegistration {
  return {
    id,
    serverName: `name ${id}`,
    serverUrl: `http://${id}.internal:3000`,
    serverType: 'vps',
    region: 'eu-west',
    maxCapacity: 10,
    priority: 0,
    ...overrides,
  };
}

function expectQueryError(promise: Promise<unknown>, sqlState: string) {
  return expect(promise).rejects.toSatisfy(
    (err) => err instanceof StoreQueryError && err.sqlState === sqlState,
    `StoreQueryError with SQLSTATE ${sqlState}`,
  );
}

function storeContract(target: Target) {
  describe(target.name, () => {
    let opened: Opened;
    let store: Store;
    let probe: Probe;
    let first: MigrationReport;
    let allMigrations: string[];

    beforeAll(async () => {
      allMigrations = (await loadMigrations()).map((m) => m.name);
      opened = await target.open();
      ({ store, probe } = opened);
      first = await store.migrate();
    });

    afterAll(async () => {
      await opened?.cleanup();
    });

    it('applies migrations, and a second run applies nothing', async () => {
      if (opened.fresh) expect(first).toEqual({ applied: allMigrations, alreadyApplied: [] });
      else expect([...first.applied, ...first.alreadyApplied].sort()).toEqual(allMigrations);

      const second = await store.migrate();
      expect(second).toEqual({ applied: [], alreadyApplied: allMigrations });
      await store.ping();
    });

    it('two concurrent migrate() calls both succeed and record each migration once', async () => {
      const pair = await target.openPair();
      try {
        const reports = await Promise.all(pair.stores.map((s) => s.migrate()));
        for (const name of allMigrations) {
          const appliedBy = reports.filter((r) => r.applied.includes(name)).length;
          expect(appliedBy).toBe(pair.fresh ? 1 : 0);
        }
        const rows = await pair.probe('select version, count(*)::int as n from wafleet_migrations group by version');
        expect(rows).toHaveLength(allMigrations.length);
        expect(rows.every((r) => r.n === 1)).toBe(true);
      } finally {
        await pair.cleanup();
      }
    });

    it('registers a server, upserts it on re-registration, and reads it back', async () => {
      const id = ids()('reg');
      const created = await store.registerServer(registration(id, { metadata: { zone: 'a', tags: ['x'] }, description: 'first' }));
      expect(created).toMatchObject({
        id,
        serverName: `name ${id}`,
        serverType: 'vps',
        region: 'eu-west',
        maxCapacity: 10,
        currentLoad: 0,
        isActive: true,
        isHealthy: true,
        draining: false,
        priority: 0,
        healthCheckFailures: 0,
        responseTime: null,
        metadata: { zone: 'a', tags: ['x'] },
      });
      expect(created.createdAt).toBeInstanceOf(Date);
      expect(created.lastHealthCheck).toBeInstanceOf(Date);

      await store.recordServerHealth(id, 7, 42.4);
      await store.markServerInactive(id);
      expect(await store.getServer(id)).toMatchObject({ isActive: false, currentLoad: 0, responseTime: 42 });

      const again = await store.registerServer(registration(id, { serverType: 'cloud', maxCapacity: 50, priority: 3 }));
      expect(again).toMatchObject({ serverType: 'cloud', maxCapacity: 50, priority: 3, isActive: true, metadata: {} });
      expect(again.createdAt.getTime()).toBe(created.createdAt.getTime());
      expect(again.updatedAt.getTime()).toBeGreaterThanOrEqual(created.updatedAt.getTime());

      expect(await store.getServer(id)).toEqual(again);
      expect((await store.listServers()).filter((s) => s.id === id)).toEqual([again]);
      expect(await store.getServer(`${id}-missing`)).toBeNull();
    });

    it('records health: load, response time (kept when not measured) and freshness', async () => {
      const id = ids()('health');
      const registered = await store.registerServer(registration(id));
      await store.recordServerHealth(id, 4, 120);
      await store.recordServerHealth(id, 5, null);
      const server = await store.getServer(id);
      expect(server).toMatchObject({ currentLoad: 5, responseTime: 120, isActive: true, isHealthy: true });
      expect(server!.lastHealthCheck!.getTime()).toBeGreaterThanOrEqual(registered.lastHealthCheck!.getTime());
    });

    it('refuses server ids that break the identity rules (CHECK)', async () => {
      for (const bad of ['admin', 'ADMIN', 'null', '../etc', 'a..b', 'ab', 'x'.repeat(129), 'has space']) {
        await expectQueryError(store.registerServer(registration(bad)), '23514');
      }
      const fine = ids()('ok.name_1');
      await expect(store.registerServer(registration(fine))).resolves.toMatchObject({ id: fine });
    });

    if (target.isolated) {
      it('picks the best server: priority, then load ratio, then response time; skips unusable ones', async () => {
        const id = ids();
        // Only this case's servers take part.
        await probe('update backend_servers set is_active = false');
        const register = async (name: string, priority: number, maxCapacity: number, load: number, responseTimeMs: number | null) => {
          await store.registerServer(registration(id(name), { priority, maxCapacity }));
          await store.recordServerHealth(id(name), load, responseTimeMs);
        };
        // Better on every count, but unusable:
        await register('full', 9, 2, 2, 1);
        await register('inactive', 9, 10, 0, 1);
        await store.markServerInactive(id('inactive'));
        await register('unhealthy', 9, 10, 0, 1);
        await probe('update backend_servers set is_healthy = false where id = $1', [id('unhealthy')]);
        await register('draining', 9, 10, 0, 1);
        await probe('update backend_servers set draining = true where id = $1', [id('draining')]);
        await register('stale', 9, 10, 0, 1);
        await probe(`update backend_servers set last_health_check = now() - interval '5 minutes' where id = $1`, [id('stale')]);
        // Usable:
        await register('half', 5, 10, 5, 1);
        await register('fifth-slow', 5, 10, 2, 100);
        await register('fifth-fast', 5, 5, 1, 50);
        await register('fifth-unmeasured', 5, 10, 2, null);
        await register('low-priority', 1, 10, 0, 1);

        expect(await store.getBestAvailableServer()).toBe(id('fifth-fast'));
        await store.recordServerHealth(id('fifth-fast'), 3, 50);
        // Equal ratio: the measured response time wins over none.
        expect(await store.getBestAvailableServer()).toBe(id('fifth-slow'));
        await store.markServerInactive(id('fifth-slow'));
        expect(await store.getBestAvailableServer()).toBe(id('fifth-unmeasured'));
        await store.markServerInactive(id('fifth-unmeasured'));
        // 5/10 beats 3/5.
        expect(await store.getBestAvailableServer()).toBe(id('half'));
        await store.markServerInactive(id('half'));
        expect(await store.getBestAvailableServer()).toBe(id('fifth-fast'));
        await store.markServerInactive(id('fifth-fast'));
        expect(await store.getBestAvailableServer()).toBe(id('low-priority'));
        await store.markServerInactive(id('low-priority'));
        expect(await store.getBestAvailableServer()).toBeNull();
      });
    }

    it('creates a device and reads it back', async () => {
      const userId = randomUUID();
      const device = await store.createDevice({
        userId,
        deviceName: 'ct-phone',
        connectionMethod: 'pairing',
        phoneForPairing: '+15550100',
        webhookUrl: 'https://example.test/hook',
      });
      expect(device).toMatchObject({
        userId,
        deviceName: 'ct-phone',
        status: 'disconnected',
        desiredState: 'stopped',
        connectionMethod: 'pairing',
        phoneForPairing: '+15550100',
        webhookUrl: 'https://example.test/hook',
        assignedServerId: null,
        leaseEpoch: 0,
        phoneNumber: null,
        errorMessage: null,
        lastConnectedAt: null,
      });
      expect(device.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(await store.getDevice(device.id)).toEqual(device);
      expect(await store.getDevice(randomUUID())).toBeNull();
      expect(await store.getDevice('not-a-uuid')).toBeNull();
      // A pairing code needs a phone number.
      await expectQueryError(store.createDevice({ userId, deviceName: 'ct-nophone', connectionMethod: 'pairing' }), '23514');
    });

    it('fences record_assignment on lease_epoch', async () => {
      const id = ids();
      await store.registerServer(registration(id('one')));
      await store.registerServer(registration(id('two')));
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-fenced', connectionMethod: 'qr' });

      expect(await store.recordAssignment(device.id, id('one'), 5)).toBe(true);
      expect(await store.recordAssignment(device.id, id('two'), 4)).toBe(false);
      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: id('one'), leaseEpoch: 5 });
      // Equal from the server that recorded it is accepted, so a retried write is idempotent;
      // equal from another server is refused (one token, granted twice across a Redis data loss).
      expect(await store.recordAssignment(device.id, id('one'), 5)).toBe(true);
      expect(await store.recordAssignment(device.id, id('two'), 5)).toBe(false);
      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: id('one'), leaseEpoch: 5 });
      expect(await store.recordAssignment(device.id, id('two'), 6)).toBe(true);
      expect(await store.recordAssignment(device.id, null, 7)).toBe(true);
      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: null, leaseEpoch: 7 });
      expect(await store.recordAssignment(randomUUID(), id('one'), 99)).toBe(false);

      // Racing writers: whatever the arrival order, the highest token is what remains.
      const epochs = Array.from({ length: 24 }, (_, i) => 8 + i).sort(() => Math.random() - 0.5);
      await Promise.all(epochs.map((epoch) => store.recordAssignment(device.id, id(epoch % 2 ? 'one' : 'two'), epoch)));
      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: id('one'), leaseEpoch: 31 });
    });

    it('fences device status writes on lease_epoch, and stamps the last connection', async () => {
      const id = ids();
      await store.registerServer(registration(id('status')));
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-status', connectionMethod: 'qr' });
      expect(await store.recordAssignment(device.id, id('status'), 5)).toBe(true);

      expect(await store.updateDeviceStatus(device.id, 'connected', 4)).toBe(false);
      expect(await store.getDevice(device.id)).toMatchObject({ status: 'disconnected', lastConnectedAt: null });
      expect(await store.updateDeviceStatus(device.id, 'connected', 5)).toBe(true);
      const connected = await store.getDevice(device.id);
      expect(connected).toMatchObject({ status: 'connected', errorMessage: null });
      expect(connected!.lastConnectedAt).toBeInstanceOf(Date);
      expect(await store.updateDeviceStatus(device.id, 'error', 6, 'stream errored')).toBe(true);
      expect(await store.getDevice(device.id)).toMatchObject({
        status: 'error',
        errorMessage: 'stream errored',
        lastConnectedAt: connected!.lastConnectedAt,
      });
      await expectQueryError(store.updateDeviceStatus(device.id, 'sleeping' as never, 9), '23514');
    });

    it('keeps the wanted state and pages through wanted devices and lease epochs by id', async () => {
      const userId = randomUUID();
      const made = await Promise.all(
        [0, 1, 2].map((i) => store.createDevice({ userId, deviceName: `ct-wanted-${i}`, connectionMethod: 'qr' })),
      );
      const [a, b, c] = made.map((d) => d.id).sort();
      expect(await store.setDesiredState(a!, 'running')).toMatchObject({ id: a, desiredState: 'running' });
      await store.setDesiredState(c!, 'running');
      expect(await store.setDesiredState(randomUUID(), 'running')).toBeNull();

      const wanted = new Set(await store.listWantedDevices(null, 10_000));
      expect(wanted.has(a!) && wanted.has(c!)).toBe(true);
      expect(wanted.has(b!)).toBe(false);
      const firstPage = await store.listWantedDevices(null, 1);
      expect(firstPage).toHaveLength(1);
      const next = await store.listWantedDevices(firstPage[0]!, 10_000);
      expect(next).not.toContain(firstPage[0]);
      expect([...firstPage, ...next].sort()).toEqual([...wanted].sort());

      await store.setDesiredState(a!, 'stopped');
      expect(await store.listWantedDevices(null, 10_000)).not.toContain(a);

      expect(await store.recordAssignment(b!, null, 42)).toBe(true);
      const epochs = await store.listLeaseEpochs(null, 10_000);
      expect(epochs).toContainEqual({ deviceId: b, leaseEpoch: 42 });
      expect(epochs.map((e) => e.deviceId)).not.toContain(c);
      expect(epochs.every((e) => e.leaseEpoch > 0)).toBe(true);
    });

    it('hands out token epochs that only go up, one per call, never the same twice, also to two stores at once', async () => {
      const id = ids();
      const mine: number[] = [];
      for (let i = 0; i < 5; i++) mine.push(await store.nextTokenEpoch(i === 0 ? null : `run-${i}`, id('epochs')));
      expect(mine[0]).toBeGreaterThanOrEqual(1);
      for (let i = 1; i < mine.length; i++) expect(mine[i]).toBeGreaterThan(mine[i - 1]!);
      expect(mine.every(Number.isSafeInteger)).toBe(true);
      // Each epoch is audited with who asked and for which Redis run.
      const audit = await probe('select epoch::int, redis_run_id, server_id from token_epochs where server_id = $1 order by epoch', [id('epochs')]);
      expect(audit).toEqual(mine.map((epoch, i) => ({ epoch, redis_run_id: i === 0 ? null : `run-${i}`, server_id: id('epochs') })));

      // Several servers noticing the same Redis reset at once: each gets its own, higher epoch.
      const pair = await target.openPair();
      try {
        await Promise.all(pair.stores.map((s) => s.migrate()));
        const perStore = await Promise.all(
          pair.stores.map(async (s, n) => {
            const taken: number[] = [];
            await Promise.all(
              Array.from({ length: 12 }, async () => {
                taken.push(await s.nextTokenEpoch('run-same', id(`racer-${n}`)));
              }),
            );
            return taken;
          }),
        );
        const all = perStore.flat();
        expect(new Set(all).size).toBe(all.length);
        // A database of its own: the epochs are exactly 1..24, none lost, none twice.
        if (target.isolated) expect([...all].sort((a, b) => a - b)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
        // And later calls only go higher.
        const after = await pair.stores[0].nextTokenEpoch('run-next', id('racer-0'));
        expect(after).toBeGreaterThan(Math.max(...all));
      } finally {
        await pair.cleanup();
      }
    });

    it('saves session snapshots fenced by epoch, and clears them with a tombstone a stale save cannot revive', async () => {
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-session', connectionMethod: 'qr' });
      expect(await store.getSession(device.id)).toBeNull();
      const creds = { me: { id: '123@s.whatsapp.net' }, noiseKey: { private: { type: 'Buffer', data: 'AAEC' } } };
      const keys = { 'pre-key': { '1': { public: { type: 'Buffer', data: 'AQID' } } }, session: { 'a.0': { type: 'Buffer', data: 'BA==' } } };

      expect(await store.saveSession(device.id, creds, keys, 3)).toBe(true);
      expect(await store.getSession(device.id)).toMatchObject({ deviceId: device.id, creds, keys, epoch: 3, cleared: false });
      expect(await store.saveSession(device.id, { stale: true }, {}, 2)).toBe(false);
      expect((await store.getSession(device.id))!.creds).toEqual(creds);
      expect(await store.saveSession(device.id, { ...creds, registered: true }, keys, 3)).toBe(true);

      expect(await store.clearSession(device.id, 2)).toBe(false);
      expect(await store.clearSession(device.id, 4)).toBe(true);
      expect(await store.getSession(device.id)).toMatchObject({ creds: {}, keys: {}, epoch: 4, cleared: true });
      expect(await store.saveSession(device.id, creds, keys, 3)).toBe(false);
      expect(await store.saveSession(device.id, creds, keys, 5)).toBe(true);
      expect(await store.getSession(device.id)).toMatchObject({ epoch: 5, cleared: false });

      expect(await store.saveSession(randomUUID(), creds, keys, 1)).toBe(false);
      expect(await store.getSession('not-a-uuid')).toBeNull();
    });

    it('keeps API keys as hashes: create, find live ones only, revoke once', async () => {
      const userId = randomUUID();
      const hash = randomBytes(32).toString('hex');
      const key = await store.createApiKey(userId, 'ci', hash);
      expect(key).toMatchObject({ userId, name: 'ci' });
      expect(await store.findApiKey(hash)).toEqual(key);
      expect(await store.findApiKey(randomBytes(32).toString('hex'))).toBeNull();
      await expectQueryError(store.createApiKey(userId, null, hash), '23505');
      await expectQueryError(store.createApiKey(userId, null, 'not-a-hash'), '23514');
      expect(await store.revokeApiKey(key.id)).toBe(true);
      expect(await store.revokeApiKey(key.id)).toBe(false);
      expect(await store.findApiKey(hash)).toBeNull();
      expect(await store.revokeApiKey('nope')).toBe(false);
    });

    it('lists one user\'s devices and deletes devices', async () => {
      const userId = randomUUID();
      const first = await store.createDevice({ userId, deviceName: 'ct-list-1', connectionMethod: 'qr' });
      const second = await store.createDevice({ userId, deviceName: 'ct-list-2', connectionMethod: 'qr' });
      await store.createDevice({ userId: randomUUID(), deviceName: 'ct-list-other', connectionMethod: 'qr' });
      expect((await store.listDevices(userId, 100)).map((d) => d.id).sort()).toEqual([first.id, second.id].sort());
      expect(await store.listDevices(userId, 1)).toHaveLength(1);
      expect((await store.listDevices(null, 10_000)).length).toBeGreaterThanOrEqual(3);
      expect(await store.deleteDevice(first.id)).toBe(true);
      expect(await store.deleteDevice(first.id)).toBe(false);
      expect(await store.getDevice(first.id)).toBeNull();
      expect(await store.deleteDevice('nope')).toBe(false);
    });

    it("keeps a device's webhook: put replaces it and clears the older webhook_url, delete removes both, the device's deletion cascades", async () => {
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-webhook', connectionMethod: 'qr', webhookUrl: 'https://old.example/hook' });
      deviceIds.push(device.id);
      expect(await store.getWebhook(device.id)).toBeNull();
      const put = await store.putWebhook({ deviceId: device.id, url: 'https://a.example/hook', events: ['message.received', 'message.ack'], secretCiphertext: 'v1.x.y.z' });
      expect(put).toEqual({ deviceId: device.id, url: 'https://a.example/hook', events: ['message.received', 'message.ack'], secretCiphertext: 'v1.x.y.z', updatedAt: expect.any(Date) });
      expect((await store.getDevice(device.id))?.webhookUrl).toBeNull();
      const again = await store.putWebhook({ deviceId: device.id, url: 'https://b.example/hook', events: null, secretCiphertext: 'v1.p.q.r' });
      expect(again).toMatchObject({ url: 'https://b.example/hook', events: null, secretCiphertext: 'v1.p.q.r' });
      expect(again!.updatedAt.getTime()).toBeGreaterThanOrEqual(put!.updatedAt.getTime());
      expect(await store.getWebhook(device.id)).toEqual(again);
      expect(await store.putWebhook({ deviceId: randomUUID(), url: 'https://c.example/', events: null, secretCiphertext: 'v1.a.b.c' })).toBeNull();
      expect(await store.deleteWebhook(device.id)).toBe(true);
      expect(await store.deleteWebhook(device.id)).toBe(false);
      expect(await store.getWebhook(device.id)).toBeNull();
      // The older webhook_url alone counts as a webhook to delete.
      const legacy = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-webhook-legacy', connectionMethod: 'qr', webhookUrl: 'https://old.example/hook' });
      deviceIds.push(legacy.id);
      expect(await store.deleteWebhook(legacy.id)).toBe(true);
      expect((await store.getDevice(legacy.id))?.webhookUrl).toBeNull();
      await store.putWebhook({ deviceId: legacy.id, url: 'https://a.example/hook', events: null, secretCiphertext: 'v1.x.y.z' });
      expect(await store.deleteDevice(legacy.id)).toBe(true);
      expect(await probe('select count(*)::int as n from device_webhooks where device_id = $1', [legacy.id])).toEqual([{ n: 0 }]);
      expect(await store.getWebhook('not-a-uuid')).toBeNull();
    });

    it('configures servers field by field, records health checks, and deletes them', async () => {
      const id = ids();
      const created = await store.configureServer(id('cfg'), { serverUrl: 'http://cfg:3000', maxCapacity: 50 });
      expect(created).toMatchObject({ id: id('cfg'), serverName: id('cfg'), serverUrl: 'http://cfg:3000', maxCapacity: 50, isActive: false });
      const patched = await store.configureServer(id('cfg'), { priority: 9, region: 'us' });
      expect(patched).toMatchObject({ serverUrl: 'http://cfg:3000', maxCapacity: 50, priority: 9, region: 'us' });
      await expectQueryError(store.configureServer('admin', {}), '23514');

      expect(await store.recordHealthCheck(id('cfg'), false, null)).toMatchObject({ isHealthy: false, healthCheckFailures: 1 });
      expect(await store.recordHealthCheck(id('cfg'), false, null)).toMatchObject({ healthCheckFailures: 2 });
      const healthy = await store.recordHealthCheck(id('cfg'), true, 12.4);
      expect(healthy).toMatchObject({ isHealthy: true, healthCheckFailures: 0, responseTime: 12 });
      expect(healthy!.lastHealthCheck).toBeInstanceOf(Date);
      expect(await store.recordHealthCheck(id('missing'), true, 1)).toBeNull();

      expect(await store.deleteServer(id('cfg'))).toBe(true);
      expect(await store.deleteServer(id('cfg'))).toBe(false);
    });

    it('counts devices by status and lists the latest lease events first', async () => {
      const counts = await store.deviceStatusCounts();
      expect(Object.values(counts).every((n) => typeof n === 'number' && n > 0)).toBe(true);
      const deviceId = newDeviceId();
      await store.appendLeaseEvent({ deviceId, serverId: 'ct-ev', eventType: 'claim', epoch: 1 });
      await store.appendLeaseEvent({ deviceId, serverId: 'ct-ev', eventType: 'drain', epoch: 1, details: { reason: 'SIGTERM' } });
      const [latest, before] = await store.recentLeaseEvents(2);
      expect(latest).toMatchObject({ deviceId, eventType: 'drain', details: { reason: 'SIGTERM' } });
      expect(before).toMatchObject({ deviceId, eventType: 'claim', epoch: 1 });
      expect(latest!.id).toBeGreaterThan(before!.id);
    });

    it('appends server logs, lease events and connection logs', async () => {
      const id = ids();
      const deviceId = newDeviceId();
      await store.appendServerLog({ serverId: id('log'), level: 'warn', event: 'lease_lost', message: 'lost 3 leases', details: { n: 3 } });
      await store.appendLeaseEvent({ deviceId, serverId: id('log'), eventType: 'claim', epoch: 12, details: { reason: 'failover' } });
      await store.appendLeaseEvent({ deviceId, serverId: null, eventType: 'expire', epoch: 12 });
      await store.appendConnectionLog({ deviceId, serverId: id('log'), eventType: 'connected', details: { attempt: 1 } });

      expect(await probe('select level, event, message, details from server_logs where server_id = $1', [id('log')])).toEqual([
        { level: 'warn', event: 'lease_lost', message: 'lost 3 leases', details: { n: 3 } },
      ]);
      const events = await probe('select server_id, event_type, epoch::int as epoch, details from device_lease_events where device_id = $1 order by id', [deviceId]);
      expect(events).toEqual([
        { server_id: id('log'), event_type: 'claim', epoch: 12, details: { reason: 'failover' } },
        { server_id: null, event_type: 'expire', epoch: 12, details: {} },
      ]);
      expect(await probe('select event_type, details from device_connection_logs where device_id = $1', [deviceId])).toEqual([
        { event_type: 'connected', details: { attempt: 1 } },
      ]);
      await expectQueryError(
        store.appendLeaseEvent({ deviceId, serverId: null, eventType: 'stolen' as never, epoch: 1 }),
        '23514',
      );
      await expectQueryError(store.appendServerLog({ serverId: id('log'), level: 'fatal' as never, event: 'x', message: '' }), '23514');
    });

    it('applies write-behind batches in order, once, fenced, and reports what it refused', async () => {
      const id = ids();
      await store.registerServer(registration(id('wb')));
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-wb', connectionMethod: 'qr' });
      const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
      const claimId = randomUUID();
      const batch: StoreRecord[] = [
        { kind: 'assignment', at: at(1), deviceId: device.id, serverId: id('wb'), epoch: 3 },
        { kind: 'lease_event', id: claimId, at: at(1), deviceId: device.id, serverId: id('wb'), eventType: 'claim', epoch: 3, details: { via: 'sweep' } },
        { kind: 'status', at: at(2), deviceId: device.id, serverId: id('wb'), status: 'connecting', epoch: 3, errorMessage: null },
        { kind: 'connection_event', id: randomUUID(), at: at(2), deviceId: device.id, serverId: id('wb'), eventType: 'connecting' },
        { kind: 'status', at: at(3), deviceId: device.id, serverId: id('wb'), status: 'connected', epoch: 3, errorMessage: null },
        { kind: 'server_log', id: randomUUID(), at: at(4), serverId: id('wb'), level: 'info', event: 'wb_test', message: 'hello' },
        // An old owner's late write: fenced, changes nothing.
        { kind: 'status', at: at(5), deviceId: device.id, serverId: id('wb'), status: 'error', epoch: 2, errorMessage: 'stale' },
        // Refused by the database (a check constraint), reported, and the batch goes on.
        { kind: 'connection_event', id: randomUUID(), at: at(6), deviceId: device.id, serverId: id('wb'), eventType: 'exploded' },
        { kind: 'lease_event', id: randomUUID(), at: at(7), deviceId: device.id, serverId: id('wb'), eventType: 'release', epoch: 3 },
      ];
      const first = await store.applyRecords(batch);
      expect(first).toMatchObject({ applied: 7, duplicate: 0, fenced: 1, rejected: 1 });
      expect(first.errors).toHaveLength(1);
      expect(first.errors[0]).toMatchObject({ index: 7 });
      // Each state write is audited with the token it carried and whether the fence let it count.
      const audit = () =>
        probe('select kind, server_id, epoch::int, status, applied, happened_at from device_state_writes where device_id = $1 order by id', [device.id]);
      expect(await audit()).toEqual([
        { kind: 'assignment', server_id: id('wb'), epoch: 3, status: null, applied: true, happened_at: new Date(at(1)) },
        { kind: 'status', server_id: id('wb'), epoch: 3, status: 'connecting', applied: true, happened_at: new Date(at(2)) },
        { kind: 'status', server_id: id('wb'), epoch: 3, status: 'connected', applied: true, happened_at: new Date(at(3)) },
        { kind: 'status', server_id: id('wb'), epoch: 2, status: 'error', applied: false, happened_at: new Date(at(5)) },
      ]);

      // The same batch again (a worker died before BullMQ heard it was done): nothing twice.
      const again = await store.applyRecords(batch);
      expect(again).toMatchObject({ applied: 3, duplicate: 4, fenced: 1, rejected: 1 });
      // A replayed state write is audited again: it was sent again (and counted again, harmlessly).
      expect((await audit()).map((w) => w.applied)).toEqual([true, true, true, false, true, true, true, false]);

      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: id('wb'), leaseEpoch: 3, status: 'connected', errorMessage: null });
      const events = await probe(
        `select record_id::text, event_type, created_at from device_lease_events where device_id = $1 order by id`,
        [device.id],
      );
      expect(events.map((e) => e.event_type)).toEqual(['claim', 'release']);
      expect(events[0]).toMatchObject({ record_id: claimId });
      // Each record keeps the time it happened, however late it arrives.
      expect((events[0]!.created_at as Date).toISOString()).toBe(at(1));
      expect(await probe('select event_type from device_connection_logs where device_id = $1', [device.id])).toEqual([{ event_type: 'connecting' }]);
      expect(await probe('select event, message from server_logs where server_id = $1', [id('wb')])).toEqual([{ event: 'wb_test', message: 'hello' }]);
      expect(await store.applyRecords([])).toMatchObject({ applied: 0, rejected: 0 });
    });

    it('refuses an equal token from another server: the same token granted twice after Redis lost its data', async () => {
      const id = ids();
      const [s, t] = [id('s'), id('t')];
      await store.registerServer(registration(s));
      await store.registerServer(registration(t));
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-equal-token', connectionMethod: 'qr' });
      const at = (n: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString();
      const assignment = (serverId: string, epoch: number, n: number): StoreRecord => ({ kind: 'assignment', at: at(n), deviceId: device.id, serverId, epoch });
      const status = (serverId: string, epoch: number, n: number, value: 'connecting' | 'connected' | 'error'): StoreRecord => ({
        kind: 'status', at: at(n), deviceId: device.id, serverId, status: value, epoch, errorMessage: value === 'error' ? `from ${serverId}` : null,
      });
      const recorder = async () => (await probe('select lease_epoch_server_id from devices where id = $1', [device.id]))[0]!.lease_epoch_server_id;

      // S claims with 41.
      expect(await store.applyRecords([assignment(s, 41, 1), status(s, 41, 2, 'connected')])).toMatchObject({ applied: 2, fenced: 0 });
      expect(await recorder()).toBe(s);
      // Redis lost its data, the fence was re-seeded to 40 and T was granted 41 too: refused.
      expect(await store.applyRecords([assignment(t, 41, 3), status(t, 41, 4, 'error')])).toMatchObject({ applied: 0, fenced: 2, rejected: 0 });
      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: s, leaseEpoch: 41, status: 'connected', errorMessage: null });
      // S's own records with 41 again (a replayed batch, a later status) still count.
      expect(await store.applyRecords([assignment(s, 41, 1), status(s, 41, 5, 'connecting')])).toMatchObject({ applied: 2, fenced: 0 });
      // A newer token counts from anyone, and then S's equal-to-old or older writes do not.
      expect(await store.applyRecords([assignment(t, 42, 6), status(t, 42, 7, 'connected')])).toMatchObject({ applied: 2, fenced: 0 });
      expect(await recorder()).toBe(t);
      expect(await store.applyRecords([status(s, 42, 8, 'error'), status(s, 41, 9, 'error'), assignment(s, 42, 10)])).toMatchObject({ applied: 0, fenced: 3 });
      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: t, leaseEpoch: 42, status: 'connected', errorMessage: null });

      const writes = await probe('select kind, server_id, epoch::int, status, applied from device_state_writes where device_id = $1 order by id', [device.id]);
      expect(writes).toEqual([
        { kind: 'assignment', server_id: s, epoch: 41, status: null, applied: true },
        { kind: 'status', server_id: s, epoch: 41, status: 'connected', applied: true },
        { kind: 'assignment', server_id: t, epoch: 41, status: null, applied: false },
        { kind: 'status', server_id: t, epoch: 41, status: 'error', applied: false },
        { kind: 'assignment', server_id: s, epoch: 41, status: null, applied: true },
        { kind: 'status', server_id: s, epoch: 41, status: 'connecting', applied: true },
        { kind: 'assignment', server_id: t, epoch: 42, status: null, applied: true },
        { kind: 'status', server_id: t, epoch: 42, status: 'connected', applied: true },
        { kind: 'status', server_id: s, epoch: 42, status: 'error', applied: false },
        { kind: 'status', server_id: s, epoch: 41, status: 'error', applied: false },
        { kind: 'assignment', server_id: s, epoch: 42, status: null, applied: false },
      ]);

      // An epoch nobody is known to have recorded (an assignment to nobody) takes an equal token
      // from anyone, as before.
      expect(await store.recordAssignment(device.id, null, 50)).toBe(true);
      expect(await recorder()).toBeNull();
      expect(await store.applyRecords([status(s, 50, 11, 'connecting')])).toMatchObject({ applied: 1, fenced: 0 });
    });

    it('accepts a message once per idempotency key, also concurrently, and frees a key after its window', async () => {
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-msg', connectionMethod: 'qr' });
      const message = (key: string | null, text: string, idempotencyMs = 60_000) =>
        ({ id: randomUUID(), deviceId: device.id, idempotencyKey: key, idempotencyMs, to: '4915112345678', type: 'text', text }) as const;
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.acceptMessage(message('order-17', `try ${i}`))));
      expect(new Set(results.map((r) => r.id)).size).toBe(1);
      expect(results.filter((r) => r.created)).toHaveLength(1);
      const first = results.find((r) => r.created)!;
      expect(results.every((r) => r.status === 'queued' && r.acceptedAt.getTime() === first.acceptedAt.getTime())).toBe(true);
      const stored = await store.getMessage(first.id);
      expect(stored).toMatchObject({ id: first.id, deviceId: device.id, idempotencyKey: 'order-17', to: '4915112345678', type: 'text', status: 'queued', finishedAt: null });
      expect(results.map((r, i) => `try ${i}`)).toContain(stored!.text);
      // Another key, or none (twice), is another message.
      expect((await store.acceptMessage(message('order-18', 'x'))).id).not.toBe(first.id);
      const [a, b] = [await store.acceptMessage(message(null, 'n')), await store.acceptMessage(message(null, 'n'))];
      expect(a.created && b.created && a.id !== b.id).toBe(true);
      // Past its window the key is free again; the old message keeps its row without the key.
      await new Promise((r) => setTimeout(r, 30));
      const later = await store.acceptMessage(message('order-17', 'new order', 10));
      expect(later).toMatchObject({ created: true, status: 'queued' });
      expect(later.id).not.toBe(first.id);
      expect(await store.getMessage(first.id)).toMatchObject({ idempotencyKey: null, status: 'queued' });
      const media = await store.acceptMessage({ ...message(null, ''), type: 'document', text: undefined, mediaUrl: 'https://x.example/a.pdf', caption: 'c', fileName: 'a.pdf' });
      expect(await store.getMessage(media.id)).toMatchObject({ type: 'document', text: null, mediaUrl: 'https://x.example/a.pdf', caption: 'c', fileName: 'a.pdf' });
      expect(await store.getMessage(randomUUID())).toBeNull();
      expect(await store.getMessage('not-a-uuid')).toBeNull();
    });

    it('pages pending messages by device and accept order, and takes each end once through the write-behind', async () => {
      const devices = await Promise.all([1, 2].map((n) => store.createDevice({ userId: randomUUID(), deviceName: `ct-pending-${n}`, connectionMethod: 'qr' })));
      const accepted: Record<string, string[]> = {};
      for (let i = 0; i < 5; i++) {
        for (const d of devices) {
          const { id } = await store.acceptMessage({ id: randomUUID(), deviceId: d.id, idempotencyKey: null, idempotencyMs: 60_000, to: '4915112345678', type: 'text', text: `m${i}` });
          (accepted[d.id] ??= []).push(id);
        }
      }
      const mine = new Set(devices.map((d) => d.id));
      const pending = async (pageSize: number) => {
        const seen: Array<{ id: string; deviceId: string; seq: number }> = [];
        let after: { deviceId: string; seq: number } | null = null;
        for (;;) {
          const page = await store.listPendingMessages(after, pageSize);
          if (page.length === 0) return seen.filter((m) => mine.has(m.deviceId));
          expect(page.length).toBeLessThanOrEqual(pageSize);
          seen.push(...page);
          after = { deviceId: page.at(-1)!.deviceId, seq: page.at(-1)!.seq };
        }
      };
      const byDevice = (list: Array<{ id: string; deviceId: string }>) => Object.fromEntries(devices.map((d) => [d.id, list.filter((m) => m.deviceId === d.id).map((m) => m.id)]));
      const all = await pending(3);
      expect(byDevice(all)).toEqual(accepted);
      // One device's messages together, in accept order.
      const order = all.map((m) => m.deviceId);
      expect(order).toEqual([...order].sort());

      const [d1, d2] = devices.map((d) => d.id) as [string, string];
      const at = new Date(Date.UTC(2026, 0, 1)).toISOString();
      const sent = { kind: 'message', at, deviceId: d1, messageId: accepted[d1]![0]!, status: 'sent', waMessageId: 'WA-1', error: null } as const;
      const failed = { kind: 'message', at, deviceId: d2, messageId: accepted[d2]![1]!, status: 'failed', waMessageId: null, error: 'invalid number' } as const;
      expect(await store.applyRecords([sent, failed])).toMatchObject({ applied: 2, duplicate: 0, rejected: 0 });
      // Again (a replayed batch), a late failure of a sent message, a message nobody accepted: nothing changes.
      const replay = await store.applyRecords([sent, { ...sent, status: 'failed', waMessageId: null, error: 'late' }, { ...sent, messageId: randomUUID() }]);
      expect(replay).toMatchObject({ applied: 0, duplicate: 3, rejected: 0 });
      expect(await store.getMessage(sent.messageId)).toMatchObject({ status: 'sent', waMessageId: 'WA-1', error: null, finishedAt: new Date(at) });
      expect(await store.getMessage(failed.messageId)).toMatchObject({ status: 'failed', error: 'invalid number', waMessageId: null });
      // A failed message that turns out sent (a resend got through) is sent.
      expect(await store.applyRecords([{ ...failed, status: 'sent', waMessageId: 'WA-2', error: null }])).toMatchObject({ applied: 1 });
      expect(await store.getMessage(failed.messageId)).toMatchObject({ status: 'sent', waMessageId: 'WA-2', error: null });
      expect(await store.applyRecords([{ ...sent, status: 'queued' as never }])).toMatchObject({ rejected: 1 });
      const left = byDevice(await pending(4));
      expect(left).toEqual({ [d1]: accepted[d1]!.slice(1), [d2]: accepted[d2]!.filter((_, i) => i !== 1) });
    });

    const eventRecord = (deviceId: string, sequence: number, createdAt: Date, eventId = `ev-${deviceId}-${sequence}`) =>
      ({ kind: 'inbound_event', at: new Date().toISOString(), deviceId, sequence, eventId, type: 'message.received', data: { text: `m${sequence}`, n: sequence }, createdAt: createdAt.toISOString() }) as const;

    it('keeps inbound events once per (device, sequence), lists them after a sequence or since a time, and refuses another id at a taken sequence', async () => {
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-events', connectionMethod: 'qr' });
      const start = Date.UTC(2026, 0, 1);
      const records = [1, 2, 3, 4, 5].map((n) => eventRecord(device.id, n, new Date(start + n * 60_000)));
      expect(await store.applyRecords(records)).toMatchObject({ applied: 5, duplicate: 0, rejected: 0 });
      // A replayed batch changes nothing; the same sequence with another id is the numbering gone
      // back somewhere, refused (and reported) rather than overwriting what a consumer may have seen.
      const again = await store.applyRecords([...records, eventRecord(device.id, 3, new Date(), 'someone-else')]);
      expect(again).toMatchObject({ applied: 0, duplicate: 5, rejected: 1 });
      expect(again.errors[0]?.message).toContain('already holds event');

      const after2 = await store.listEvents(device.id, 2, 2);
      expect(after2).toEqual([3, 4].map((n) => ({ deviceId: device.id, sequence: n, id: `ev-${device.id}-${n}`, type: 'message.received', data: { text: `m${n}`, n }, createdAt: new Date(start + n * 60_000) })));
      expect((await store.listEvents(device.id, 0, 100)).map((e) => e.sequence)).toEqual([1, 2, 3, 4, 5]);
      expect((await store.listEvents(device.id, 0, 100, new Date(start + 4 * 60_000))).map((e) => e.sequence)).toEqual([4, 5]);
      expect(await store.listEvents(device.id, 5, 100)).toEqual([]);
      expect(await store.listEvents(randomUUID(), 0, 100)).toEqual([]);
      expect(await store.listEvents('not-a-uuid', 0, 100)).toEqual([]);
      // Another device's sequence 1 is its own.
      const other = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-events-other', connectionMethod: 'qr' });
      expect(await store.applyRecords([eventRecord(other.id, 1, new Date(start))])).toMatchObject({ applied: 1 });
      // Many devices' recent events in one call: each device's first ones since the time, by device.
      const recent = await store.listRecentEvents([other.id, device.id, randomUUID(), 'not-a-uuid'], new Date(start + 2 * 60_000), 2);
      const [first, second] = [device.id, other.id].sort();
      const expected = { [device.id]: [2, 3], [other.id]: [] as number[] };
      expect(recent.map((e) => [e.deviceId, e.sequence])).toEqual([...expected[first!]!.map((n) => [first, n]), ...expected[second!]!.map((n) => [second, n])]);
      expect(recent[0]).toMatchObject({ id: `ev-${device.id}-2`, type: 'message.received', data: { text: 'm2', n: 2 }, createdAt: new Date(start + 2 * 60_000) });
      expect(await store.listRecentEvents([other.id], new Date(start), 10)).toEqual([expect.objectContaining({ deviceId: other.id, sequence: 1 })]);
      expect(await store.listRecentEvents([], new Date(start), 10)).toEqual([]);

      await store.deleteDevice(device.id);
      expect(await store.listEvents(device.id, 0, 100)).toEqual([]);
    });

    it('records receipts of sent messages: the first delivered and read times stay, and read alone implies delivered', async () => {
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-receipts', connectionMethod: 'qr' });
      const accept = async () => (await store.acceptMessage({ id: randomUUID(), deviceId: device.id, idempotencyKey: null, idempotencyMs: 60_000, to: '4915112345678', type: 'text', text: 'hi' })).id;
      const [m1, m2] = [await accept(), await accept()];
      expect(await store.getMessage(m1)).toMatchObject({ deliveredAt: null, readAt: null });
      const t = (minute: number) => new Date(Date.UTC(2026, 0, 1, 12, minute));
      const receipt = (messageId: string, status: 'delivered' | 'read' | 'played', minute: number) =>
        ({ kind: 'message_receipt', at: new Date().toISOString(), deviceId: device.id, messageId, status, receivedAt: t(minute).toISOString() }) as const;

      expect(await store.applyRecords([receipt(m1, 'delivered', 1), receipt(m1, 'read', 2), receipt(m2, 'played', 3)])).toMatchObject({ applied: 3, rejected: 0 });
      expect(await store.getMessage(m1)).toMatchObject({ deliveredAt: t(1), readAt: t(2) });
      expect(await store.getMessage(m2)).toMatchObject({ deliveredAt: t(3), readAt: t(3) });
      // Repeats and late receipts change nothing; a receipt naming another device's message neither.
      const late = await store.applyRecords([receipt(m1, 'delivered', 9), receipt(m1, 'read', 9), receipt(m2, 'delivered', 9), { ...receipt(m1, 'read', 9), deviceId: randomUUID() }]);
      expect(late).toMatchObject({ applied: 0, duplicate: 4, rejected: 0 });
      expect(await store.getMessage(m1)).toMatchObject({ deliveredAt: t(1), readAt: t(2) });
      expect(await store.getMessage(m2)).toMatchObject({ deliveredAt: t(3), readAt: t(3) });
      expect(await store.applyRecords([{ ...receipt(m1, 'read', 9), status: 'seen' as never }])).toMatchObject({ rejected: 1 });
    });

    it('keeps the webhook cursor going up only, and pages devices with events or a cursor by id', async () => {
      const devices = await Promise.all([1, 2, 3, 4].map((n) => store.createDevice({ userId: randomUUID(), deviceName: `ct-cursor-${n}`, connectionMethod: 'qr' })));
      const [withBoth, eventsOnly, cursorOnly] = devices as [typeof devices[0], typeof devices[0], typeof devices[0]];
      const progress = (deviceId: string, sequence: number) => ({ kind: 'webhook_progress', at: new Date().toISOString(), deviceId, sequence }) as const;
      const now = new Date();
      expect(
        await store.applyRecords([
          ...[1, 2, 3].map((n) => eventRecord(withBoth.id, n, now)),
          progress(withBoth.id, 2),
          progress(withBoth.id, 1),
          eventRecord(eventsOnly.id, 1, now),
          progress(cursorOnly.id, 7),
        ]),
      ).toMatchObject({ applied: 6, duplicate: 1, rejected: 0 });
      expect(await store.applyRecords([progress(withBoth.id, 2)])).toMatchObject({ applied: 0, duplicate: 1 });

      const mine = new Set(devices.map((d) => d.id));
      const seen: Awaited<ReturnType<Store['listEventCursors']>> = [];
      let after: string | null = null;
      for (;;) {
        const page = await store.listEventCursors(after, 2);
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(2);
        seen.push(...page);
        after = page.at(-1)!.deviceId;
      }
      const ordered = seen.map((c) => c.deviceId);
      expect(ordered).toEqual([...ordered].sort());
      // The fourth device has neither, so it is not listed.
      expect(seen.filter((c) => mine.has(c.deviceId))).toEqual(
        [
          { deviceId: withBoth.id, lastSequence: 3, webhookSequence: 2 },
          { deviceId: eventsOnly.id, lastSequence: 1, webhookSequence: 0 },
          { deviceId: cursorOnly.id, lastSequence: 0, webhookSequence: 7 },
        ].sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1)),
      );
    });

    it('prunes events older than a time, a bounded number per call, keeping each device newest event', async () => {
      const [a, b] = await Promise.all([1, 2].map((n) => store.createDevice({ userId: randomUUID(), deviceName: `ct-prune-${n}`, connectionMethod: 'qr' })));
      // Long ago, so a shared database's real events are never older than the cut.
      const old = (n: number) => new Date(Date.UTC(2001, 0, 1, 0, n));
      await store.applyRecords([
        ...[1, 2, 3, 4].map((n) => eventRecord(a!.id, n, old(n))),
        eventRecord(a!.id, 5, new Date()),
        ...[1, 2].map((n) => eventRecord(b!.id, n, old(n))),
      ]);
      const cut = new Date(Date.UTC(2001, 0, 2));
      expect(await store.pruneEvents(cut, 2)).toBe(2);
      expect(await store.pruneEvents(cut, 100)).toBe(3);
      expect(await store.pruneEvents(cut, 100)).toBe(0);
      expect((await store.listEvents(a!.id, 0, 100)).map((e) => e.sequence)).toEqual([5]);
      // b's newest is older than the cut and still kept: the store knows where b's numbering stands.
      expect((await store.listEvents(b!.id, 0, 100)).map((e) => e.sequence)).toEqual([2]);
      expect((await store.listEventCursors(null, 100_000)).find((c) => c.deviceId === b!.id)).toMatchObject({ lastSequence: 2 });
    });

    it('keeps server_logs when the server row is deleted, and unassigns its devices', async () => {
      const id = ids()('gone');
      await store.registerServer(registration(id));
      const device = await store.createDevice({ userId: randomUUID(), deviceName: 'ct-orphan', connectionMethod: 'qr' });
      await store.recordAssignment(device.id, id, 1);
      await store.appendServerLog({ serverId: id, level: 'info', event: 'started', message: 'up' });

      await probe('delete from backend_servers where id = $1', [id]);

      expect(await store.getServer(id)).toBeNull();
      expect(await probe('select event from server_logs where server_id = $1', [id])).toEqual([{ event: 'started' }]);
      expect(await store.getDevice(device.id)).toMatchObject({ assignedServerId: null, leaseEpoch: 1 });
    });

    it('admits every connection event the runtime writes, and nothing else', async () => {
      const deviceId = newDeviceId();
      const serverId = ids()('conn');
      for (const eventType of CONNECTION_LOG_EVENT_TYPES) {
        await store.appendConnectionLog({ deviceId, serverId, eventType });
      }
      const rows = await probe('select event_type from device_connection_logs where device_id = $1 order by id', [deviceId]);
      expect(rows.map((r) => r.event_type)).toEqual([...CONNECTION_LOG_EVENT_TYPES]);
      await expectQueryError(store.appendConnectionLog({ deviceId, serverId, eventType: 'teleported' }), '23514');
    });
  });
}

describe('store contract', () => {
  storeContract(inProcessPglite);
  storeContract(pgliteOverHost);
  storeContract(testDatabase);
  // Registered only when a project is configured; there is no stand-in for it.
  if (process.env.SUPABASE_URL) storeContract(supabaseTarget());
});
