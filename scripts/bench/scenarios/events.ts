import { signatureHeader, startWebhookReceiver, type WebhookRequest } from '../../../harness/chaos/receiver.js';
import { compared, formatNumber, percentile } from '../../../harness/bench/report.js';
import { addConnected, BENCH_SERVER_ENV, startBenchCluster, startServers, warningsNote } from '../cluster.js';
import type { BenchContext, Scenario } from '../context.js';
import { bareQueue, DEPTH, flowOf, inLines, waitFor, type Flow } from '../load.js';

// Inbound events end to end: a contact's message injected through the simulated WhatsApp's
// inbound route of three real servers (any server takes it), handed to the device's socket on its
// owner, appended to the device's event log, delivered by BullMQ to the device's webhook: a local
// receiver that verifies every signature. Against bare BullMQ on the same Redis doing the same
// hop without wafleet: add, a worker, a signed HTTP POST of the same shape to the same receiver.

const KEY = BENCH_SERVER_ENV.INTERNAL_API_KEY!;
const SERVER_ENV = {
  // Rate limits off (as far as the schema allows): the figure is the pipeline, not the pacing.
  RATE_LIMIT_PER_MINUTE: '100000000',
  RATE_LIMIT_IP_PER_MINUTE: '100000000',
  // The receiver is on 127.0.0.1.
  OUTBOUND_ALLOW_PRIVATE: 'true',
};
const BARE_SECRET = 'bench-bare-webhook-secret-0123456789';

/** What the receiver got, by WhatsApp message id: the first receipt, and the requests beyond it. */
function arrivals() {
  const firstAt = new Map<string, number>();
  let repeats = 0;
  let badlySigned = 0;
  return {
    firstAt,
    counts: () => ({ repeats, badlySigned }),
    onRequest(r: WebhookRequest) {
      if (r.signature !== 'valid') badlySigned += 1;
      if (r.type !== 'message.received' || !r.waMessageId) return;
      if (firstAt.has(r.waMessageId)) repeats += 1;
      else firstAt.set(r.waMessageId, r.at);
    },
  };
}

async function bareBullmq(ctx: BenchContext, url: string, got: ReturnType<typeof arrivals>, lines: number, perLine: number): Promise<Flow> {
  // The same shape of body and the same signing as a wafleet delivery.
  const queue = await bareQueue(
    ctx,
    'events-bullmq',
    async (job) => {
      const body = JSON.stringify({ id: job.id, type: 'message.received', deviceId: `bare-${job.data.line}`, sequence: job.data.i + 1, createdAt: new Date().toISOString(), data: { waMessageId: job.id } });
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-wafleet-event-id': job.id!, 'x-wafleet-signature': signatureHeader(BARE_SECRET, body) }, body });
      if (!res.ok) throw new Error(`receiver answered ${res.status}`);
    },
    lines,
  );
  const sentAt = new Map<string, number>();
  const run = async (round: string, per: number) => {
    await inLines(lines, per, async (line, i) => {
      const jobId = `bare-${round}-${line}-${i}`;
      sentAt.set(jobId, Date.now());
      await queue.add('deliver', { line, i }, { jobId, removeOnComplete: true });
    });
    await waitFor(() => [...sentAt.keys()].every((id) => got.firstAt.has(id)), 60_000, () => `bare BullMQ delivered ${[...sentAt.keys()].filter((id) => got.firstAt.has(id)).length}/${sentAt.size}`);
  };
  await run('warm', 1);
  sentAt.clear();
  await run('run', perLine);
  return flowOf([...sentAt].map(([id, sent]) => ({ start: sent, end: got.firstAt.get(id)! })));
}

async function wafleetEvents(devices: readonly string[], ports: readonly number[], got: ReturnType<typeof arrivals>, perDevice: number, round: string): Promise<Flow> {
  const sentAt = new Map<string, number>();
  await inLines(devices.length, perDevice, async (d, i) => {
    const sent = Date.now();
    const res = await fetch(`http://127.0.0.1:${ports[(d + i) % ports.length]}/api/sim/devices/${devices[d]}/inbound`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ from: '4915187654321', text: `${round}-${d}-${i}` }),
    });
    if (res.status !== 202) throw new Error(`POST inbound answered ${res.status}: ${await res.text()}`);
    sentAt.set(((await res.json()) as { waMessageId: string }).waMessageId, sent);
  });
  const delivered = () => [...sentAt.keys()].filter((wa) => got.firstAt.has(wa)).length;
  await waitFor(() => delivered() === sentAt.size, 120_000, () => `${delivered()}/${sentAt.size} events delivered to the webhook`);
  return flowOf([...sentAt].map(([wa, sent]) => ({ start: sent, end: got.firstAt.get(wa)! })));
}

