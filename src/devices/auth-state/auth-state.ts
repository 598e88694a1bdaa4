import { initAuthCreds, type AuthenticationState, type SignalDataSet, type SignalDataTypeMap, type SignalKeyStore } from '@whiskeysockets/baileys';
import type { RedisClient as Redis } from '../../shared/redis.js';
import type { ClusterKeys } from '../../cluster/keys.js';
import { holderId, leaseValue } from '../../cluster/lease-value.js';
import { defineLuaScripts, loadLuaScript, runLua } from '../../shared/lua.js';
import type { Logger } from '../../shared/logger.js';
import type { Store } from '../../store/types.js';
import { AuthStateCorruptError, AuthStateFencedError } from '../errors.js';
import { CREDS_FIELD, decodeCreds, decodeKey, encodeValue, hashToSession, keyField, sessionToPairs, type SignalKeyType } from './codec.js';

// A device's Baileys auth state, shared by the cluster so that whichever server holds the lease
// next resumes the session without a new QR:
//  - the hot copy is one Redis hash per device; every write (a creds save, one `keys.set`) is one
//    Lua batch that first checks the writer's lease, so a stale owner writes nothing at all;
//  - the durable copy is a snapshot in the store, written behind (at most once per
//    snapshotDelayMs) and fenced by epoch in SQL; it is read only when Redis has no copy (Redis
//    lost its data), and never on the failover path otherwise.

const LUA = new URL('./lua/', import.meta.url);
const scripts = {
  write: loadLuaScript(LUA, 'writeAuthState-2.lua'),
  seed: loadLuaScript(LUA, 'seedAuthState-2.lua'),
  clear: loadLuaScript(LUA, 'clearAuthState-2.lua'),
};

/** The lease under which a device's auth state is written. */
export interface AuthLease {
  serverId: string;
  /** The holding process's boot id, as the lease value names it (absent: the bare server id). */
  bootId?: string;
  token: number;
  /** Throws unless this server may still act for the device (self-fence deadline, token). */
  guard(): void;
}

/** Where the creds came from: Redis (resumed), the store's snapshot (restored), or made now. */
export type AuthSource = 'redis' | 'snapshot' | 'new';

export interface DeviceAuthState {
  readonly deviceId: string;
  /**
   * Reads the creds from Redis; when Redis has none, restores the store's snapshot into Redis, or
   * makes new creds (a device never linked, or logged out). A store that cannot be read throws:
   * new creds written over a snapshot that exists would lose the session.
   */
  load(): Promise<{ state: AuthenticationState; source: AuthSource }>;
  /** Writes the creds of the state last loaded (Baileys' `creds.update`); fenced. */
  saveCreds(): Promise<void>;
  /** Writes the durable snapshot now if anything changed since the last one; false if not written. */
  flush(): Promise<boolean>;
  /** Logged out: deletes the session in Redis and in the store, both fenced; nothing is written after. */
  clear(): Promise<{ redis: boolean; store: boolean }>;
  /** Flushes the snapshot and stops its timer; idempotent. */
  close(): Promise<void>;
}

export interface AuthStateStore {
  forDevice(deviceId: string, lease: AuthLease): DeviceAuthState;
}

/** Where a device's durable session snapshot is written (the server writes it behind, queued). */
export interface SessionSnapshotWriter {
  /** Copies the device's hot auth state to the store under `epoch`; false when fenced or gone. */
  save(deviceId: string, epoch: number): Promise<boolean>;
}

export interface AuthStateStoreOptions {
  redis: Redis;
  keys: ClusterKeys;
  store: Pick<Store, 'getSession' | 'clearSession'>;
  /** Where snapshots go: written behind through the store-sync queue in the server. */
  snapshots: SessionSnapshotWriter;
  log: Logger;
  /** The durable snapshot trails Redis by at most this long (0: after every write). */
  snapshotDelayMs: number;
}

