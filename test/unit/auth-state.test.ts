import { randomBytes } from 'node:crypto';
import { BufferJSON, Curve, proto, type SignalDataTypeMap } from '@whiskeysockets/baileys';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEphemeralRedis } from '../../harness/local-redis.js';
import { createClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseStore } from '../../src/cluster/lease-store.js';
import { adoptFreshRedis } from '../../src/cluster/redis-reset.js';
import { createStore } from '../../src/store/index.js';
import { createAuthStateStore, createSnapshotWriter, type AuthStateStore } from '../../src/devices/auth-state/auth-state.js';
import { SIGNAL_KEY_TYPES } from '../../src/devices/auth-state/codec.js';
import { AuthStateFencedError } from '../../src/devices/errors.js';
import { createDeviceBed, eventually, silentLog, type DeviceBed } from '../helpers/devices.js';

let bed: DeviceBed;
const connections: Redis[] = [];

/** An auth-state store of its own, on a Redis connection of its own: what one server has. */
function authStore(snapshotDelayMs = 60_000, url = bed.t.url, keys = bed.keys, owned = connections): AuthStateStore {
  const redis = new Redis(url);
  owned.push(redis);
  return createAuthStateStore({ redis, keys, store: bed.store, snapshots: createSnapshotWriter({ redis, keys, store: bed.store }), log: silentLog, snapshotDelayMs });
}

/** The local guard of a server that has not noticed anything yet: only the fence in Redis can stop it. */
const unaware = () => undefined;

/** One value of every key type, as Baileys writes them. */
function everyKeyType(): Required<{ [T in keyof SignalDataTypeMap]: { [id: string]: SignalDataTypeMap[T] } }> {
  return {
    'pre-key': { '1': Curve.generateKeyPair(), '2': Curve.generateKeyPair() },
    session: { '4915112345678.0': randomBytes(300), '4915112345678.3': randomBytes(180) },
    'sender-key': { '120363000000000001@g.us::4915112345678::0': randomBytes(120) },
    'sender-key-memory': { '120363000000000001@g.us': { '4915112345678:3@s.whatsapp.net': true, '4915187654321@s.whatsapp.net': false } },
    'app-state-sync-key': {
      AAAAAFQ4: proto.Message.AppStateSyncKeyData.fromObject({
        keyData: randomBytes(32),
        fingerprint: { rawId: 3_123_456, currentIndex: 7, deviceIndexes: [0, 3, 9] },
        timestamp: 1_712_345_678_901,
      }),
    },
    'app-state-sync-version': {
      regular_high: { version: 42, hash: randomBytes(128), indexValueMap: { 'bWFjMQ==': { valueMac: randomBytes(32) } } },
    },
    'lid-mapping': { '4915112345678': '123456789012345', '123456789012345_reverse': '4915112345678' },
    'device-list': { '4915112345678': ['0', '3', '12'] },
    tctoken: { '4915187654321@s.whatsapp.net': { token: randomBytes(24), timestamp: '1712345678' } },
    'identity-key': { '4915187654321.0': randomBytes(33) },
  };
}

beforeAll(async () => {
  bed = await createDeviceBed();
});
afterAll(async () => {
  for (const c of connections) c.disconnect();
  await bed.cleanup();
});

