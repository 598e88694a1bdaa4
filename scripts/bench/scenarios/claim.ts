import { INBOX_READ_COUNT } from '../../../src/cluster/coordinator.js';
import { createClusterKeys } from '../../../src/cluster/keys.js';
import { createLeaseStore } from '../../../src/cluster/lease-store.js';
import { useTestRedis } from '../../../harness/redis.js';
import { measured } from '../../../harness/bench/probe.js';
import { compared, formatNumber, median } from '../../../harness/bench/report.js';
import type { Scenario } from '../context.js';

// Devices claimed per second through the claim script as the coordinator calls it (one script
// call per inbox read, up to INBOX_READ_COUNT placements each, several reads' worth in flight on
// one connection), against raw pipelined `SET key value NX PX ttl` of as many keys on the same
// Redis. Single claims (one script call per device, as for a lone placement) are measured too.
// Rounds alternate between them, and each figure is the median of its rounds, so a burst of other
// work on the machine lands on every side.

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
    const single: Array<{ perSecond: number; cpuUs: number }> = [];
    const claimRound = (label: string, claimBatch: (ids: string[]) => Promise<number>) =>
      measured(t.redis, async () => {
        let ok = 0;
        for (let start = 0; start < claims; start += BATCH) {
          ok += await claimBatch(Array.from({ length: Math.min(BATCH, claims - start) }, (_, i) => `${label}-${start + i}`));
        }
        return ok;
      });
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

      const batched = await claimRound(`dev-${round}`, async (ids) => {
        const reads: string[][] = [];
        for (let i = 0; i < ids.length; i += INBOX_READ_COUNT) reads.push(ids.slice(i, i + INBOX_READ_COUNT));
        const results = await Promise.all(reads.map((read) => leases.claimMany(read.map((deviceId) => ({ deviceId })), serverId, TTL_MS)));
        return results.flat().filter((r) => r.outcome === 'claimed').length;
      });
      if (batched.result !== claims) throw new Error(`the claim script claimed ${batched.result} of ${claims} devices`);

      const lone = await claimRound(`one-${round}`, async (ids) => {
        const results = await Promise.all(ids.map((deviceId) => leases.claim(deviceId, serverId, TTL_MS)));
        return results.filter((r) => r.outcome === 'claimed').length;
      });
      if (lone.result !== claims) throw new Error(`single claims claimed ${lone.result} of ${claims} devices`);
      if (round === 0) continue;
      raw.push({ perSecond: (claims * 1000) / setNx.ms, cpuUs: (setNx.redisCpuS * 1e6) / claims });
      scripted.push({ perSecond: (claims * 1000) / batched.ms, cpuUs: (batched.redisCpuS * 1e6) / claims });
      single.push({ perSecond: (claims * 1000) / lone.ms, cpuUs: (lone.redisCpuS * 1e6) / claims });
      ctx.progress(
        `round ${round}/${rounds}: claim ${formatNumber(scripted.at(-1)!.perSecond)}/s, ` +
          `single claims ${formatNumber(single.at(-1)!.perSecond)}/s, SET NX PX ${formatNumber(raw.at(-1)!.perSecond)}/s`,
      );
    }

    const rawPerSecond = { name: 'raw pipelined SET NX PX', value: median(raw.map((r) => r.perSecond)) };
    const rawCpu = { name: 'per SET NX PX', value: median(raw.map((r) => r.cpuUs)) };
    const throughput = compared(
      `devices claimed per second (up to ${INBOX_READ_COUNT} per script call, as one inbox read brings them)`,
      median(scripted.map((r) => r.perSecond)),
      '/s',
      rawPerSecond,
      { text: 'ratio >= 0.3', met: (ratio) => ratio >= 0.3 },
    );
    const cpu = compared('Redis CPU per claim', median(scripted.map((r) => r.cpuUs)), 'µs', rawCpu);
    const lonePerSecond = compared('single claims per second (one script call each)', median(single.map((r) => r.perSecond)), '/s', rawPerSecond);
    const loneCpu = compared('Redis CPU per single claim', median(single.map((r) => r.cpuUs)), 'µs', rawCpu);
    if (throughput.met === false) {
      throughput.why =
        `a claim reads and writes six keys per device (lease, fence, deadline, holder, owned set, placement target) ` +
        `where the baseline is one SET; Redis spends ${formatNumber(cpu.ratio!)}x the CPU per claim.`;
    }
    return {
      parameters: { claims, rounds, batch: BATCH, perScriptCall: INBOX_READ_COUNT, figure: 'median of the rounds' },
      figures: [throughput, cpu, lonePerSecond, loneCpu],
    };
  },
};
