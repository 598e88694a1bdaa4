import type { TestCluster } from '../../../harness/cluster.js';
import { compared, formatNumber, percentile } from '../../../harness/bench/report.js';
import { addConnected, BENCH_SERVER_ENV, startBenchCluster, startServers, warningsNote } from '../cluster.js';
import type { BenchContext, Scenario } from '../context.js';
import { bareQueue, DEPTH, flowOf, inLines, waitFor, type Flow } from '../load.js';

// Outbound messages end to end: posted to the HTTP API of three real servers (any server accepts
// any device's message), queued on the device's BullMQ queue, sent by the device's owner through
// the simulated WhatsApp. Against bare BullMQ on the same Redis: one queue, one worker doing
// nothing, fed in the same pattern (every device at once, a few of its messages in flight).

const KEY = BENCH_SERVER_ENV.INTERNAL_API_KEY!;
const SERVER_ENV = {
  // Rate limits off (as far as the schema allows): the figure is the pipeline, not the pacing.
  MESSAGE_RATE_PER_MINUTE: '6000',
  RATE_LIMIT_PER_MINUTE: '100000000',
  RATE_LIMIT_IP_PER_MINUTE: '100000000',
};

/** Messages: in = accepted, out = sent; and those delivered more than once. */
type MessageFlow = Flow & { duplicates: number };

async function bareBullmq(ctx: BenchContext, lines: number, perDevice: number): Promise<MessageFlow> {
  const processedAt = new Map<string, number>();
  const queue = await bareQueue(ctx, 'bullmq', async (job) => void processedAt.set(job.id!, Date.now()), lines);
  const addedAt = new Map<string, number>();
  const run = async (round: string, per: number) => {
    await inLines(lines, per, async (line, i) => {
      const jobId = `${round}-${line}-${i}`;
      addedAt.set(jobId, Date.now());
      await queue.add('send', { line, i }, { jobId, removeOnComplete: true });
    });
    const expected = addedAt.size;
    await waitFor(() => processedAt.size >= expected, 60_000, () => `bare BullMQ processed ${processedAt.size}/${expected}`);
  };
  await run('warm', 1);
  addedAt.clear();
  processedAt.clear();
  await run('run', perDevice);
  return { ...flowOf([...addedAt].map(([id, start]) => ({ start, end: processedAt.get(id)! }))), duplicates: 0 };
}

async function wafleetMessages(cluster: TestCluster, devices: string[], perDevice: number, ports: number[], round: string): Promise<MessageFlow> {
  const accepted = new Map<string, string>(); // text -> message id
  await inLines(devices.length, perDevice, async (d, i) => {
    const text = `${round}-${d}-${i}`;
    const port = ports[(d + i) % ports.length]!;
    const res = await fetch(`http://127.0.0.1:${port}/api/devices/${devices[d]}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: '4915112345678', type: 'text', text }),
    });
    if (res.status !== 202) throw new Error(`POST message answered ${res.status}: ${await res.text()}`);
    accepted.set(text, ((await res.json()) as { id: string }).id);
  });
  const logs = async () =>
    (await Promise.all(devices.map((d) => cluster.redis.redis.lrange(cluster.keys.simLog(d), 0, -1))))
      .flat()
      .map((line) => JSON.parse(line) as { text: string; deliveredAt: number })
      .filter((entry) => entry.text.startsWith(`${round}-`));
  await waitFor(async () => (await logs()).length >= accepted.size, 120_000, async () => `${(await logs()).length}/${accepted.size} messages sent`);
  const sent = await logs();
  const pipeline = cluster.redis.redis.pipeline();
  for (const entry of sent) pipeline.hget(cluster.keys.message(accepted.get(entry.text)!), 'acceptedAt');
  const acceptedAt = ((await pipeline.exec()) ?? []).map(([, v]) => Number(v));
  // Both ends by Redis's clock: accepted (the record) and delivered (the simulated WhatsApp's log).
  return {
    ...flowOf(sent.map((entry, i) => ({ start: acceptedAt[i]!, end: entry.deliveredAt }))),
    duplicates: sent.length - new Set(sent.map((entry) => entry.text)).size,
  };
}

export const messagesScenario: Scenario = {
  id: 'messages',
  title: 'Message pipeline',
  async run(ctx) {
    const deviceCount = ctx.quick ? 30 : 100;
    const perDevice = ctx.quick ? 10 : 50;
    const cluster = await startBenchCluster(ctx, 'messages');
    const serverIds = ['msg-1', 'msg-2', 'msg-3'];
    await startServers(cluster, serverIds, SERVER_ENV);
    const devices = await addConnected(ctx, cluster, deviceCount, serverIds.length);
    const ports = serverIds.map((id) => cluster.servers.get(id)!.port);
    // Warm-up: every server has accepted for every device once, every worker has sent once.
    await wafleetMessages(cluster, devices, ports.length, ports, 'warm');
    ctx.progress(`${deviceCount} devices connected on 3 servers; bare BullMQ first, with the cluster up and idle`);

    const bare = await bareBullmq(ctx, deviceCount, perDevice);
    const wafleet = await wafleetMessages(cluster, devices, perDevice, ports, 'run');
    const conflicts = await cluster.conflicts();
    const warnings = warningsNote(cluster, 'messages');
    await cluster.stop();
    ctx.progress(`wafleet ${formatNumber(wafleet.perSecond)}/s, bare BullMQ ${formatNumber(bare.perSecond)}/s`);

    const throughput = compared('messages per second, accepted to sent', wafleet.perSecond, '/s', { name: 'bare BullMQ, no-op worker', value: bare.perSecond }, {
      text: 'ratio >= 0.5',
      met: (ratio) => ratio >= 0.5,
    });
    if (throughput.met === false) {
      throughput.why =
        `the API accepted ${formatNumber(wafleet.inPerSecond)} messages/s where bare BullMQ took ${formatNumber(bare.inPerSecond)} adds/s: ` +
        `each message is an HTTP request (authenticated, rate-counted, validated, its device read from the store), an accept script and a job ` +
        `on the device's own queue; then on the owner a lease check with the rate window and the intent (beginSend), the send and ` +
        `finishMessage, on top of BullMQ's own scripts, and ${deviceCount} workers of concurrency 1 on 3 processes instead of one.`;
    }
    const p = (flow: MessageFlow, q: number) => percentile(flow.latencies, q);
    return {
      parameters: { devices: deviceCount, servers: 3, messagesPerDevice: perDevice, messages: deviceCount * perDevice, inFlightPerDevice: DEPTH, bareWorkerConcurrency: deviceCount },
      figures: [
        throughput,
        compared('messages accepted per second (HTTP API)', wafleet.inPerSecond, '/s', { name: 'bare BullMQ adds', value: bare.inPerSecond }),
        compared('p50 accept-to-send latency', p(wafleet, 50), 'ms', { name: 'bare BullMQ add-to-process', value: p(bare, 50) }),
        compared('p99 accept-to-send latency', p(wafleet, 99), 'ms', { name: 'bare BullMQ add-to-process', value: p(bare, 99) }),
      ],
      notes: [`${wafleet.count} messages sent${wafleet.duplicates > 0 ? `, ${wafleet.duplicates} of them twice (a bug)` : ', each once'}; ${conflicts} conflicts`, ...warnings],
    };
  },
};
