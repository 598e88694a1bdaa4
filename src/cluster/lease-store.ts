import type { ChainableCommander } from 'ioredis';
import { execChunked, type RedisClient as Redis } from '../shared/redis.js';
import { defineLuaScripts, loadLuaScript, queueLua, runLua } from '../shared/lua.js';
import type { ClusterKeys } from './keys.js';
import { holderId, leaseValue, parseLeaseValue, serverIdOf, type LeaseHolder } from './lease-value.js';

export { holderId, leaseValue, parseLeaseValue, serverIdOf, type LeaseHolder } from './lease-value.js';

// Typed access to the lease scripts (src/cluster/lua). Every call is one atomic script; a Redis
// connection error is thrown as such and never mistaken for the loss of a lease.

const LUA = new URL('./lua/', import.meta.url);
const scripts = {
  claim: loadLuaScript(LUA, 'claimLeases.lua'),
  raiseTokenFloor: loadLuaScript(LUA, 'raiseTokenFloor-1.lua'),
  takeOver: loadLuaScript(LUA, 'takeOverLeases.lua'),
  renew: loadLuaScript(LUA, 'renewLeases.lua'),
  release: loadLuaScript(LUA, 'releaseLease-3.lua'),
  findDue: loadLuaScript(LUA, 'findDue-2.lua'),
  findDueHolders: loadLuaScript(LUA, 'findDueHolders-1.lua'),
  listHolderLeases: loadLuaScript(LUA, 'listHolderLeases-2.lua'),
  forgetHolder: loadLuaScript(LUA, 'forgetHolder-1.lua'),
  expire: loadLuaScript(LUA, 'expireLease-4.lua'),
  place: loadLuaScript(new URL('./placement/', import.meta.url), 'placeDevice.lua'),
  setStatus: loadLuaScript(LUA, 'setDeviceStatus-2.lua'),
  reassert: loadLuaScript(LUA, 'reassertLeases.lua'),
  seedFences: loadLuaScript(LUA, 'seedFences.lua'),
};

/** Leases renewed per script call; a heartbeat pipelines the chunks into one round trip. */
export const RENEW_CHUNK = 1000;

export interface HeldLease {
  deviceId: string;
  token: number;
}

export type ClaimResult =
  /** `expired`: the previous holder, when its lease ran out unreleased and unswept (a failover). */
  | { outcome: 'claimed'; token: number; expired?: LeaseHolder }
  /** `bootId`: which start of that server holds it (absent for holders that name no boot). */
  | { outcome: 'held'; serverId: string; bootId?: string; token: number }
  | { outcome: 'embargoed' }
  | { outcome: 'not_live' }
  | { outcome: 'not_reserved' }
  /**
   * Redis is not the one the fences were re-seeded on (it restarted or failed over, and nobody
   * has re-seeded yet): a token it hands out may already have been handed out, so the script
   * granted nothing.
   */
  | { outcome: 'redis_changed'; runId: string; seededOn: string | null };

export interface LostLease {
  deviceId: string;
  /**
   * The token that was lost. A renewal's answer can arrive after the device was released and
   * claimed again here under a newer token: only the loss of the token still held counts.
   */
  token: number;
  /** Who holds it now, or null when nobody does. */
  holder: { serverId: string; token: number } | null;
}

export type PlaceResult =
  | { outcome: 'placed'; serverId: string }
  | { outcome: 'owned'; serverId: string; token: number }
  | { outcome: 'pending'; serverId: string }
  | { outcome: 'unwanted' }
  | { outcome: 'none' };

export interface LeaseInfo extends LeaseHolder {
  ttlMs: number;
}

/** A device's lease as readers (the API, the cluster page) see it. */
export interface LeaseReading {
  deviceId: string;
  /** The lease with its PTTL; null when no lease key lives. */
  lease: LeaseInfo | null;
  /** The live status its holder last wrote (setStatus), with the token it wrote under. */
  status: { status: string; token: number } | null;
  /** Who last held it, by the holders index: it outlives the lease until a sweep expires it. */
  lastHolder: LeaseHolder | null;
}

/** The `run_id` line of `INFO server`: it changes whenever Redis restarts or another node takes over. */
export const runIdOf = (info: string): string | undefined => /run_id:(\w+)/.exec(info)?.[1];

