import { describe, expect, it } from 'vitest';
import { planRebalance } from '../../src/cluster/placement/rebalance.js';

describe('rebalance plan', () => {
  it('asks an overloaded server for about a tenth of its devices per round', () => {
    expect(
      planRebalance([
        { id: 'a', capacity: 500, owned: 300 },
        { id: 'b', capacity: 500, owned: 0 },
        { id: 'c', capacity: 500, owned: 0 },
      ]),
    ).toEqual([{ serverId: 'a', release: 30 }]);
  });

  it('never asks for more than the excess over the fair share, and tolerates 5%', () => {
    expect(
      planRebalance([
        { id: 'a', capacity: 100, owned: 107 },
        { id: 'b', capacity: 100, owned: 93 },
      ]),
    ).toEqual([{ serverId: 'a', release: 7 }]);
    expect(planRebalance([{ id: 'a', capacity: 100, owned: 104 }, { id: 'b', capacity: 100, owned: 96 }])).toEqual([]);
  });

  it('weighs the fair share by capacity', () => {
    expect(
      planRebalance([
        { id: 'big', capacity: 300, owned: 100 },
        { id: 'small', capacity: 100, owned: 100 },
      ]),
    ).toEqual([{ serverId: 'small', release: 10 }]);
    expect(planRebalance([{ id: 'big', capacity: 300, owned: 150 }, { id: 'small', capacity: 100, owned: 50 }])).toEqual([]);
  });

  it('leaves a balanced cluster, a lone server and an empty cluster alone', () => {
    expect(planRebalance([{ id: 'a', capacity: 10, owned: 5 }, { id: 'b', capacity: 10, owned: 5 }])).toEqual([]);
    expect(planRebalance([{ id: 'a', capacity: 10, owned: 101 }, { id: 'b', capacity: 10, owned: 99 }])).toEqual([]);
    expect(planRebalance([{ id: 'a', capacity: 10, owned: 9 }])).toEqual([]);
    expect(planRebalance([{ id: 'a', capacity: 10, owned: 0 }, { id: 'b', capacity: 10, owned: 0 }])).toEqual([]);
  });

  it('converges to within 10% of even in a bounded number of rounds', () => {
    const servers = [
      { id: 'a', capacity: 500, owned: 300 },
      { id: 'b', capacity: 500, owned: 0 },
      { id: 'c', capacity: 500, owned: 0 },
    ];
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
