import { sleep } from '../../../harness/bench/probe.js';
import { compared, formatNumber, percentile } from '../../../harness/bench/report.js';
import { addConnected, BENCH_SERVER_ENV, connectedAtOn, startBenchCluster, startServers, waitAllConnected, warningsNote } from '../cluster.js';
import type { Scenario } from '../context.js';

// A server holding every device gets SIGTERM (a deploy): time from the signal until each device is
// connected on one of the two other servers. The yardstick is the simulated connect latency, the
// least a handover can take (the next owner opens a fresh socket).

export const drainScenario: Scenario = {
  id: 'drain',
  title: 'Drain',
  async run(ctx) {
    const size = ctx.quick ? 200 : 1000;
    const latencyMs = Number(BENCH_SERVER_ENV.SIM_CONNECT_LATENCY_MS);
    const cluster = await startBenchCluster(ctx, 'drain');
    await startServers(cluster, ['dr-1']);
    const devices = await addConnected(ctx, cluster, size, 1);
    await startServers(cluster, ['dr-2', 'dr-3']);
    // Both newcomers have heartbeated (they answered /health after their first beat); let the
    // burst of first connections settle before the signal.
    await sleep(ctx.quick ? 1000 : 3000);

    ctx.progress(`${size} devices connected on dr-1; SIGTERM dr-1`);
    const victim = cluster.servers.get('dr-1')!;
    const signalledAt = Date.now();
    victim.signal('SIGTERM');
    const exited = victim.exited.then((code) => ({ code, afterMs: Date.now() - signalledAt }));
    const at = await connectedAtOn(cluster, devices, ['dr-2', 'dr-3'], 120_000);
    await waitAllConnected(ctx, cluster, devices, 10_000, ['dr-2', 'dr-3']);
    const { code, afterMs } = await exited;
    const conflicts = await cluster.conflicts();
    const pairings = Number((await cluster.redis.redis.hvals(cluster.keys.simPairings)).reduce((n, v) => n + Number(v), 0));
    const warnings = warningsNote(cluster, 'drain', ['dr-1']);
    await cluster.stop();

    const delays = [...at.values()].map((t) => t - signalledAt).sort((a, b) => a - b);
    const latency = { name: 'simulated connect latency', value: latencyMs };
    const all = compared(`all ${size.toLocaleString('en-US')} devices connected elsewhere`, delays.at(-1)!, 'ms', latency, {
      text: `< 2,000 ms + latency (${(2000 + latencyMs).toLocaleString('en-US')} ms)`,
      met: (_, value) => value < 2000 + latencyMs,
    });
    if (all.met === false) {
      all.why =
        `the first device was connected elsewhere ${formatNumber(delays[0]!)} ms after the signal and the last ${formatNumber(delays.at(-1)!)} ms: ` +
        `the draining server hands devices over in batches of 100 (stop the socket, release, place), and the two others claim and connect ` +
        `each one with its own BullMQ worker connection, all on shared cores.`;
    }
    return {
      parameters: { devices: size, servers: 3, simConnectLatencyMs: latencyMs, drainBatch: 100 },
      figures: [compared('p50 signal to connected elsewhere', percentile(delays, 50), 'ms', latency), all],
      notes: [
        `dr-1 exited with ${code} ${formatNumber(afterMs)} ms after SIGTERM; ${conflicts} conflicts; ` +
          `${pairings - size} devices needed a new QR (should be 0: sessions move with the device)`,
        ...warnings,
      ],
    };
  },
};