// Every call below that writes or compares a lease value takes the holder id (holderId(): the
// server id, with the process's boot id); keys per server use the server id part of it.
export interface LeaseStore {
  /** `viaPlacement`: the claim answers a placement and needs this server's reservation. */
  claim(deviceId: string, holder: string, ttlMs: number, options?: { minToken?: number; viaPlacement?: boolean }): Promise<ClaimResult>;
  /**
   * Claims several devices in one script call (what one inbox read brings): the cluster-wide
   * checks run once for the batch. Results in input order; `minToken` per device, 0 when unknown.
   */
  claimMany(
    claims: ReadonlyArray<{ deviceId: string; minToken?: number }>,
    holder: string,
    ttlMs: number,
    options?: { viaPlacement?: boolean },
  ): Promise<ClaimResult[]>;
  /** Marks devices wanted (desired state running) or not; placement only places wanted ones. */
  setWanted(deviceIds: readonly string[], wanted: boolean): Promise<void>;
  renew(holder: string, ttlMs: number, leases: readonly HeldLease[]): Promise<LostLease[]>;
  /**
   * Queues the renewal on a caller's pipeline (so the heartbeat stays one round trip) and returns
   * the parser for that pipeline's results.
   */
  queueRenew(
    pipeline: ChainableCommander,
    holder: string,
    ttlMs: number,
    leases: readonly HeldLease[],
  ): (results: Array<[Error | null, unknown]>) => LostLease[];
  release(deviceId: string, holder: string, token: number): Promise<boolean>;
  /**
   * Holders (processes) past their deadline: they stopped renewing, and every lease they were
   * granted has run out, unless something extended it since (expire() tells).
   */
  findDueHolders(limit: number): Promise<string[]>;
  /** The leases a holder was last granted (`holder` is `holder:token`), as expire() takes them. */
  leasesOf(holder: string): Promise<Array<{ deviceId: string; holder: string }>>;
  /** Forgets a due holder after its leases were expired; false when its deadline moved on (kept). */
  forgetHolder(holder: string): Promise<boolean>;
  /**
   * Of these devices (their lease keys expired, by Redis's keyspace events), expires those whose
   * last holder is `holder`: leases this live process let run out (a release that failed), which
   * the sweep of due holders never sees. Returns the ones it expired.
   */
  expireOwn(deviceIds: readonly string[], holder: string): Promise<Array<{ deviceId: string; holder: string }>>;
  /** Placements whose reservation ran out unclaimed (or that found no server): place them again. */
  findDuePlacements(limit: number): Promise<Array<{ deviceId: string; target: string }>>;
  /** Forgets a device's placement (it was stopped or deleted, so nobody should claim it). */
  cancelPlacement(deviceId: string): Promise<void>;
  /**
   * Expires leases that ran out (as leasesOf listed them), in one round trip for the whole batch:
   * after a server dies its whole share is due at once. Outcomes in input order.
   */
  expire(due: ReadonlyArray<{ deviceId: string; holder: string }>): Promise<Array<'expired' | 'alive' | 'changed'>>;
  place(deviceId: string, candidates: readonly string[], reservationMs: number, exclude?: string): Promise<PlaceResult>;
  read(deviceId: string): Promise<LeaseInfo | null>;
  /** Many devices' leases, statuses and last holders: pipelined reads, not one transaction. */
  readMany(deviceIds: readonly string[]): Promise<LeaseReading[]>;
  /**
   * Every device with a holder on record: each live lease, and each expired one no sweep has
   * handled yet (a failover in progress). Read with HSCAN, never in one blocking call.
   */
  indexedDevices(): Promise<string[]>;
  /** The last token handed out for the device (its fence); 0 when none ever was. */
  fenceOf(deviceId: string): Promise<number>;
  /** After Redis lost its data: writes this server's leases back with their tokens; reports the lost. */
  reassert(holder: string, ttlMs: number, leases: readonly HeldLease[]): Promise<LostLease[]>;
  /**
   * Takes over, with new tokens for `holder`, the leases of `deviceIds` that still name `deadHolder`
   * (an earlier boot of the same server, proven dead). Nothing while claims are embargoed.
   */
  takeOver(deadHolder: string, holder: string, ttlMs: number, deviceIds: readonly string[]): Promise<Array<{ deviceId: string; token: number; previous: LeaseHolder | null }>>;
  /** Queues, on a caller's transaction, raising the token floor to `floor` (never lowering it). */
  queueRaiseTokenFloor(tx: ChainableCommander, floor: string): void;
  /** Lifts fence counters to the store's epochs (never lowers one); returns how many were lifted. */
  seedFences(epochs: ReadonlyArray<{ deviceId: string; leaseEpoch: number }>): Promise<number>;
  /** Fenced: false (and nothing written) unless `holder:token` still holds the lease. */
  setStatus(deviceId: string, holder: string, token: number, status: string, detail?: Record<string, unknown>): Promise<boolean>;
}