export function createAuthStateStore(options: AuthStateStoreOptions): AuthStateStore {
  const { redis, keys, store, snapshots, log, snapshotDelayMs } = options;
  defineLuaScripts(redis, Object.values(scripts));

  return {
    forDevice(deviceId, lease) {
      const holder = leaseValue(holderId(lease.serverId, lease.bootId), lease.token);
      const hashKey = keys.authState(deviceId);
      const scriptKeys = [keys.lease(deviceId), hashKey];
      const deviceLog = log.child({ deviceId, token: lease.token });
      let state: AuthenticationState | undefined;
      let dirty = false;
      let cleared = false;
      let closed = false;
      let timer: NodeJS.Timeout | undefined;
      // Snapshots and the clear run one at a time, in order, so a snapshot can never land after
      // the clear and bring a logged-out session back.
      let queue: Promise<unknown> = Promise.resolve();
      const serially = <T>(work: () => Promise<T>): Promise<T> => {
        const next = queue.then(work);
        queue = next.catch(() => undefined);
        return next;
      };

      const scheduleSnapshot = () => {
        dirty = true;
        if (timer || closed || cleared) return;
        timer = setTimeout(() => {
          timer = undefined;
          void flush();
        }, snapshotDelayMs);
        timer.unref();
      };

      /** One fenced batch: `sets` are field/value pairs, `deletes` field names. */
      const write = async (what: string, sets: string[], deletes: string[]): Promise<void> => {
        if (cleared) throw new AuthStateFencedError(deviceId, lease.token, `${what} after the session was cleared`);
        lease.guard();
        const written = await runLua<number>(redis, scripts.write, scriptKeys, [holder, sets.length / 2, ...sets, ...deletes]);
        if (written !== 1) throw new AuthStateFencedError(deviceId, lease.token, what);
        scheduleSnapshot();
      };

      const signalKeys: SignalKeyStore = {
        async get<T extends keyof SignalDataTypeMap>(type: T, ids: string[]) {
          const result: { [id: string]: SignalDataTypeMap[T] } = {};
          if (ids.length === 0) return result;
          const values = await redis.hmget(hashKey, ...ids.map((id) => keyField(type, id)));
          ids.forEach((id, i) => {
            const raw = values[i];
            if (raw === null || raw === undefined) return;
            try {
              result[id] = decodeKey<T>(type, raw);
            } catch (err) {
              throw new AuthStateCorruptError(deviceId, keyField(type, id), { cause: err });
            }
          });
          return result;
        },
        async set(data: SignalDataSet) {
          // Everything is encoded before anything is sent: a value that cannot be encoded fails
          // the whole batch, never half of it.
          const sets: string[] = [];
          const deletes: string[] = [];
          for (const [type, entries] of Object.entries(data) as Array<[SignalKeyType, Record<string, unknown> | undefined]>) {
            for (const [id, value] of Object.entries(entries ?? {})) {
              if (value === null || value === undefined) deletes.push(keyField(type, id));
              else sets.push(keyField(type, id), encodeValue(value));
            }
          }
          if (sets.length === 0 && deletes.length === 0) return;
          await write('keys.set', sets, deletes);
        },
      };

      const seed = async (pairs: string[]): Promise<'seeded' | 'exists'> => {
        lease.guard();
        const outcome = await runLua<number>(redis, scripts.seed, scriptKeys, [holder, ...pairs]);
        if (outcome === 0) throw new AuthStateFencedError(deviceId, lease.token, 'seed');
        if (outcome === 1) scheduleSnapshot();
        return outcome === 1 ? 'seeded' : 'exists';
      };

      const readCreds = async () => {
        const raw = await redis.hget(hashKey, CREDS_FIELD);
        if (raw === null) return null;
        try {
          return decodeCreds(raw);
        } catch (err) {
          throw new AuthStateCorruptError(deviceId, CREDS_FIELD, { cause: err });
        }
      };

      const flush = (): Promise<boolean> =>
        serially(async () => {
          clearTimeout(timer);
          timer = undefined;
          if (!dirty || cleared) return false;
          try {
            lease.guard();
          } catch {
            // No longer ours: the next owner's snapshot is the one that counts.
            return false;
          }
          dirty = false;
          try {
            const saved = await snapshots.save(deviceId, lease.token);
            if (!saved) deviceLog.info('session snapshot refused: the store has a newer epoch');
            return saved;
          } catch (err) {
            deviceLog.warn({ err }, 'session snapshot failed; will retry');
            scheduleSnapshot();
            return false;
          }
        });

      const auth: DeviceAuthState = {
        deviceId,
        async load() {
          let source: AuthSource = 'redis';
          let creds = await readCreds();
          if (!creds) {
            const snapshot = await store.getSession(deviceId);
            const restorable = snapshot && !snapshot.cleared && snapshot.creds && typeof snapshot.creds === 'object' && Object.keys(snapshot.creds).length > 0;
            if (restorable) {
              source = (await seed(sessionToPairs(snapshot))) === 'seeded' ? 'snapshot' : 'redis';
              creds = await readCreds();
              if (!creds) throw new AuthStateCorruptError(deviceId, CREDS_FIELD);
            } else {
              const fresh = initAuthCreds();
              if ((await seed([CREDS_FIELD, encodeValue(fresh)])) === 'seeded') {
                source = 'new';
                creds = fresh;
              } else {
                creds = await readCreds();
                if (!creds) throw new AuthStateCorruptError(deviceId, CREDS_FIELD);
              }
            }
            deviceLog.info({ source }, source === 'snapshot' ? 'auth state restored from the store snapshot' : 'auth state created');
          }
          state = { creds, keys: signalKeys };
          return { state, source };
        },
        async saveCreds() {
          if (!state) throw new Error('saveCreds before load');
          await write('creds save', [CREDS_FIELD, encodeValue(state.creds)], []);
        },
        flush,
        clear: () =>
          serially(async () => {
            cleared = true;
            clearTimeout(timer);
            timer = undefined;
            lease.guard();
            const inRedis = (await runLua<number>(redis, scripts.clear, scriptKeys, [holder])) === 1;
            if (!inRedis) return { redis: false, store: false };
            let inStore = false;
            try {
              inStore = await store.clearSession(deviceId, lease.token);
            } catch (err) {
              // Redis is clear, so the next start needs a new QR anyway; a snapshot left behind
              // would be restored only after Redis lost its data, and then be logged out again.
              deviceLog.warn({ err }, 'session not cleared in the store');
            }
            return { redis: true, store: inStore };
          }),
        async close() {
          if (closed) return;
          await flush();
          closed = true;
          clearTimeout(timer);
          timer = undefined;
        },
      };
      return auth;
    },
  };
}

/**
 * Copies a device's hot auth state from Redis to the store, fenced by `epoch`. Reading at write
 * time means a delayed snapshot carries the newest state, never an older one than it was asked for.
 */
export function createSnapshotWriter({ redis, keys, store }: { redis: Redis; keys: ClusterKeys; store: Pick<Store, 'saveSession'> }): SessionSnapshotWriter {
  return {
    async save(deviceId, epoch) {
      const session = hashToSession(await redis.hgetall(keys.authState(deviceId)));
      if (!session) return false;
      return store.saveSession(deviceId, session.creds, session.keys, epoch);
    },
  };
}