describe('shared auth state', () => {
  it('covers every Signal key type of Baileys 7', () => {
    expect(Object.keys(everyKeyType()).sort()).toEqual([...SIGNAL_KEY_TYPES].sort());
  });

  it('round trip: creds and every key type written by one server read back equal by another', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    const a = authStore().forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const { state, source } = await a.load();
    expect(source).toBe('new');

    // What a linked device's creds carry beyond initAuthCreds().
    state.creds.me = { id: '4915112345678:3@s.whatsapp.net', name: 'Alice', lid: '123456789012345:3@lid' };
    state.creds.account = proto.ADVSignedDeviceIdentity.fromObject({
      details: randomBytes(60),
      accountSignatureKey: randomBytes(32),
      accountSignature: randomBytes(64),
      deviceSignature: randomBytes(64),
    });
    state.creds.routingInfo = randomBytes(16);
    state.creds.nextPreKeyId = 31;
    await a.saveCreds();
    const written = everyKeyType();
    await state.keys.set(written);

    // Another server: its own connection, its own store object, the same lease (as after a handover).
    const b = authStore().forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const read = await b.load();
    expect(read.source).toBe('redis');
    expect(read.state.creds).toEqual(JSON.parse(JSON.stringify(state.creds, BufferJSON.replacer), BufferJSON.reviver));
    expect(Buffer.from(read.state.creds.noiseKey.private).equals(Buffer.from(state.creds.noiseKey.private))).toBe(true);
    // The account is a protobuf message: BufferJSON keeps its bytes as base64 (as Baileys' own
    // file store does), and it encodes to the same bytes.
    expect(Buffer.from(proto.ADVSignedDeviceIdentity.encode(read.state.creds.account!).finish())).toEqual(
      Buffer.from(proto.ADVSignedDeviceIdentity.encode(state.creds.account).finish()),
    );
    expect(read.state.creds.me).toEqual(state.creds.me);

    for (const type of SIGNAL_KEY_TYPES) {
      const ids = Object.keys(written[type]);
      const got = await read.state.keys.get(type, [...ids, 'missing-id']);
      expect(Object.keys(got).sort(), type).toEqual(ids.sort());
      for (const id of ids) {
        if (type === 'app-state-sync-key') {
          const value = got[id] as proto.Message.AppStateSyncKeyData;
          // Revived as the protobuf message Baileys calls methods on, and byte-identical.
          expect(value).toBeInstanceOf(proto.Message.AppStateSyncKeyData);
          const original = written[type][id] as proto.Message.AppStateSyncKeyData;
          expect(Buffer.from(proto.Message.AppStateSyncKeyData.encode(value).finish())).toEqual(
            Buffer.from(proto.Message.AppStateSyncKeyData.encode(original).finish()),
          );
        } else {
          expect(got[id], `${type} ${id}`).toEqual(written[type][id as never]);
        }
      }
    }

    // null deletes, in the same batch as a write.
    await read.state.keys.set({ session: { '4915112345678.0': null, '4915112345678.9': randomBytes(10) }, 'pre-key': { '1': null } });
    const after = await a.load();
    expect(Object.keys(await after.state.keys.get('session', ['4915112345678.0', '4915112345678.3', '4915112345678.9'])).sort()).toEqual([
      '4915112345678.3',
      '4915112345678.9',
    ]);
    expect(await after.state.keys.get('pre-key', ['1'])).toEqual({});
  });

  it('a keys.set or creds save with a stale token changes nothing; the new holder writes', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    const stale = authStore().forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const { state } = await stale.load();
    await state.keys.set({ session: { s1: randomBytes(40) }, 'pre-key': { '1': Curve.generateKeyPair() } });
    const before = await bed.t.redis.hgetall(bed.keys.authState(deviceId));

    const newToken = await bed.steal(deviceId, 'srv-b');
    await expect(state.keys.set({ session: { s1: randomBytes(40), s2: randomBytes(40) }, 'pre-key': { '1': null } })).rejects.toBeInstanceOf(
      AuthStateFencedError,
    );
    state.creds.nextPreKeyId = 999;
    await expect(stale.saveCreds()).rejects.toBeInstanceOf(AuthStateFencedError);
    await expect(stale.clear()).resolves.toEqual({ redis: false, store: false });
    expect(await bed.t.redis.hgetall(bed.keys.authState(deviceId))).toEqual(before);

    const owner = authStore().forDevice(deviceId, { serverId: 'srv-b', token: newToken, guard: unaware });
    const current = await owner.load();
    expect(current.source).toBe('redis');
    await current.state.keys.set({ session: { s2: randomBytes(40) } });
    expect(await bed.t.redis.hexists(bed.keys.authState(deviceId), 'session:s2')).toBe(1);
  });

  it('a batch that cannot be encoded writes none of its entries', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    const auth = authStore().forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const { state } = await auth.load();
    await state.keys.set({ session: { s1: randomBytes(40) } });
    const before = await bed.t.redis.hgetall(bed.keys.authState(deviceId));
    const unencodable = { token: randomBytes(8), timestamp: 10n } as unknown as SignalDataTypeMap['tctoken'];
    await expect(
      state.keys.set({ session: { s1: null, s2: randomBytes(40) }, 'device-list': { u1: ['0'] }, tctoken: { 'x@s.whatsapp.net': unencodable } }),
    ).rejects.toThrow(/BigInt/);
    expect(await bed.t.redis.hgetall(bed.keys.authState(deviceId))).toEqual(before);
  });

  it('a batch Redis refuses (out of memory) writes none of its entries, deletes included', async () => {
    // A Redis of this test's own: maxmemory cannot be played with on the shared one.
    const port = await freePort();
    const own = await startEphemeralRedis(port);
    const ownConnections: Redis[] = [];
    try {
      const url = `redis://127.0.0.1:${port}`;
      const admin = new Redis(url);
      ownConnections.push(admin);
      const keys = createClusterKeys(bed.keys.prefix);
      await adoptFreshRedis(admin, keys);
      const leases = createLeaseStore({ redis: admin, keys });
      const deviceId = await bed.createDevice();
      await admin.multi().hset(keys.server('srv-a'), 'capacity', 10).pexpire(keys.server('srv-a'), 60_000).exec();
      const claimed = await leases.claim(deviceId, 'srv-a', 60_000);
      if (claimed.outcome !== 'claimed') throw new Error('claim failed');
      const auth = authStore(60_000, url, keys, ownConnections).forDevice(deviceId, { serverId: 'srv-a', token: claimed.token, guard: unaware });
      const { state } = await auth.load();
      await state.keys.set({ session: { s1: randomBytes(40), s2: randomBytes(40) } });
      const before = await admin.hgetall(keys.authState(deviceId));

      await admin.config('SET', 'maxmemory', '1');
      const batch = { session: { s1: null, s3: randomBytes(40) }, 'pre-key': { '5': Curve.generateKeyPair() } };
      await expect(state.keys.set(batch)).rejects.toThrow(/OOM/);
      await admin.config('SET', 'maxmemory', '0');
      expect(await admin.hgetall(keys.authState(deviceId))).toEqual(before);

      await state.keys.set(batch);
      expect(Object.keys(await admin.hgetall(keys.authState(deviceId))).sort()).toEqual(['creds', 'pre-key:5', 'session:s2', 'session:s3']);
    } finally {
      for (const c of ownConnections) c.disconnect();
      await own.stop();
    }
  });

  it('writes one large batch whole (more fields than one Lua unpack takes)', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    const auth = authStore().forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const { state } = await auth.load();
    const preKeys: Record<string, ReturnType<typeof Curve.generateKeyPair>> = {};
    for (let id = 1; id <= 5000; id++) preKeys[id] = { public: randomBytes(33), private: randomBytes(32) };
    await state.keys.set({ 'pre-key': preKeys });
    expect(await bed.t.redis.hlen(bed.keys.authState(deviceId))).toBe(5001);
    await state.keys.set({ 'pre-key': Object.fromEntries(Object.keys(preKeys).map((id) => [id, null])) });
    expect(await bed.t.redis.hlen(bed.keys.authState(deviceId))).toBe(1);
  });

  it('snapshots to the store behind Redis, and restores from it when the Redis copy is gone', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    const auth = authStore(50).forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const { state } = await auth.load();
    state.creds.me = { id: '4915112345678:3@s.whatsapp.net' };
    state.creds.account = { details: randomBytes(20) };
    await auth.saveCreds();
    const written = everyKeyType();
    await state.keys.set(written);
    await eventually(async () => {
      const snapshot = await bed.store.getSession(deviceId);
      return Object.keys(snapshot?.keys ?? {}).length === SIGNAL_KEY_TYPES.length;
    });
    const snapshot = (await bed.store.getSession(deviceId))!;
    expect(snapshot.epoch).toBe(token);
    expect(snapshot.cleared).toBe(false);

    // Redis lost the device's copy; the next owner restores the snapshot.
    await bed.t.redis.del(bed.keys.authState(deviceId));
    const next = await bed.steal(deviceId, 'srv-b');
    const restored = await authStore().forDevice(deviceId, { serverId: 'srv-b', token: next, guard: unaware }).load();
    expect(restored.source).toBe('snapshot');
    expect(restored.state.creds.me).toEqual(state.creds.me);
    expect(Buffer.from(restored.state.creds.signedIdentityKey.private).equals(Buffer.from(state.creds.signedIdentityKey.private))).toBe(true);
    expect(await restored.state.keys.get('session', Object.keys(written.session))).toEqual(written.session);
    const syncKey = (await restored.state.keys.get('app-state-sync-key', ['AAAAAFQ4'])).AAAAAFQ4;
    expect(syncKey).toBeInstanceOf(proto.Message.AppStateSyncKeyData);
    expect(await bed.t.redis.hexists(bed.keys.authState(deviceId), 'creds')).toBe(1);
  });

  it('a hash that lost its creds (Redis lost data under a live socket) is filled from the snapshot, newer keys kept', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    const auth = authStore(20).forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const { state } = await auth.load();
    state.creds.me = { id: '4915112345678:3@s.whatsapp.net' };
    await auth.saveCreds();
    await state.keys.set({ session: { old: Buffer.from('old'), kept: Buffer.from('snapshot') } });
    await eventually(async () => Object.keys((await bed.store.getSession(deviceId))?.keys.session ?? {}).length === 2);

    await bed.t.redis.del(bed.keys.authState(deviceId));
    await state.keys.set({ session: { kept: Buffer.from('newer') } }); // the live socket writes on
    const again = await authStore().forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware }).load();
    expect(again.source).toBe('snapshot');
    expect(again.state.creds.me?.id).toBe('4915112345678:3@s.whatsapp.net');
    expect(await again.state.keys.get('session', ['old', 'kept'])).toEqual({ old: Buffer.from('old'), kept: Buffer.from('newer') });
  });

  it('a logged-out session is cleared in Redis and in the store, and nothing brings it back', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    const auth = authStore(20).forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware });
    const { state } = await auth.load();
    state.creds.me = { id: '4915112345678:3@s.whatsapp.net' };
    await auth.saveCreds();
    await eventually(async () => (await bed.store.getSession(deviceId)) !== null);
    // A write right before the clear: its pending snapshot must not land after the clear.
    await state.keys.set({ session: { s1: randomBytes(40) } });

    expect(await auth.clear()).toEqual({ redis: true, store: true });
    expect(await bed.t.redis.exists(bed.keys.authState(deviceId))).toBe(0);
    await expect(state.keys.set({ session: { s2: randomBytes(40) } })).rejects.toBeInstanceOf(AuthStateFencedError);
    expect(await auth.flush()).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    const tombstone = (await bed.store.getSession(deviceId))!;
    expect(tombstone.cleared).toBe(true);
    expect(tombstone.epoch).toBe(token);
    // A later start needs a new QR: new creds, not the old ones.
    const fresh = await authStore().forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware }).load();
    expect(fresh.source).toBe('new');
    expect(fresh.state.creds.me).toBeUndefined();
    expect(Buffer.from(fresh.state.creds.noiseKey.public).equals(Buffer.from(state.creds.noiseKey.public))).toBe(false);
  });

  it('a store that cannot be read never leads to new creds over a snapshot', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    // A store whose database nobody serves: the Redis copy is missing and the snapshot unknown.
    const unreachable = await createStore({ kind: 'postgres', databaseUrl: `postgres://postgres@127.0.0.1:${await freePort()}/none`, poolMax: 1 }, { log: silentLog });
    const redis = new Redis(bed.t.url);
    connections.push(redis);
    const auth = createAuthStateStore({ redis, keys: bed.keys, store: unreachable, snapshots: createSnapshotWriter({ redis, keys: bed.keys, store: unreachable }), log: silentLog, snapshotDelayMs: 50 });
    try {
      await expect(auth.forDevice(deviceId, { serverId: 'srv-a', token, guard: unaware }).load()).rejects.toThrow();
      expect(await bed.t.redis.exists(bed.keys.authState(deviceId))).toBe(0);
    } finally {
      await unreachable.close();
    }
  });

  it('the local guard refuses before Redis is asked (self-fenced)', async () => {
    const deviceId = await bed.createDevice();
    const token = await bed.claim(deviceId, 'srv-a');
    let fenced = false;
    const auth = authStore().forDevice(deviceId, {
      serverId: 'srv-a',
      token,
      guard: () => {
        if (fenced) throw new Error('self-fenced');
      },
    });
    const { state } = await auth.load();
    fenced = true;
    await expect(state.keys.set({ session: { s1: randomBytes(4) } })).rejects.toThrow('self-fenced');
    expect(await bed.t.redis.hexists(bed.keys.authState(deviceId), 'session:s1')).toBe(0);
  });
});

