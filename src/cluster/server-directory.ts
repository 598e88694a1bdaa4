import { execChunked, type RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from './keys.js';

// The servers as Redis knows them, for readers outside the cluster protocol (the API, the
// cluster page): each server's advert (the hash its heartbeat refreshes, with a TTL), the leases
// it owns and the capacity it has reserved for placements. The heartbeat writes all of it.

/** What a heartbeating server advertises (heartbeat.ts ServerAdvert, as Redis returns it). */
export interface LiveAdvert {
  heartbeatAt: number;
  draining: boolean;
  /** Whether placements may pick it (Coordinator.accepting); as placeDevice.lua reads it, only "0" refuses. */
  accepting: boolean;
  url: string | null;
  region: string | null;
  capacity: number | null;
  priority: number | null;
  startedAt: number | null;
  responseTimeMs: number | null;
}

export interface ServerLiveState {
  id: string;
  /** Null once the advert's key expired (the server died or lost Redis) or the server left. */
  advert: LiveAdvert | null;
  /** Leases it owns (its owned set). */
  leases: number;
  /** Placements reserved on it and not yet claimed. */
  reserved: number;
}

export interface ServerDirectory {
  /** Servers that announced themselves and have not left cleanly (alive or not). */
  announced(): Promise<string[]>;
  read(serverIds: readonly string[]): Promise<ServerLiveState[]>;
}

const numberOrNull = (value: string | undefined): number | null => {
  if (value === undefined || value === '') return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
};

function parseAdvert(fields: Record<string, string>): LiveAdvert | null {
  const heartbeatAt = numberOrNull(fields.heartbeatAt);
  // Every heartbeat writes heartbeatAt; a hash without it is no advert.
  if (heartbeatAt === null) return null;
  return {
    heartbeatAt,
    draining: fields.draining === '1',
    accepting: fields.accepting !== '0',
    url: fields.url ?? null,
    region: fields.region ?? null,
    capacity: numberOrNull(fields.capacity),
    priority: numberOrNull(fields.priority),
    startedAt: numberOrNull(fields.startedAt),
    responseTimeMs: numberOrNull(fields.responseTimeMs),
  };
}

export function createServerDirectory({ redis, keys }: { redis: Redis; keys: ClusterKeys }): ServerDirectory {
  return {
    announced: () => redis.smembers(keys.servers),
    async read(serverIds) {
      const results = await execChunked(redis, serverIds, (p, id) => p.hgetall(keys.server(id)).scard(keys.owned(id)).zcard(keys.reserved(id)));
      return serverIds.map((id, i) => ({
        id,
        advert: parseAdvert((results[i * 3]?.[1] ?? {}) as Record<string, string>),
        leases: Number(results[i * 3 + 1]?.[1] ?? 0),
        reserved: Number(results[i * 3 + 2]?.[1] ?? 0),
      }));
    },
  };
}
