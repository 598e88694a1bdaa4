import { describe, expect, it } from 'vitest';
import type { ServerLoad } from '../../src/cluster/placement/load.js';
import { planRebalance } from '../../src/cluster/placement/rebalance.js';

const server = (id: string, capacity: number, owned: number, more: Partial<ServerLoad> = {}): ServerLoad => ({ id, capacity, owned, priority: 0, reserved: 0, ...more });

describe('rebalance plan', () => {
  it('asks an overloaded server for about a tenth of its devices per round', () => {
    expect(
      planRebalance([
        server('a', 500, 300),
        server('b', 500, 0),
        server('c', 500, 0),
      ]),
    ).toEqual([{ serverId: 'a', release: 30 }]);
  });

  it('never asks for more than the excess over the fair share, and tolerates 5%', () => {
    expect(
      planRebalance([
        server('a', 100, 107),
        server('b', 100, 93),
      ]),
    ).toEqual([{ serverId: 'a', release: 7 }]);
    expect(planRebalance([server('a', 100, 104), server('b', 100, 96)])).toEqual([]);
  });

  it('weighs the fair share by capacity', () => {
    expect(
      planRebalance([
        server('big', 300, 100),
        server('small', 100, 100),
      ]),
    ).toEqual([{ serverId: 'small', release: 10 }]);
    expect(planRebalance([server('big', 300, 150), server('small', 100, 50)])).toEqual([]);
  });

  it('leaves a balanced cluster, a lone server and an empty cluster alone', () => {
    expect(planRebalance([server('a', 10, 5), server('b', 10, 5)])).toEqual([]);
    expect(planRebalance([server('a', 10, 101), server('b', 10, 99)])).toEqual([]);
    expect(planRebalance([server('a', 10, 9)])).toEqual([]);
    expect(planRebalance([server('a', 10, 0), server('b', 10, 0)])).toEqual([]);
  });

  it('counts reserved placements in the load, though only owned devices are released', () => {
    expect(planRebalance([server('a', 100, 50, { reserved: 30 }), server('b', 100, 50)])).toEqual([{ serverId: 'a', release: 5 }]);
    expect(planRebalance([server('a', 100, 2, { reserved: 60 }), server('b', 100, 2)])).toEqual([{ serverId: 'a', release: 1 }]);
  });

  it('fills the higher priority first: a lower one releases while a higher one has room, and keeps what overflows', () => {
    expect(planRebalance([server('high', 100, 40, { priority: 10 }), server('low', 100, 40)])).toEqual([{ serverId: 'low', release: 4 }]);
    // 150 devices: the high-priority server is full at 100; the other 50 belong on the low one.
    expect(planRebalance([server('high', 100, 100, { priority: 10 }), server('low', 100, 50)])).toEqual([]);
    expect(planRebalance([server('high', 100, 90, { priority: 10 }), server('low', 100, 60)])).toEqual([{ serverId: 'low', release: 6 }]);
  });

  it('converges to within 10% of even in a bounded number of rounds', () => {
    const servers = [server('a', 500, 300), server('b', 500, 0), server('c', 500, 0)];
    let rounds = 0;
    for (let plan = planRebalance(servers); plan.length > 0 && rounds < 50; plan = planRebalance(servers), rounds++) {
      for (const { serverId, release } of plan) {
        const from = servers.find((s) => s.id === serverId)!;
        from.owned -= release;
        // Placement sends each released device to the least loaded other server.
        for (let i = 0; i < release; i++) servers.filter((s) => s !== from).sort((x, y) => x.owned - y.owned)[0]!.owned += 1;
      }
    }
    expect(rounds).toBeLessThan(20);
    for (const s of servers) expect(Math.abs(s.owned - 100)).toBeLessThanOrEqual(10);
  });
});
