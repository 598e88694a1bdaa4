import type { LiveAdvert, ServerLiveState } from '../server-directory.js';

// The one rule of load. Placement (placeDevice.lua: one device, atomically) and rebalance
// (planRebalance: the whole cluster, a round at a time) both follow it, so neither undoes what
// the other did:
//
// 1. A server takes part while it is live (its advert has not expired), accepts placements (not
//    self-fenced, inbox reader alive), is not draining and has a capacity above 0.
// 2. Its load is the devices it owns plus the placements reserved on it and not yet claimed.
// 3. Devices go to the highest priority first: a server of lower priority gets devices only
//    while every server above it is full (load = capacity).
// 4. Among servers of one priority, load follows capacity: they hold the same load/capacity.
//    (Placement then breaks ties by the lower response time, then the server id.)
//
// placeDevice.lua applies 1–4 to one device: of the servers below capacity, the highest
// priority, then the lowest load/capacity. fairShares below is where that choice, repeated for
// every device, leaves a cluster; rebalance moves devices towards it.

export interface ServerLoad {
  id: string;
  capacity: number;
  priority: number;
  /** Devices whose lease it holds. */
  owned: number;
  /** Placements reserved on it and not claimed yet. */
  reserved: number;
}

/** Rule 1, read off a server's advert. */
export function takesPart(advert: LiveAdvert | null): advert is LiveAdvert & { capacity: number } {
  return advert !== null && advert.accepting && !advert.draining && (advert.capacity ?? 0) > 0;
}

/** The servers that take part, with their loads, from what the server directory read. */
export function participants(states: readonly ServerLiveState[]): ServerLoad[] {
  return states.flatMap(({ id, advert, leases, reserved }) =>
    takesPart(advert) ? [{ id, capacity: advert.capacity, priority: advert.priority ?? 0, owned: leases, reserved }] : [],
  );
}

/** Rule 2. */
export const loadOf = (server: ServerLoad): number => server.owned + server.reserved;

/**
 * How many of the cluster's devices (owned and reserved, all servers together) each server should
 * hold under rules 3 and 4: the priorities filled from the highest, each taking at most its
 * capacity, split within a priority in proportion to capacity. Devices beyond the cluster's whole
 * capacity are spread in proportion to capacity too (nobody can take them, so nobody should move).
 * Shares are fractions; a server within a device of its share is where placement would leave it.
 */
export function fairShares(servers: readonly ServerLoad[]): Map<string, number> {
  const shares = new Map<string, number>(servers.map((s) => [s.id, 0]));
  let unassigned = servers.reduce((sum, s) => sum + loadOf(s), 0);
  const priorities = [...new Set(servers.map((s) => s.priority))].sort((a, b) => b - a);
  for (const priority of priorities) {
    if (unassigned <= 0) break;
    const tier = servers.filter((s) => s.priority === priority);
    const capacity = tier.reduce((sum, s) => sum + s.capacity, 0);
    if (capacity <= 0) continue;
    const taken = Math.min(unassigned, capacity);
    for (const server of tier) shares.set(server.id, (taken * server.capacity) / capacity);
    unassigned -= taken;
  }
  const capacity = servers.reduce((sum, s) => sum + s.capacity, 0);
  if (unassigned > 0 && capacity > 0) {
    for (const server of servers) shares.set(server.id, shares.get(server.id)! + (unassigned * server.capacity) / capacity);
  }
  return shares;
}
