import { createClusterKeys } from '../../../src/cluster/keys.js';
import { createLeaseStore } from '../../../src/cluster/lease-store.js';
import { useTestRedis } from '../../../test/helpers/redis.js';
import type { Scenario } from '../context.js';
import { measured } from '../probe.js';
import { compared, formatNumber, median } from '../report.js';

// Devices claimed per second through the claim script (LeaseStore.claim, as the coordinator
// calls it: many claims in flight at once on one connection), against raw pipelined
// `SET key value NX PX ttl` of as many keys on the same Redis. Rounds alternate between the two,
// and each figure is the median of its rounds, so a burst of other work on the machine lands on
// both sides.

const BATCH = 1000;
const TTL_MS = 60_000;

export const claimScenario: Scenario = {
  id: 'claim',
  title: 'Claim throughput',
  async run(ctx) {
    const claims = ctx.quick ? 5000 : 50_000;
    const rounds = 3;
    const t = await useTestRedis(ctx.redisUrl, 'b-claim-');
    ctx.defer(() => t.cleanup());
    const keys = createClusterKeys(t.prefix);
    const leases = createLeaseStore({ redis: t.redis, keys });
    const serverId = 'bench-claimer';
    // A claim needs its server to be live (the server key a heartbeat keeps).
    await t.redis.multi().hset(keys.server(serverId), { capacity: claims }).pexpire(keys.server(serverId), 10 * 60_000).exec();

    const raw: Array<{ perSecond: number; cpuUs: number }> = [];
    const scripted: Array<{ perSecond: number; cpuUs: number }> = [];
    // Round 0 warms up (script loading, the JIT, Redis's allocator) and is not counted.
    for (let round = 0; round <= rounds; round++) {
      const setNx = await measured(t.redis, async () => {
        let set = 0;
        for (let start = 0; start < claims; start += BATCH) {
          const pipeline = t.redis.pipeline();
          for (let i = start; i < Math.min(claims, start + BATCH); i++) pipeline.set(keys.lease(`raw-${round}-${i}`), `${serverId}:1`, 'PX', TTL_MS, 'NX');
          for (const [err, reply] of (await pipeline.exec()) ?? []) if (!err && reply === 'OK') set += 1;
        }
        return set;
      });
      if (setNx.result !== claims) throw new Error(`raw SET NX PX set ${setNx.result} of ${claims} keys`);
      if (round > 0) raw.push({ perSecond: (claims * 1000) / setNx.ms, cpuUs: (setNx.redisCpuS * 1e6) / claims });

      const claimed = await measured(t.redis, async () => {
        let ok = 0;
        for (let start = 0; start < claims; start += BATCH) {
          const batch = Array.from({ length: Math.min(BATCH, claims - start) }, (_, i) => `dev-${round}-${start + i}`);
          const results = await Promise.all(batch.map((deviceId) => leases.claim(deviceId, serverId, TTL_MS)));
          ok += results.filter((r) => r.outcome === 'claimed').length;
        }
        return ok;
      });
      if (claimed.result !== claims) throw new Error(`the claim script claimed ${claimed.result} of ${claims} devices`);
      if (round === 0) continue;
      scripted.push({ perSecond: (claims * 1000) / claimed.ms, cpuUs: (claimed.redisCpuS * 1e6) / claims });
      ctx.progress(`round ${round}/${rounds}: claim ${formatNumber(scripted.at(-1)!.perSecond)}/s, SET NX PX ${formatNumber(raw.at(-1)!.perSecond)}/s`);
    }

    const throughput = compared(
      'devices claimed per second',
      median(scripted.map((r) => r.perSecond)),
      '/s',
      { name: 'raw pipelined SET NX PX', value: median(raw.map((r) => r.perSecond)) },
      { text: 'ratio >= 0.3', met: (ratio) => ratio >= 0.3 },
    );
    const cpu = compared('Redis CPU per claim', median(scripted.map((r) => r.cpuUs)), 'µs', {
      name: 'per SET NX PX',
      value: median(raw.map((r) => r.cpuUs)),
    });
    if (throughput.met === false) {
      throughput.why =
        `a claim is one script of 12 Redis calls over 10 keys (lease, fence, deadline, holder, owned set, reservation) ` +
        `where the baseline is one SET; Redis spends ${formatNumber(cpu.ratio!)}x the CPU per claim.`;
    }
    return {
      parameters: { claims, rounds, batch: BATCH, figure: 'median of the rounds' },
      figures: [throughput, cpu],
    };
  },
};
