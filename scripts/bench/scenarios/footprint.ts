import { createClusterKeys } from '../../../src/cluster/keys.js';
import { createLeaseStore } from '../../../src/cluster/lease-store.js';
import { useTestRedis } from '../../../harness/redis.js';
import { residentBytes, redisUsedMemory, sleep } from '../../../harness/bench/probe.js';
import { compared, formatNumber, median } from '../../../harness/bench/report.js';
import { addConnected, startBenchCluster, startServers, warningsNote } from '../cluster.js';
import type { BenchContext, Scenario } from '../context.js';

// Memory: one server process holding 1,000 and then 10,000 devices on the simulated connector,
// against the same process holding none; Redis memory per held device (every key a device has,
// and its worker's connection); and Redis memory per bare lease (what the claim script writes)
// against a plain SET with PX.

const KIB = 1024;
const MIB = 1024 * 1024;

async function residentMedian(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(residentBytes(pid));
    await sleep(400);
  }
  return median(samples);
}

async function perLease(ctx: BenchContext, count: number): Promise<{ claim: number; set: number }> {
  const t = await useTestRedis(ctx.redisUrl, 'b-lease-mem-');
  ctx.defer(() => t.cleanup());
  const keys = createClusterKeys(t.prefix);
  const leases = createLeaseStore({ redis: t.redis, keys });
  await t.redis.multi().hset(keys.server('bench'), { capacity: count }).pexpire(keys.server('bench'), 10 * 60_000).exec();
  const grown = async (fill: (from: number, to: number) => Promise<unknown>) => {
    const before = await redisUsedMemory(t.redis);
    for (let start = 0; start < count; start += 1000) await fill(start, Math.min(count, start + 1000));
    return ((await redisUsedMemory(t.redis)) - before) / count;
  };
  const set = await grown(async (from, to) => {
    const pipeline = t.redis.pipeline();
    for (let i = from; i < to; i++) pipeline.set(keys.lease(`raw-${i}`), 'bench:1', 'PX', 10 * 60_000);
    await pipeline.exec();
  });
  const claim = await grown((from, to) => Promise.all(Array.from({ length: to - from }, (_, i) => leases.claim(`dev-${from + i}`, 'bench', 10 * 60_000))));
  return { claim, set };
}

/** Server processes' resident memory with no device, then holding `devices` between them. */
/** Long enough for a heartbeat, a store write and a keep-alive round after the last change. */
const settleMs = (ctx: BenchContext) => (ctx.quick ? 2000 : 5000);

async function hold(ctx: BenchContext, serverCount: number, deviceCount: number) {
  const cluster = await startBenchCluster(ctx, 'footprint');
  const ids = Array.from({ length: serverCount }, (_, i) => `fp-${i + 1}`);
  await startServers(cluster, ids);
  const pids = ids.map((id) => cluster.servers.get(id)!.child.pid!);
  const residentSum = async () => (await Promise.all(pids.map(residentMedian))).reduce((a, b) => a + b, 0);
  await sleep(settleMs(ctx));
  const idle = { rss: await residentSum(), redis: await redisUsedMemory(ctx.redis) };
  const started = Date.now();
  await addConnected(ctx, cluster, deviceCount, serverCount);
  const connectedInMs = Date.now() - started;
  await sleep(settleMs(ctx));
  const held = { rss: await residentSum(), redis: await redisUsedMemory(ctx.redis) };
  const warnings = warningsNote(cluster, `${deviceCount.toLocaleString('en-US')} devices`);
  await cluster.stop();
  return { idle, held, connectedInMs, warnings };
}

export const footprintScenario: Scenario = {
  id: 'footprint',
  title: 'Footprint',
  async run(ctx) {
    // One process holds 1,000 devices; 10,000 are shared by five (2,000 each): one process with
    // 10,000 is far past what a server is built for (SERVER_MAX_CAPACITY defaults to 500), and on
    // 2 cores it had not connected them after minutes.
    const runs = ctx.quick
      ? [{ servers: 1, devices: 200 }]
      : [
          { servers: 1, devices: 1000 },
          { servers: 5, devices: 10_000 },
        ];
    const leaseCount = ctx.quick ? 5000 : 50_000;
    ctx.output.parameters = { runs, settleMs: settleMs(ctx), leasesForMemoryPerLease: leaseCount, connector: 'simulated' };
    const { figures, notes } = ctx.output;
    // Per lease first: it is quick, and stands even if a large run fails.
    const lease = await perLease(ctx, leaseCount);
    figures.push(compared('Redis memory per lease (claim script)', lease.claim, 'B', { name: 'plain SET with PX', value: lease.set }));
    notes.push(
      'Redis memory per held device counts every key of the device (lease, fence, status, auth state, simulated socket, its BullMQ queue) ' +
        "and the client buffers of its worker's connection.",
    );
    for (const run of runs) {
      const { idle, held, connectedInMs, warnings } = await hold(ctx, run.servers, run.devices);
      const label = `${run.devices.toLocaleString('en-US')} devices on ${run.servers} server${run.servers > 1 ? 's' : ''}`;
      const perProcess = (bytes: number) => bytes / run.servers / MIB;
      figures.push(
        compared(`resident memory per server process, ${label}`, perProcess(held.rss), 'MiB', { name: 'the same process, no device', value: perProcess(idle.rss) }),
        { name: `resident memory per held device, ${label}`, value: (held.rss - idle.rss) / run.devices / KIB, unit: 'KiB' },
        { name: `Redis memory per held device, ${label}`, value: (held.redis - idle.redis) / run.devices / KIB, unit: 'KiB' },
      );
      notes.push(`${label}: created and connected (in waves of 250 per server) in ${formatNumber(connectedInMs / 1000)} s`, ...warnings);
      ctx.progress(`${label}: ${formatNumber(perProcess(held.rss))} MiB resident per process (${formatNumber(perProcess(idle.rss))} MiB with none)`);
    }

    return ctx.output;
  },
};