export const eventsScenario: Scenario = {
  id: 'events',
  title: 'Inbound events to webhooks',
  async run(ctx) {
    const deviceCount = ctx.quick ? 10 : 100;
    const perDevice = ctx.quick ? 10 : 30;
    const parameters = { devices: deviceCount, servers: 3, eventsPerDevice: perDevice, events: deviceCount * perDevice, inFlightPerDevice: DEPTH, bareWorkerConcurrency: deviceCount };
    const got = arrivals();
    const secrets = new Map<string, string>();
    const receiver = await startWebhookReceiver({ secret: BARE_SECRET, secretOf: (deviceId) => secrets.get(deviceId), hangMs: 0, onRequest: (r) => got.onRequest(r) });
    ctx.defer(() => receiver.close());
    const cluster = await startBenchCluster(ctx, 'events');
    const serverIds = ['ev-1', 'ev-2', 'ev-3'];
    await startServers(cluster, serverIds, SERVER_ENV);
    const ports = serverIds.map((id) => cluster.servers.get(id)!.port);

    /** Registers the device's webhook; a reason to skip when this build or server delivers none. */
    const register = async (deviceId: string): Promise<string | null> => {
      const res = await fetch(`http://127.0.0.1:${ports[0]}/api/devices/${deviceId}/webhook`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ url: receiver.url }),
      });
      // The device exists in the store, so a 404 is the route's: a build without webhooks.
      if (res.status === 404) return 'PUT /api/devices/:id/webhook answered 404: this build has no webhooks';
      const body = (await res.json()) as { secret?: string; error?: { code?: string; message?: string } };
      if (res.status === 503 && body.error?.code === 'webhooks_unavailable') return `PUT /api/devices/:id/webhook answered 503 webhooks_unavailable (${body.error.message ?? ''})`;
      if (!res.ok || !body.secret) throw new Error(`PUT /api/devices/${deviceId}/webhook answered ${res.status}: ${JSON.stringify(body)}`);
      secrets.set(deviceId, body.secret);
      return null;
    };
    const first = await cluster.addDevices(1);
    const unavailable = await register(first[0]!);
    if (unavailable) {
      await cluster.stop();
      return { parameters, figures: [], notes: [`skipped: ${unavailable}; the scenario needs webhook delivery (issue 17)`] };
    }
    const devices = [...first, ...(await addConnected(ctx, cluster, deviceCount - 1, serverIds.length, first))];
    for (const deviceId of devices.slice(1)) {
      const refused = await register(deviceId);
      if (refused) throw new Error(refused);
    }
    // Warm-up: every server has injected for every device, every owner has delivered.
    await wafleetEvents(devices, ports, got, ports.length, 'warm');
    ctx.progress(`${deviceCount} devices connected on 3 servers, webhooks registered; bare BullMQ first, with the cluster up and idle`);

    const bare = await bareBullmq(ctx, receiver.url, got, deviceCount, perDevice);
    const wafleet = await wafleetEvents(devices, ports, got, perDevice, 'run');
    const conflicts = await cluster.conflicts();
    const warnings = warningsNote(cluster, 'events');
    await cluster.stop();
    ctx.progress(`wafleet ${formatNumber(wafleet.perSecond)}/s, bare BullMQ ${formatNumber(bare.perSecond)}/s`);

    const { repeats, badlySigned } = got.counts();
    const p = (flow: Flow, q: number) => percentile(flow.latencies, q);
    const baseline = 'bare BullMQ add, worker, signed POST';
    return {
      parameters,
      figures: [
        compared('events per second, injected to webhook', wafleet.perSecond, '/s', { name: baseline, value: bare.perSecond }),
        compared('events injected per second (simulated WhatsApp route)', wafleet.inPerSecond, '/s', { name: 'bare BullMQ adds', value: bare.inPerSecond }),
        compared('p50 inject-to-webhook latency', p(wafleet, 50), 'ms', { name: baseline, value: p(bare, 50) }),
        compared('p99 inject-to-webhook latency', p(wafleet, 99), 'ms', { name: baseline, value: p(bare, 99) }),
      ],
      notes: [
        `${wafleet.count} events delivered; ${repeats} deliveries of a message already received (at least once allows them); ${badlySigned} requests badly signed; ${conflicts} conflicts`,
        ...warnings,
      ],
    };
  },
};
