import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseStore, type LeaseStore } from '../../src/cluster/lease-store.js';
import { fairShares, participants, type ServerLoad } from '../../src/cluster/placement/load.js';
import { planRebalance } from '../../src/cluster/placement/rebalance.js';
import { createServerDirectory, type ServerDirectory } from '../../src/cluster/server-directory.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// One rule of load (cluster/placement/load.ts): the real placeDevice.lua, placing devices one by
// one, leaves a cluster that rebalance finds nothing to move in; and a skewed cluster that
// rebalance has settled is the one placement would have produced, priorities and all.

let t: TestRedis;

beforeAll(async () => {
  t = await useTestRedis();
});
afterAll(async () => {
  await t.cleanup();
});

interface ServerSpec {
  id: string;
  capacity: number;
  priority: number;
}

const CLUSTERS: Record<string, ServerSpec[]> = {
  'one priority, capacities 1:2:3': [
    { id: 'small', capacity: 100, priority: 0 },
    { id: 'medium', capacity: 200, priority: 0 },
    { id: 'large', capacity: 300, priority: 0 },
  ],
  'a preferred server that fills first': [
    { id: 'preferred', capacity: 60, priority: 10 },
    { id: 'spare-1', capacity: 200, priority: 0 },
    { id: 'spare-2', capacity: 100, priority: 0 },
  ],
};
const DEVICES = 180;

/** A cluster of advertised servers in a key prefix of its own, with the real lease store. */
async function cluster(name: string, specs: ServerSpec[]) {
  const keys: ClusterKeys = createClusterKeys(`${t.prefix}-${name.replace(/[^a-z0-9]/gi, '').slice(0, 12)}`);
  const leases: LeaseStore = createLeaseStore({ redis: t.redis, keys });
  const directory: ServerDirectory = createServerDirectory({ redis: t.redis, keys });
  for (const s of specs) {
    await t.redis.hset(keys.server(s.id), { capacity: s.capacity, priority: s.priority, draining: 0, accepting: 1, responseTimeMs: 0, heartbeatAt: Date.now() });
    await t.redis.sadd(keys.servers, s.id);
  }
  const devices = Array.from({ length: DEVICES }, (_, i) => `${name.length}-dev-${i}`);
  await leases.setWanted(devices, true);
  const ids = specs.map((s) => s.id);

  /** Places the device by placeDevice.lua and claims it for the target, as its inbox reader would. */
  const place = async (deviceId: string, exclude = '') => {
    const result = await leases.place(deviceId, ids, 60_000, exclude);
    if (result.outcome !== 'placed') throw new Error(`${deviceId}: ${result.outcome}`);
    await t.redis
      .multi()
      .zrem(keys.reserved(result.serverId), deviceId)
      .zrem(keys.placements, deviceId)
      .hdel(keys.placementTargets, deviceId)
      .sadd(keys.owned(result.serverId), deviceId)
      .exec();
  };
  const loads = async (): Promise<ServerLoad[]> => participants(await directory.read(ids));
  const held = async () => Object.fromEntries((await loads()).map((s) => [s.id, s.owned]));
  return { keys, devices, place, loads, held };
}

describe('one rule of load for placement and rebalance', () => {
  for (const [name, specs] of Object.entries(CLUSTERS)) {
    it(`${name}: what placement builds, rebalance leaves alone; what rebalance settles, placement would have built`, async () => {
      const placed = await cluster(`p ${name}`, specs);
      for (const deviceId of placed.devices) await placed.place(deviceId);
      expect(planRebalance(await placed.loads())).toEqual([]);
      const byPlacement = await placed.held();

      // The same devices all on the server placement likes least, then rebalanced round by round:
      // each release goes through placement, never back to the server that let it go.
      const skewed = await cluster(`r ${name}`, specs);
      const last = [...specs].sort((a, b) => a.priority - b.priority || a.capacity - b.capacity)[0]!.id;
      await t.redis.sadd(skewed.keys.owned(last), ...skewed.devices);
      let rounds = 0;
      for (let plan = planRebalance(await skewed.loads()); plan.length > 0; plan = planRebalance(await skewed.loads())) {
        expect(++rounds).toBeLessThan(60);
        for (const { serverId, release } of plan) {
          const released = await t.redis.spop(skewed.keys.owned(serverId), release);
          for (const deviceId of released) await skewed.place(deviceId, serverId);
        }
      }
      const byRebalance = await skewed.held();
      const shares = fairShares(await skewed.loads());
      for (const { id } of specs) {
        // Rebalance stops within its tolerance of the share (a device, or 5%); placement lands within a device of it.
        const tolerance = Math.max(1, 0.05 * shares.get(id)!) + 1;
        expect(Math.abs(byRebalance[id]! - byPlacement[id]!), `${id}: rebalance ${byRebalance[id]}, placement ${byPlacement[id]}`).toBeLessThanOrEqual(tolerance);
      }
    });
  }
});
