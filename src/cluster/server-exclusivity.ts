import { randomBytes } from 'node:crypto';
import { Cluster, ReplyError } from 'ioredis';
import { monotonicNow, type MonotonicClock } from '../shared/clock.js';
import { WafleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { loadLuaScript, runLua } from '../shared/lua.js';
import type { RedisClient } from '../shared/redis.js';
import type { ClusterKeys } from './keys.js';

// One SERVER_ID, one process. Two hosts started from a copied `.env` would renew each other's
// leases and fight over every device, because a lease names only the server. So every process
// start gets a random boot id, carried in the name of each Redis connection it opens and in the
// server key its heartbeat writes, and a process refuses to start while another boot that is
// still alive holds its server id.
//
// Alive means: the boot's heartbeat (or start-up claim) has not expired, and Redis still lists a
// connection named for it. The connection is what tells a crash (pm2 restarting the process under
// the same id: the kernel closed its sockets, so start at once and take its place) from a second
// process somewhere else.
//
// Two processes started at the same moment would both find no heartbeat, so a starting process
// first claims the id (`serverClaim`, one TTL, atomically with the check) and claims it again
// just before its first heartbeat. Left open: Redis losing its data (both keys gone) while a
// second process starts, and a live process whose connections are all down for longer than the
// re-check (Redis unreachable from its host for seconds); its heartbeat is then failing too.

const claimScript = loadLuaScript(new URL('./lua/', import.meta.url), 'claimServerId-2.lua');

/** 12 hex characters: random per process start, and safe in CLIENT SETNAME (no spaces). */
export function createBootId(): string {
  return randomBytes(6).toString('hex');
}
const BOOT_ID = /^[0-9a-f]{12}$/;

/**
 * `'unknown'`: Redis cannot tell (it refuses CLIENT LIST, as some managed Redis services do, or
 * drops connection names), so the caller has to fall back to the heartbeat's TTL.
 */
export type BootLiveness = boolean | 'unknown';

/**
 * Whether any connection to Redis still carries `bootId` in its name (`wafleet:<serverId>:<bootId>`
 * and its `:inbox`, `:events`... duplicates). One is enough: BullMQ renames the connections it
 * makes for its workers, but the process's own connections keep their names, and ioredis sets the
 * name again on every reconnect. A process that crashed or was killed has none left: Redis drops a
 * connection as soon as the kernel closes its socket.
 *
 * Under Redis Cluster every master is asked: ioredis connects to a master when it first sends it
 * a command, so the process's connections are on the master of wafleet's one slot, and on the
 * one before it if a failover moved the slot. CLIENT LIST costs one line per client (a server
 * opens one per device it runs), so this is for start-up and crash takeover, never for a loop.
 *
 * A Redis that answers CLIENT LIST with an error (unknown command, NOPERM, renamed) gives
 * `'unknown'`, and so does one that lists this client without the name it was given (names not
 * applied). A connection failure is thrown: Redis unreachable proves nothing about the other boot.
 */
export async function isBootAlive(redis: RedisClient, bootId: string): Promise<BootLiveness> {
  // An id in another format (written before boot ids were in connection names) is never found.
  if (!BOOT_ID.test(bootId)) return 'unknown';
  const ownName = redis instanceof Cluster ? redis.options.redisOptions?.connectionName : redis.options.connectionName;
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  let refused = false;
  let sawOwnName = !ownName;
  for (const node of nodes) {
    let listing: string;
    try {
      listing = String(await node.client('LIST'));
    } catch (err) {
      if (!(err instanceof ReplyError)) throw err;
      refused = true;
      continue;
    }
    for (const name of clientNames(listing)) {
      if (name.split(':').includes(bootId)) return true;
      if (name === ownName) sawOwnName = true;
    }
  }
  return refused || !sawOwnName ? 'unknown' : false;
}

function clientNames(listing: string): string[] {
  const names: string[] = [];
  for (const line of listing.split('\n')) {
    const name = / name=(\S+)/.exec(` ${line}`)?.[1];
    if (name) names.push(name);
  }
  return names;
}

/** Another boot that holds (or held) this server id. */
export interface OtherBoot {
  bootId: string;
  url: string | null;
  /** Since its last heartbeat, by the wall clocks of both hosts; null: still starting, no heartbeat yet. */
  heartbeatAgeMs: number | null;
}

/** A live process already runs (or is starting) under this server id. */
export class ServerIdInUseError extends WafleetError {
  constructor(
    readonly serverId: string,
    readonly other: OtherBoot,
  ) {
    const where = `at ${other.url ?? 'an unknown URL'} (boot ${other.bootId}, ${
      other.heartbeatAgeMs === null ? 'no heartbeat yet' : `last heartbeat ${(other.heartbeatAgeMs / 1000).toFixed(1)} s ago`
    })`;
    super(
      'server_id_in_use',
      `SERVER_ID "${serverId}" is already in use by a ${other.heartbeatAgeMs === null ? 'server starting' : 'live server'} ${where}. ` +
        'Two processes with one SERVER_ID would fight over every device: give this one its own SERVER_ID.',
    );
  }
}

export interface SoleServerOptions {
  redis: RedisClient;
  keys: ClusterKeys;
  serverId: string;
  bootId: string;
  /** This server's URL, shown to a process refused because of this one. */
  url: string;
  ttlMs: number;
  log: Logger;
  clock?: MonotonicClock;
  /** How often the TTL fallback re-reads the other boot's keys; TTL/10 by default. */
  pollMs?: number;
  /**
   * A boot with no connection is looked for again after this long before it is taken as dead:
   * a live process whose connections dropped (a network blip, a Redis restart) reconnects within
   * ioredis's first retry (200 ms). Default 500 ms.
   */
  recheckMs?: number;
}

export interface SoleServer {
  /**
   * The boot that held this server id until it died (crashed; no connection left), whose leases
   * this boot may take over; null when nobody held the id.
   */
  readonly predecessor: OtherBoot | null;
  /**
   * Claims the id again, right before the first heartbeat: the start-up claim lasts one TTL, and a
   * start that took longer may have let another process claim it meanwhile. Throws
   * ServerIdInUseError when a live one did.
   */
  confirm(): Promise<void>;
}

type ClaimReply = ['beating'] | ['claimed'] | ['held', string];

/** After this many boots found dead or gone in one start, something keeps starting under the id. */
const MAX_ROUNDS = 5;

/**
 * Claims the server id for this boot for one TTL, or throws ServerIdInUseError when a live boot
 * holds it. Call before anything acts under the id (the store's registration, the coordinator's
 * inbox), then `confirm()` just before the first heartbeat, which holds the id from then on.
 */
export async function assertSoleServer(options: SoleServerOptions): Promise<SoleServer> {
  const { redis, keys, serverId, bootId, url, ttlMs, log } = options;
  const clock = options.clock ?? monotonicNow;
  const pollMs = options.pollMs ?? Math.max(50, Math.round(ttlMs / 10));
  const recheckMs = options.recheckMs ?? 500;
  const serverKey = keys.server(serverId);
  const claimKey = keys.serverClaim(serverId);
  const dead = new Set<string>();
  const claim = () => runLua<ClaimReply>(redis, claimScript, [serverKey, claimKey], [bootId, url, ttlMs, ...dead]);
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  const describe = async (other: string): Promise<OtherBoot | null> => {
    const [server, claimed] = await Promise.all([redis.hmget(serverKey, 'bootId', 'url', 'heartbeatAt'), redis.hmget(claimKey, 'bootId', 'url')]);
    if (server[0] === other) return { bootId: other, url: server[1] ?? null, heartbeatAgeMs: server[2] ? Math.max(0, Date.now() - Number(server[2])) : 0 };
    if (claimed[0] === other) return { bootId: other, url: claimed[1] ?? null, heartbeatAgeMs: null };
    return null;
  };

  const liveness = async (other: string): Promise<BootLiveness> => {
    const first = await isBootAlive(redis, other);
    if (first !== false) return first;
    await sleep(recheckMs);
    return isBootAlive(redis, other);
  };

  // Without CLIENT LIST the other boot is taken as alive while its keys keep being refreshed, and
  // as dead once they expire: its heartbeat (or claim) lives one TTL after its last renewal.
  const outlast = async (other: OtherBoot): Promise<'gone' | 'alive'> => {
    const deadline = clock() + ttlMs + Math.max(1000, ttlMs / 5);
    let lastBeat: string | null = null;
    let lastClaimTtl = Infinity;
    for (let first = true; ; first = false) {
      const [server, claimed, claimTtl] = await Promise.all([
        redis.hmget(serverKey, 'bootId', 'heartbeatAt'),
        redis.hget(claimKey, 'bootId'),
        redis.pttl(claimKey),
      ]);
      const beating = server[0] === other.bootId;
      const starting = claimed === other.bootId;
      if (!beating && !starting) return 'gone';
      if (!first && beating && server[1] !== lastBeat) return 'alive';
      if (starting && claimTtl > lastClaimTtl) return 'alive';
      lastBeat = beating ? (server[1] ?? null) : null;
      lastClaimTtl = starting ? claimTtl : Infinity;
      if (clock() > deadline) return 'alive';
      await sleep(pollMs);
    }
  };

  let predecessor: OtherBoot | null = null;
  let warnedUnknown = false;
  const settle = async (): Promise<void> => {
    for (let round = 1; ; round++) {
      const reply = await claim();
      if (reply[0] !== 'held') return;
      const other = await describe(reply[1]);
      if (round > MAX_ROUNDS) throw new ServerIdInUseError(serverId, other ?? { bootId: reply[1], url: null, heartbeatAgeMs: null });
      if (!other) continue; // its keys expired or were removed between the two reads

      const alive = await liveness(other.bootId);
      if (alive === true) throw new ServerIdInUseError(serverId, (await describe(other.bootId)) ?? other);
      if (alive === false) {
        log.info(
          { previousBootId: other.bootId, url: other.url, heartbeatAgeMs: other.heartbeatAgeMs },
          `previous boot ${other.bootId} of this server id has no connection left in Redis: taken as dead`,
        );
        dead.add(other.bootId);
        // Only a boot that heartbeated can have held leases; one that died while starting held none.
        if (other.heartbeatAgeMs !== null) predecessor ??= other;
        continue;
      }
      if (!warnedUnknown) {
        log.warn(
          { otherBootId: other.bootId, url: other.url, ttlMs },
          'Redis does not list its clients (CLIENT LIST refused or names not applied): cannot tell whether the other boot of this server id is alive; falling back to its heartbeat TTL',
        );
        warnedUnknown = true;
      }
      if ((await outlast(other)) === 'alive') throw new ServerIdInUseError(serverId, (await describe(other.bootId)) ?? other);
    }
  };

  await settle();
  return {
    get predecessor() {
      return predecessor;
    },
    confirm: settle,
  };
}
