import type { RedisClient as Redis } from '../../shared/redis.js';
import type { Logger } from '../../shared/logger.js';
import { createInbox } from '../inbox.js';
import type { ClusterKeys } from '../keys.js';
import type { SingletonRunner } from '../singleton.js';

// Rebalance: when a server joins or capacities change, overloaded servers hand a bounded share
// of their devices to the others, a round at a time. Planning is a singleton duty; the moving is
// done by each overloaded server itself (it releases its own leases, so no live lease is ever
// taken from anyone), and it only releases devices it has held for the minimum hold time.

/** Share of an overloaded server's devices released per round. */
export const REBALANCE_SHARE = 0.1;

export interface ServerLoad {
  id: string;
  capacity: number;
  owned: number;
}

/**
 * Each server's fair share is proportional to its capacity. A server above its share by more
 * than 5% (and at least one device) releases the excess, at most REBALANCE_SHARE of what it holds
 * (at least one device) per round.
 */
export function planRebalance(servers: readonly ServerLoad[]): Array<{ serverId: string; release: number }> {
  const total = servers.reduce((sum, s) => sum + s.owned, 0);
  const capacity = servers.reduce((sum, s) => sum + s.capacity, 0);
  if (servers.length < 2 || total === 0 || capacity === 0) return [];
  const plan: Array<{ serverId: string; release: number }> = [];
  for (const server of servers) {
    const fair = (total * server.capacity) / capacity;
    const excess = server.owned - fair;
    if (excess <= Math.max(1, fair * 0.05)) continue;
    const release = Math.max(1, Math.min(Math.floor(excess), Math.ceil(server.owned * REBALANCE_SHARE)));
    plan.push({ serverId: server.id, release });
  }
  return plan;
}

export interface RebalancerOptions {
  redis: Redis;
  keys: ClusterKeys;
  singleton: SingletonRunner;
  intervalMs: number;
  log: Logger;
}

export interface Rebalancer {
  round(): Promise<Array<{ serverId: string; release: number }> | null>;
  start(): void;
  stop(): void;
}

export function createRebalancer({ redis, keys, singleton, intervalMs, log }: RebalancerOptions): Rebalancer {
  let timer: NodeJS.Timeout | undefined;
  const inbox = createInbox({ redis, keys });

  const liveLoads = async (): Promise<ServerLoad[]> => {
    const ids = await redis.smembers(keys.servers);
    const pipeline = redis.pipeline();
    for (const id of ids) pipeline.hmget(keys.server(id), 'capacity', 'draining').scard(keys.owned(id));
    const results = (await pipeline.exec()) ?? [];
    const loads: ServerLoad[] = [];
    ids.forEach((id, i) => {
      const [capacity, draining] = (results[i * 2]?.[1] as [string | null, string | null]) ?? [null, null];
      // A server key that is gone (dead) or draining takes no part: its devices move by expiry or drain.
      if (capacity === null || draining === '1') return;
      loads.push({ id, capacity: Number(capacity), owned: Number(results[i * 2 + 1]?.[1] ?? 0) });
    });
    return loads;
  };

  const round = async () => {
    let plan: Array<{ serverId: string; release: number }> = [];
    const ran = await singleton.run(keys.singletonLock('rebalance'), intervalMs, async () => {
      plan = planRebalance(await liveLoads());
      for (const { serverId, release } of plan) {
        await inbox.send(serverId, { type: 'rebalance', count: release });
      }
    });
    if (!ran) return null;
    if (plan.length > 0) log.info({ plan }, 'rebalance: asked overloaded servers to release devices');
    return plan;
  };

  return {
    round,
    start() {
      timer = setInterval(() => {
        round().catch((err) => log.warn({ err }, 'rebalance round failed'));
      }, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