export function createLeaseStore({ redis, keys }: { redis: Redis; keys: ClusterKeys }): LeaseStore {
  defineLuaScripts(redis, Object.values(scripts));

  const queueRenew: LeaseStore['queueRenew'] = (pipeline, holder, ttlMs, leases) => {
    const first = pipeline.length;
    const serverId = serverIdOf(holder);
    for (let start = 0; start < leases.length; start += RENEW_CHUNK) {
      const chunk = leases.slice(start, start + RENEW_CHUNK);
      const args: (string | number)[] = [holder, ttlMs];
      for (const lease of chunk) args.push(lease.deviceId, lease.token);
      queueLua(
        pipeline,
        scripts.renew,
        [keys.holderDeadlines, keys.owned(serverId), ...chunk.map((l) => keys.lease(l.deviceId))],
        args,
      );
    }
    const last = pipeline.length;
    const sent = new Map(leases.map((l) => [l.deviceId, l.token]));
    return (results) => {
      const lost: LostLease[] = [];
      for (const [err, reply] of results.slice(first, last)) {
        if (err) throw err;
        const flat = reply as string[];
        for (let i = 0; i < flat.length; i += 2) {
          lost.push({ deviceId: flat[i]!, token: sent.get(flat[i]!)!, holder: flat[i + 1] ? parseLeaseValue(flat[i + 1]!) : null });
        }
      }
      return lost;
    };
  };


  const claimMany: LeaseStore['claimMany'] = async (claims, holder, ttlMs, { viaPlacement = false } = {}) => {
    if (claims.length === 0) return [];
    const serverId = serverIdOf(holder);
    const deviceKeys: string[] = [];
    const args: (string | number)[] = [serverId, ttlMs, viaPlacement ? '1' : '0', holder];
    for (const { deviceId, minToken = 0 } of claims) {
      deviceKeys.push(keys.lease(deviceId), keys.fence(deviceId));
      args.push(deviceId, minToken);
    }
    const flat = await runLua<Array<number | string>>(
      redis,
      scripts.claim,
      [
        keys.holderDeadlines,
        keys.holders,
        keys.owned(serverId),
        keys.claimEmbargo,
        keys.server(serverId),
        keys.reserved(serverId),
        keys.placements,
        keys.placementTargets,
        keys.tokenFloor,
        keys.incarnation,
        ...deviceKeys,
      ],
      args,
    );
    const resultOf = (i: number, deviceId: string): ClaimResult => {
      const code = Number(flat[i]);
      const value = String(flat[i + 1] ?? '');
      const third = String(flat[i + 2] ?? '');
      if (code === -5) return { outcome: 'redis_changed', runId: value, seededOn: third || null };
      if (code > 0) {
        const expired = third ? parseLeaseValue(third) : null;
        return expired ? { outcome: 'claimed', token: code, expired } : { outcome: 'claimed', token: code };
      }
      if (code === -2) return { outcome: 'embargoed' };
      if (code === -3) return { outcome: 'not_live' };
      if (code === -4) return { outcome: 'not_reserved' };
      const current = parseLeaseValue(value);
      if (!current) throw new Error(`lease of ${deviceId} holds an unreadable value ${JSON.stringify(value)}`);
      return { outcome: 'held', ...current };
    };
    // One triple answers for the whole batch when a cluster-wide check refused every claim.
    const results = claims.map(({ deviceId }, n) => resultOf(flat.length === 3 ? 0 : n * 3, deviceId));
    // A claim that found a lease run out unswept leaves its old owner's owned set behind (the
    // script cannot name that key in advance): take the device out of it here, or that server
    // keeps counting it as load.
    const stale = claims.flatMap(({ deviceId }, n) => {
      const result = results[n]!;
      return result.outcome === 'claimed' && result.expired && result.expired.serverId !== serverId ? [{ deviceId, owner: result.expired.serverId }] : [];
    });
    if (stale.length > 0) {
      const pipeline = redis.pipeline();
      for (const { deviceId, owner } of stale) pipeline.srem(keys.owned(owner), deviceId);
      await pipeline.exec();
    }
    return results;
  };

  const expire: LeaseStore['expire'] = async (due) => {
    if (due.length === 0) return [];
    const pipeline = redis.pipeline();
    for (const { deviceId, holder } of due) {
      const previous = holder ? parseLeaseValue(holder) : null;
      queueLua(
        pipeline,
        scripts.expire,
        [keys.lease(deviceId), keys.holderDeadlines, keys.holders, keys.owned(previous?.serverId ?? '_none')],
        [deviceId, holder],
      );
    }
    const results = (await pipeline.exec()) ?? [];
    return results.map(([err, code]) => {
      if (err) throw err;
      return code === 1 ? 'expired' : code === 0 ? 'alive' : 'changed';
    });
  };

  return {
    async claim(deviceId, holder, ttlMs, { minToken = 0, viaPlacement = false } = {}) {
      const [result] = await claimMany([{ deviceId, minToken }], holder, ttlMs, { viaPlacement });
      return result!;
    },

    claimMany,

    queueRenew,

    async renew(holder, ttlMs, leases) {
      if (leases.length === 0) return [];
      const pipeline = redis.pipeline();
      const lostFrom = queueRenew(pipeline, holder, ttlMs, leases);
      return lostFrom((await pipeline.exec()) ?? []);
    },

    async release(deviceId, holder, token) {
      const released = await runLua<number>(
        redis,
        scripts.release,
        [keys.lease(deviceId), keys.holders, keys.owned(serverIdOf(holder))],
        [deviceId, leaseValue(holder, token)],
      );
      return released === 1;
    },

    async findDueHolders(limit) {
      return runLua<string[]>(redis, scripts.findDueHolders, [keys.holderDeadlines], [limit]);
    },

    async leasesOf(holder) {
      const flat = await runLua<string[]>(redis, scripts.listHolderLeases, [keys.owned(serverIdOf(holder)), keys.holders], [holder]);
      const out: Array<{ deviceId: string; holder: string }> = [];
      for (let i = 0; i < flat.length; i += 2) out.push({ deviceId: flat[i]!, holder: flat[i + 1]! });
      return out;
    },

    async forgetHolder(holder) {
      return (await runLua<number>(redis, scripts.forgetHolder, [keys.holderDeadlines], [holder])) === 1;
    },

    async expireOwn(deviceIds, holder) {
      if (deviceIds.length === 0) return [];
      const recorded = await redis.hmget(keys.holders, ...deviceIds);
      const mine = deviceIds.flatMap((deviceId, i) => {
        const value = recorded[i];
        const named = value ? parseLeaseValue(value) : null;
        return value && named && holderId(named.serverId, named.bootId) === holder ? [{ deviceId, holder: value }] : [];
      });
      const outcomes = await expire(mine);
      return mine.filter((_, i) => outcomes[i] === 'expired');
    },

    async findDuePlacements(limit) {
      const flat = await runLua<string[]>(redis, scripts.findDue, [keys.placements, keys.placementTargets], [limit]);
      const due: Array<{ deviceId: string; target: string }> = [];
      for (let i = 0; i < flat.length; i += 2) due.push({ deviceId: flat[i]!, target: flat[i + 1]! });
      return due;
    },

    async setWanted(deviceIds, wanted) {
      if (deviceIds.length === 0) return;
      if (wanted) await redis.sadd(keys.wanted, ...deviceIds);
      else await redis.srem(keys.wanted, ...deviceIds);
    },

    async cancelPlacement(deviceId) {
      await redis.multi().zrem(keys.placements, deviceId).hdel(keys.placementTargets, deviceId).exec();
    },

    expire,

    async place(deviceId, candidates, reservationMs, exclude = '') {
      const serverKeys = candidates.flatMap((id) => [keys.server(id), keys.owned(id), keys.reserved(id), keys.inbox(id)]);
      const [outcome, value] = await runLua<[string, string]>(
        redis,
        scripts.place,
        [keys.lease(deviceId), keys.placements, keys.placementTargets, keys.wanted, ...serverKeys],
        [deviceId, reservationMs, exclude, ...candidates],
      );
      if (outcome === 'placed') return { outcome, serverId: value };
      if (outcome === 'pending') return { outcome, serverId: value };
      if (outcome === 'unwanted') return { outcome };
      if (outcome === 'owned') {
        const holder = parseLeaseValue(value);
        if (!holder) throw new Error(`lease of ${deviceId} holds an unreadable value ${JSON.stringify(value)}`);
        return { outcome, ...holder };
      }
      return { outcome: 'none' };
    },

    async reassert(holder, ttlMs, held) {
      const serverId = serverIdOf(holder);
      const lost: LostLease[] = [];
      for (let start = 0; start < held.length; start += RENEW_CHUNK) {
        const chunk = held.slice(start, start + RENEW_CHUNK);
        const flat = await runLua<string[]>(
          redis,
          scripts.reassert,
          [keys.holderDeadlines, keys.holders, keys.owned(serverId), ...chunk.flatMap((l) => [keys.lease(l.deviceId), keys.fence(l.deviceId)])],
          [holder, ttlMs, ...chunk.flatMap((l) => [l.deviceId, l.token])],
        );
        const sent = new Map(chunk.map((l) => [l.deviceId, l.token]));
        for (let i = 0; i < flat.length; i += 2) lost.push({ deviceId: flat[i]!, token: sent.get(flat[i]!)!, holder: flat[i + 1] ? parseLeaseValue(flat[i + 1]!) : null });
      }
      return lost;
    },

    async takeOver(deadHolder, holder, ttlMs, deviceIds) {
      const taken: Array<{ deviceId: string; token: number; previous: LeaseHolder | null }> = [];
      for (let start = 0; start < deviceIds.length; start += RENEW_CHUNK) {
        const chunk = deviceIds.slice(start, start + RENEW_CHUNK);
        const flat = await runLua<Array<string | number>>(
          redis,
          scripts.takeOver,
          [keys.holderDeadlines, keys.holders, keys.owned(serverIdOf(holder)), keys.tokenFloor, keys.claimEmbargo, ...chunk.flatMap((d) => [keys.lease(d), keys.fence(d)])],
          [deadHolder, holder, ttlMs, ...chunk],
        );
        for (let i = 0; i < flat.length; i += 3) {
          taken.push({ deviceId: String(flat[i]), token: Number(flat[i + 1]), previous: parseLeaseValue(String(flat[i + 2])) });
        }
      }
      return taken;
    },

    queueRaiseTokenFloor(tx, floor) {
      queueLua(tx, scripts.raiseTokenFloor, [keys.tokenFloor], [floor]);
    },

    async seedFences(epochs) {
      if (epochs.length === 0) return 0;
      return runLua<number>(
        redis,
        scripts.seedFences,
        epochs.map((e) => keys.fence(e.deviceId)),
        epochs.map((e) => e.leaseEpoch),
      );
    },

    async setStatus(deviceId, holder, token, status, detail) {
      const written = await runLua<number>(
        redis,
        scripts.setStatus,
        [keys.lease(deviceId), keys.deviceStatus(deviceId)],
        [leaseValue(holder, token), status, detail ? JSON.stringify(detail) : '', Date.now()],
      );
      return written === 1;
    },

    async read(deviceId) {
      const [[getErr, value], [ttlErr, ttl]] = (await redis.multi().get(keys.lease(deviceId)).pttl(keys.lease(deviceId)).exec()) as [
        [Error | null, string | null],
        [Error | null, number],
      ];
      if (getErr) throw getErr;
      if (ttlErr) throw ttlErr;
      if (value === null) return null;
      const holder = parseLeaseValue(value);
      return holder ? { ...holder, ttlMs: ttl } : null;
    },

    async readMany(deviceIds) {
      const results = await execChunked(redis, deviceIds, (p, id) =>
        p.get(keys.lease(id)).pttl(keys.lease(id)).hmget(keys.deviceStatus(id), 'status', 'token').hget(keys.holders, id),
      );
      return deviceIds.map((deviceId, i): LeaseReading => {
        const value = results[i * 4]?.[1] as string | null;
        const ttlMs = Number(results[i * 4 + 1]?.[1] ?? -2);
        const [status, statusToken] = (results[i * 4 + 2]?.[1] ?? []) as Array<string | null>;
        const last = results[i * 4 + 3]?.[1] as string | null;
        // PTTL -2: the key expired between the two reads.
        const holder = value && ttlMs !== -2 ? parseLeaseValue(value) : null;
        return {
          deviceId,
          lease: holder ? { ...holder, ttlMs } : null,
          status: status ? { status, token: Number(statusToken) } : null,
          lastHolder: last ? parseLeaseValue(last) : null,
        };
      });
    },

    async indexedDevices() {
      const deviceIds = new Set<string>();
      let cursor = '0';
      do {
        const [next, page] = await redis.hscan(keys.holders, cursor, 'COUNT', 1000);
        cursor = next;
        for (let i = 0; i < page.length; i += 2) deviceIds.add(page[i]!);
      } while (cursor !== '0');
      return [...deviceIds];
    },

    async fenceOf(deviceId) {
      return Number((await redis.get(keys.fence(deviceId))) ?? 0);
    },
  };
}
