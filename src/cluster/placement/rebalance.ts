import type { Logger } from '../../shared/logger.js';
import type { Inbox } from '../inbox.js';
import type { ClusterKeys } from '../keys.js';
import type { ServerDirectory } from '../server-directory.js';
import type { SingletonRunner } from '../singleton.js';
import { fairShares, loadOf, participants, type ServerLoad } from './load.js';

// Rebalance: when a server joins or capacities change, overloaded servers hand a bounded share
// of their devices to the others, a round at a time. Planning is a singleton duty; the moving is
// done by each overloaded server itself (it releases its own leases, so no live lease is ever
// taken from anyone), and it only releases devices it has held for the minimum hold time. What
// "overloaded" means is the rule of load in load.ts, the one placement follows; a released
// device is placed by that rule, never back on the server that let it go.

/** Share of an overloaded server's devices released per round. */
export const REBALANCE_SHARE = 0.1;

/**
 * A server whose load is above its fair share (fairShares) by more than 5% (and more than one
 * device) releases the excess, at most REBALANCE_SHARE of what it holds (at least one device)
 * per round. Reserved placements count in its load but cannot be released by it.
 */
export function planRebalance(servers: readonly ServerLoad[]): Array<{ serverId: string; release: number }> {
  if (servers.length < 2) return [];
  const shares = fairShares(servers);
  const plan: Array<{ serverId: string; release: number }> = [];
  for (const server of servers) {
    const fair = shares.get(server.id) ?? 0;
    const excess = loadOf(server) - fair;
    if (excess <= Math.max(1, fair * 0.05) || server.owned === 0) continue;
    const release = Math.min(server.owned, Math.max(1, Math.min(Math.floor(excess), Math.ceil(server.owned * REBALANCE_SHARE))));
    plan.push({ serverId: server.id, release });
  }
  return plan;
}

export interface RebalancerOptions {
  keys: ClusterKeys;
  servers: ServerDirectory;
  inbox: Inbox;
  singleton: SingletonRunner;
  intervalMs: number;
  log: Logger;
}

export interface Rebalancer {
  round(): Promise<Array<{ serverId: string; release: number }> | null>;
  start(): void;
  stop(): void;
}

export function createRebalancer({ keys, servers, inbox, singleton, intervalMs, log }: RebalancerOptions): Rebalancer {
  let timer: NodeJS.Timeout | undefined;

  /** The servers that take part (a dead or draining one's devices move by expiry or drain). */
  const loads = async (): Promise<ServerLoad[]> => participants(await servers.read(await servers.announced()));

  const round = async () => {
    let plan: Array<{ serverId: string; release: number }> = [];
    const ran = await singleton.run(keys.singletonLock('rebalance'), intervalMs, async () => {
      plan = planRebalance(await loads());
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
