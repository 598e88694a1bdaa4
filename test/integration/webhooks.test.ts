import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holderId, leaseValue } from '../../src/cluster/lease-value.js';
import { markEventsStored, type EventType } from '../../src/events/event-log.js';
import { eventIdFor } from '../../src/events/ids.js';
import { createMetrics, type Metrics } from '../../src/metrics/index.js';
import { discoverQueueNames } from '../../src/monitoring/queue-board.js';
import { createWebhooks, WEBHOOK_QUEUE, type Webhooks, type WebhookSettings } from '../../src/webhooks/index.js';
import { startTestApi, type TestApi, type WebhookParts } from '../helpers/http-api.js';
import { importReadmeSnippet } from '../helpers/readme-snippet.js';

// Webhook delivery end to end in one process: the HTTP API registering webhooks, the event log
// on a real Redis, delivery on a real BullMQ queue with its worker, a real PostgreSQL store, and a
// local HTTP receiver (on 127.0.0.1, so OUTBOUND_ALLOW_PRIVATE is on, except in the SSRF part).
// Events are appended under a lease value the test sets, as the device's owner would, and each
// append wakes delivery as main.ts wires it (the event log's onAppended).

type Verify = (rawBody: Buffer | string, header: string | undefined, secret: string) => boolean;
const { verifyWafleetSignature: verify } = await importReadmeSnippet<{ verifyWafleetSignature: Verify }>('webhook-verify');

const HOLDER = leaseValue(holderId('srv-a', 'boot-a'), 7);
const OPERATOR_SECRET = 'operator-secret-0123456789';
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

interface Hit {
  path: string;
  eventId: string | undefined;
  signature: string | undefined;
  body: string;
  payload: { id: string; type: string; deviceId: string; sequence: number; createdAt: string; data: unknown };
  status: number;
  at: number;
}

type Rule = (payload: Hit['payload'], nth: number) => { status: number; delayMs?: number };

interface Receiver {
  url: string;
  port: number;
  hits: Hit[];
  rules: Map<string, Rule>;
  on(path: string): Hit[];
  close(): Promise<void>;
}

/** A local receiver: records every request (on arrival) and answers as the path's rule says (200 by default). */
async function startReceiver(): Promise<Receiver> {
  const hits: Hit[] = [];
  const rules = new Map<string, Rule>();
  const server: Server = createServer((req, res) => {
    res.on('error', () => undefined);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const path = req.url ?? '';
      const payload = (body ? JSON.parse(body) : null) as Hit['payload'];
      const rule: Rule = rules.get(path) ?? (() => ({ status: 200 }));
      const { status, delayMs = 0 } = rule(payload, hits.filter((h) => h.path === path).length);
      const headers: IncomingHttpHeaders = req.headers;
      hits.push({ path, eventId: headers['x-wafleet-event-id'] as string | undefined, signature: headers['x-wafleet-signature'] as string | undefined, body, payload, status, at: performance.now() });
      setTimeout(() => res.writeHead(status).end('ok'), delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    hits,
    rules,
    on: (path) => hits.filter((h) => h.path === path),
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

interface Harness {
  api: TestApi;
  hooks: Webhooks;
  bull: Redis;
  metrics: Metrics;
  /** onDelivered's calls: deviceId -> progress (every target past it) in call order. */
  delivered: Map<string, number[]>;
  /** A device (with the lease value HOLDER) created through the API. */
  device(extra?: Record<string, unknown>, key?: string): Promise<string>;
  /**
   * Appends events to the device's log as its owner and, unless `stored` is false, marks each
   * stored and wakes delivery, as the write-behind does once the store has it; returns their ids.
   */
  emit(deviceId: string, count: number, type?: EventType, stored?: boolean): Promise<string[]>;
  close(): Promise<void>;
}

async function startHarness(settings: WebhookSettings, allowPrivate: boolean, tuning: Parameters<typeof createWebhooks>[0]['tuning']): Promise<Harness> {
  const metrics = createMetrics({ serverId: 'webhook-test', processMetrics: false });
  const delivered = new Map<string, number[]>();
  let hooks: Webhooks | undefined;
  let bull: Redis | undefined;
  const api = await startTestApi(
    {},
    {
      webhooks: ({ redis, keys, store, events }: WebhookParts) => {
        bull = new Redis(redis.url, { maxRetriesPerRequest: null });
        hooks = createWebhooks({
          redis: redis.redis,
          bull,
          keys,
          store,
          events,
          log,
          settings,
          allowPrivate,
          eventRetentionMs: 3_600_000,
          metrics,
          tuning,
          onDelivered: (deviceId: string, sequence: number) => {
            delivered.set(deviceId, [...(delivered.get(deviceId) ?? []), sequence]);
          },
        });
        return hooks.registry;
      },
    },
  );
  await hooks!.startWorkers();
  const counters = new Map<string, number>();
  return {
    api,
    hooks: hooks!,
    bull: bull!,
    metrics,
    delivered,
    async device(extra = {}, key) {
      const created = await api.call('POST', '/api/devices', { body: { ...(key ? {} : { userId: randomUUID() }), name: 'shop', ...extra }, ...(key ? { key } : {}) });
      expect(created.status).toBe(201);
      await api.redis.redis.set(api.keys.lease(created.body.id), HOLDER, 'PX', 600_000);
      return created.body.id as string;
    },
    async emit(deviceId, count, type = 'message.received', stored = true) {
      const ids: string[] = [];
      for (let i = 0; i < count; i++) {
        const n = (counters.get(deviceId) ?? 0) + 1;
        counters.set(deviceId, n);
        const id = type === 'device.status' ? eventIdFor(deviceId, type, [7, n, 'connected']) : eventIdFor(deviceId, 'message.received', [`wa-${n}`]);
        const appended = await api.events.append(deviceId, HOLDER, { id, type, data: { n, text: `hi ${n}` } });
        ids.push(id);
        expect(appended.outcome).toBe('appended');
        if (!stored) continue;
        await markEventsStored(api.redis.redis, api.keys, deviceId, (appended as { sequence: number }).sequence);
        await hooks!.wake(deviceId);
      }
      return ids;
    },
    async close() {
      await hooks?.close();
      await bull?.quit();
      await api.close();
    },
  };
}

const counterValue = async (metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> => {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const value = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return Number(value?.value ?? 0);
};

describe('webhooks (receiver on loopback, OUTBOUND_ALLOW_PRIVATE=true)', () => {
  let receiver: Receiver;
  let h: Harness;

  beforeAll(async () => {
    receiver = await startReceiver();
    h = await startHarness(
      {
        operator: { url: `${receiver.url}/operator`, secret: OPERATOR_SECRET },
        sharedSecret: OPERATOR_SECRET,
        encryptionKey: { source: 'WEBHOOK_SECRET_KEY', material: 'k'.repeat(32) },
        retryMs: 3000,
        timeoutMs: 2000,
        concurrency: 8,
      },
      true,
      { retryBaseMs: 100, retryCapMs: 800, lockMs: 3000, maxRunMs: 1000 },
    );
  });
  afterAll(async () => {
    await h?.close();
    await receiver?.close();
  });

  const putWebhook = async (deviceId: string, body: Record<string, unknown>, key?: string) =>
    h.api.call('PUT', `/api/devices/${deviceId}/webhook`, { body, ...(key ? { key } : {}) });

  /** A device with its own webhook on `/hook/<id>`; returns the id, the path and the secret. */
  const hooked = async (events?: string[]) => {
    const id = await h.device();
    const put = await putWebhook(id, { url: `${receiver.url}/hook/${id}`, ...(events ? { events } : {}) });
    expect(put.status).toBe(200);
    return { id, path: `/hook/${id}`, secret: put.body.secret as string };
  };

  it('registers, rotates and removes a device webhook through the API; the secret is shown once and stored only encrypted', async () => {
    const owner = await h.api.call('POST', `/api/users/${randomUUID()}/api-keys`, { body: { name: 'a' } });
    const stranger = await h.api.call('POST', `/api/users/${randomUUID()}/api-keys`, { body: { name: 'b' } });
    const id = await h.device({}, owner.body.key);
    const path = `/hook/${id}`;

    expect((await putWebhook(id, { url: `${receiver.url}${path}` }, stranger.body.key)).status).toBe(403);
    const first = await putWebhook(id, { url: `${receiver.url}${path}` }, owner.body.key);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ url: `${receiver.url}${path}`, events: null, secret: expect.stringMatching(/^whsec_[A-Za-z0-9_-]{43}$/) });
    expect(first.headers.get('cache-control')).toBe('no-store');
    const stored = await h.api.store.getWebhook(id);
    expect(stored?.secretCiphertext).toMatch(/^v1\./);
    expect(stored?.secretCiphertext).not.toContain(first.body.secret.slice(6));

    await h.emit(id, 1);
    await until('the first delivery', () => receiver.on(path).length === 1);
    const [one] = receiver.on(path);
    expect(verify(one!.body, one!.signature, first.body.secret)).toBe(true);

    // Rotation: a new secret (and here a narrower subscription); the old one no longer signs.
    const second = await putWebhook(id, { url: `${receiver.url}${path}`, events: ['message.received'] }, owner.body.key);
    expect(second.status).toBe(200);
    expect(second.body.events).toEqual(['message.received']);
    expect(second.body.secret).not.toBe(first.body.secret);
    await h.emit(id, 1);
    await until('the delivery after rotation', () => receiver.on(path).length === 2);
    const two = receiver.on(path)[1]!;
    expect(two.payload.sequence).toBe(2);
    expect(verify(two.body, two.signature, second.body.secret)).toBe(true);
    expect(verify(two.body, two.signature, first.body.secret)).toBe(false);

    // Not subscribed: the cursor moves past it, nothing is POSTed.
    await h.emit(id, 1, 'device.status');
    await until('both targets past the status event', () => (h.delivered.get(id) ?? []).includes(3));
    expect(receiver.on(path).map((hit) => hit.payload.sequence)).toEqual([1, 2]);

    expect((await h.api.call('DELETE', `/api/devices/${id}/webhook`, { key: stranger.body.key })).status).toBe(403);
    expect((await h.api.call('DELETE', `/api/devices/${id}/webhook`, { key: owner.body.key })).status).toBe(204);
    expect(await h.api.store.getWebhook(id)).toBeNull();
    await h.emit(id, 1);
    // The operator's webhook still gets it: proof the event went out, and not to the device's.
    await until("the operator's copy of event 4", () => receiver.on('/operator').some((hit) => hit.payload.deviceId === id && hit.payload.sequence === 4));
    await sleep(200);
    expect(receiver.on(path)).toHaveLength(2);
    expect((await h.api.call('DELETE', `/api/devices/${id}/webhook`)).status).toBe(204);
  });

  it('refuses bad webhook bodies with 422', async () => {
    const id = await h.device();
    for (const [body, where] of [
      [{ url: 'ftp://example.com/hook' }, 'body.url'],
      [{ url: `${receiver.url}/x`, events: ['message.sent'] }, 'body.events.0'],
      [{ url: `${receiver.url}/x`, events: [] }, 'body.events'],
      [{ url: `${receiver.url}/x`, secret: 'mine' }, 'body'],
    ] as const) {
      const res = await putWebhook(id, body);
      expect(res.status, JSON.stringify(body)).toBe(422);
      expect(res.body.error.code).toBe('validation_failed');
      expect(res.body.error.details[0].path).toBe(where);
    }
    expect((await putWebhook(randomUUID(), { url: `${receiver.url}/x` })).status).toBe(404);
  });

  it("delivers each device's events in sequence, signed, to the device's webhook and to the operator's, each on its own cursor", async () => {
    const a = await hooked();
    const b = await hooked();
    for (let i = 0; i < 15; i++) {
      await h.emit(a.id, 1);
      await h.emit(b.id, 1);
    }
    const operatorOf = (id: string) => receiver.on('/operator').filter((hit) => hit.payload.deviceId === id);
    await until('15 deliveries to each target', () => [a, b].every((d) => receiver.on(d.path).length >= 15 && operatorOf(d.id).length >= 15));
    const seq = Array.from({ length: 15 }, (_, i) => i + 1);
    for (const d of [a, b]) {
      expect(receiver.on(d.path).map((hit) => hit.payload.sequence)).toEqual(seq);
      expect(operatorOf(d.id).map((hit) => hit.payload.sequence)).toEqual(seq);
      for (const hit of receiver.on(d.path)) {
        expect(verify(hit.body, hit.signature, d.secret)).toBe(true);
        expect(verify(hit.body, hit.signature, OPERATOR_SECRET)).toBe(false);
        expect(hit.eventId).toBe(hit.payload.id);
        expect(Object.keys(hit.payload).sort()).toEqual(['createdAt', 'data', 'deviceId', 'id', 'sequence', 'type']);
        expect(new Date(hit.payload.createdAt).toISOString()).toBe(hit.payload.createdAt);
        expect(hit.payload).toMatchObject({ type: 'message.received', deviceId: d.id, data: { n: hit.payload.sequence } });
      }
      for (const hit of operatorOf(d.id)) expect(verify(hit.body, hit.signature, OPERATOR_SECRET)).toBe(true);
      // Told once both targets' cursors moved past an event (after the receivers' answers): the
      // progress only goes up, and ends at the last event.
      await until('the progress at the last event', () => h.delivered.get(d.id)?.at(-1) === 15);
      const progress = h.delivered.get(d.id)!;
      expect(progress).toEqual([...progress].sort((x, y) => x - y));
      expect(new Set(progress)).toEqual(new Set(seq));
    }
  });

  it('a receiver answering 500 for a while, then 200, gets every event at least once; repeats carry the same id and body', async () => {
    const d = await hooked();
    const failUntil = performance.now() + 700;
    receiver.rules.set(d.path, () => ({ status: performance.now() < failUntil ? 500 : 200 }));
    const failedBefore = await counterValue(h.metrics, 'wafleet_webhook_deliveries_total', { target: 'device', outcome: 'failed' });
    const ids = await h.emit(d.id, 4);
    await sleep(300);
    ids.push(...(await h.emit(d.id, 4)));

    const okFor = (id: string) => receiver.on(d.path).some((hit) => hit.eventId === id && hit.status === 200);
    await until('a 200 for every event', () => ids.every(okFor));
    const byId = new Map<string, Hit[]>();
    for (const hit of receiver.on(d.path)) byId.set(hit.eventId!, [...(byId.get(hit.eventId!) ?? []), hit]);
    expect([...byId.keys()].sort()).toEqual([...ids].sort());
    expect([...byId.values()].some((hits) => hits.length > 1)).toBe(true);
    for (const [id, hits] of byId) {
      expect(new Set(hits.map((hit) => hit.body)).size).toBe(1);
      for (const hit of hits) {
        expect(hit.payload.id).toBe(id);
        expect(verify(hit.body, hit.signature, d.secret)).toBe(true);
      }
    }
    expect(await counterValue(h.metrics, 'wafleet_webhook_deliveries_total', { target: 'device', outcome: 'failed' })).toBeGreaterThan(failedBefore);
    expect(await h.api.call('GET', `/api/devices/${d.id}/webhook/failures`).then((r) => r.body)).toEqual({ failures: [] });
  });

  it('delivers only what the store has: an event Redis could still lose waits for the write-behind', async () => {
    const d = await hooked();
    await h.emit(d.id, 2);
    await h.emit(d.id, 2, 'message.received', false);
    await until('the stored two', () => receiver.on(d.path).length === 2);
    await h.hooks.wake(d.id);
    await sleep(400);
    expect(receiver.on(d.path).map((hit) => hit.payload.sequence)).toEqual([1, 2]);
    // The write-behind applied 3 and 4.
    await markEventsStored(h.api.redis.redis, h.api.keys, d.id, 4);
    await h.hooks.wake(d.id);
    await until('all four', () => receiver.on(d.path).length === 4);
    expect(receiver.on(d.path).map((hit) => hit.payload.sequence)).toEqual([1, 2, 3, 4]);
  });

  it('progress written to the store stays below an event still being retried, and passes it once it is delivered', async () => {
    const d = await hooked();
    let failing = true;
    receiver.rules.set(d.path, (payload) => ({ status: payload.sequence === 2 && failing ? 500 : 200 }));
    await h.emit(d.id, 4);
    await until('events 3 and 4 past the retrying one', () => receiver.on(d.path).filter((hit) => hit.status === 200).length === 3);
    await until('progress reported', () => (h.delivered.get(d.id) ?? []).length > 0);
    await sleep(200);
    // The cursors are at 4, but the store is told 1: after a Redis loss, 2 is delivered again.
    expect(Math.max(...h.delivered.get(d.id)!)).toBe(1);
    failing = false;
    await until('event 2 delivered and the progress at 4', () => h.delivered.get(d.id)?.at(-1) === 4);
  });

  it('an event that never succeeds is dead-lettered: listed by the failures route, kept as a failed job; the rest go on after one interval', async () => {
    const d = await hooked();
    receiver.rules.set(d.path, (payload) => ({ status: payload.sequence === 2 ? 500 : 200 }));
    const deadBefore = await counterValue(h.metrics, 'wafleet_webhook_dead_letters_total', { target: 'device' });
    const [, doomed] = await h.emit(d.id, 3);

    await until('event 3 delivered', () => receiver.on(d.path).some((hit) => hit.payload.sequence === 3 && hit.status === 200));
    const firstFailure = receiver.on(d.path).find((hit) => hit.payload.sequence === 2)!;
    const three = receiver.on(d.path).find((hit) => hit.payload.sequence === 3)!;
    // Held back by one retry interval (100 ms ± 25 % here), not by the failing event's retries.
    expect(three.at - firstFailure.at).toBeLessThan(1000);

    let failures: any[] = [];
    await until('the dead letter', async () => {
      failures = (await h.api.call('GET', `/api/devices/${d.id}/webhook/failures`)).body.failures;
      return failures.length > 0;
    });
    const tries = receiver.on(d.path).filter((hit) => hit.payload.sequence === 2);
    expect(failures).toEqual([{ eventId: doomed, type: 'message.received', attempts: tries.length, lastError: expect.stringContaining('answered 500'), lastAttemptAt: expect.any(String) }]);
    expect(tries.length).toBeGreaterThanOrEqual(3);
    expect(new Date(failures[0].lastAttemptAt).toISOString()).toBe(failures[0].lastAttemptAt);
    expect(await counterValue(h.metrics, 'wafleet_webhook_dead_letters_total', { target: 'device' })).toBe(deadBefore + 1);

    // BullBoard finds the queue, and the dead letter is a failed job in it.
    expect(await discoverQueueNames(h.api.redis.redis, h.api.keys.bullPrefix)).toContain(WEBHOOK_QUEUE);
    const queue = new Queue(WEBHOOK_QUEUE, { connection: h.bull, prefix: h.api.keys.bullPrefix });
    try {
      const job = await queue.getJob(`retry.device.${d.id}.${doomed}`);
      expect(await job?.getState()).toBe('failed');
      expect(job?.failedReason).toContain('dead-lettered');
    } finally {
      await queue.close();
    }
  });

  it("a slow receiver of one device does not delay another device's events", async () => {
    const slow = await hooked();
    const quick = await hooked();
    receiver.rules.set(slow.path, () => ({ status: 200, delayMs: 1500 }));
    await h.emit(slow.id, 4);
    await until('the slow receiver to have the first event', () => receiver.on(slow.path).length === 1);
    const started = performance.now();
    await h.emit(quick.id, 4);
    await until('the quick device’s events', () => receiver.on(quick.path).length === 4, 5000);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(receiver.on(slow.path).length).toBeLessThan(4);
    // The slow one still gets everything, in order.
    await until('the slow device’s events', () => receiver.on(slow.path).length === 4, 15_000);
    expect(receiver.on(slow.path).map((hit) => hit.payload.sequence)).toEqual([1, 2, 3, 4]);
  });

  it('a hold left by a run whose server died strands nothing: the events go out, in order, once it runs out', async () => {
    const d = await hooked();
    await h.api.redis.redis.set(h.api.keys.webhookPump(d.id, 'device'), 'a-dead-run', 'PX', 800);
    const started = performance.now();
    await h.emit(d.id, 3);
    await until('the events after the dead hold', () => receiver.on(d.path).length === 3, 5000);
    expect(receiver.on(d.path)[0]!.at - started).toBeGreaterThan(600);
    expect(receiver.on(d.path).map((hit) => hit.payload.sequence)).toEqual([1, 2, 3]);
  });

  it("the operator's receiver failing does not hold back the device's own webhook", async () => {
    const d = await hooked();
    receiver.rules.set('/operator', (payload) => ({ status: payload.deviceId === d.id ? 503 : 200 }));
    try {
      await h.emit(d.id, 5);
      await until("the device's own deliveries", () => receiver.on(d.path).length === 5, 3000);
      expect(receiver.on(d.path).map((hit) => hit.payload.sequence)).toEqual([1, 2, 3, 4, 5]);
      expect(receiver.on('/operator').some((hit) => hit.payload.deviceId === d.id && hit.status === 503)).toBe(true);
    } finally {
      receiver.rules.delete('/operator');
    }
    // And the operator's copies arrive once it answers again.
    await until("the operator's copies", () => [1, 2, 3, 4, 5].every((s) => receiver.on('/operator').some((hit) => hit.payload.deviceId === d.id && hit.payload.sequence === s && hit.status === 200)));
  });

  it("a device's webhookUrl from its creation is its webhook, signed with WEBHOOK_SECRET; a PUT replaces it", async () => {
    const path = `/legacy/${randomUUID()}`;
    const id = await h.device({ webhookUrl: `${receiver.url}${path}` });
    await h.emit(id, 1);
    await until('the legacy delivery', () => receiver.on(path).length === 1);
    expect(verify(receiver.on(path)[0]!.body, receiver.on(path)[0]!.signature, OPERATOR_SECRET)).toBe(true);
    const put = await putWebhook(id, { url: `${receiver.url}/hook/${id}` });
    expect((await h.api.store.getDevice(id))?.webhookUrl).toBeNull();
    await h.emit(id, 1);
    await until('the delivery to the new webhook', () => receiver.on(`/hook/${id}`).length === 1);
    const hit = receiver.on(`/hook/${id}`)[0]!;
    expect(hit.payload.sequence).toBe(2);
    expect(verify(hit.body, hit.signature, put.body.secret)).toBe(true);
    expect(receiver.on(path)).toHaveLength(1);

    // Deleting the device takes its webhook's state in Redis along (the store's row cascades).
    const { keys, redis } = { keys: h.api.keys, redis: h.api.redis.redis };
    const state = [keys.webhookTarget(id), keys.webhookCursor(id, 'device'), keys.webhookCursor(id, 'operator')];
    await until('the operator cursor', async () => (await redis.exists(...state)) === 3);
    expect((await h.api.call('DELETE', `/api/devices/${id}`)).status).toBe(204);
    expect(await redis.exists(...state)).toBe(0);
    expect(await h.api.store.getWebhook(id)).toBeNull();
  });
});

describe('webhooks without OUTBOUND_ALLOW_PRIVATE (SSRF) and without a key for secrets', () => {
  let listener: Receiver;
  let operator: Receiver;
  let h: Harness;

  beforeAll(async () => {
    listener = await startReceiver();
    operator = await startReceiver();
    h = await startHarness(
      { operator: { url: `${operator.url}/operator`, secret: OPERATOR_SECRET }, sharedSecret: undefined, encryptionKey: null, retryMs: 600, timeoutMs: 1000, concurrency: 4 },
      false,
      { retryBaseMs: 100, retryCapMs: 200, lockMs: 3000 },
    );
  });
  afterAll(async () => {
    await h?.close();
    await listener?.close();
    await operator?.close();
  });

  it('refuses to register loopback, private, link-local and metadata addresses, and names resolving to them', async () => {
    const id = await h.device();
    for (const url of [
      `http://127.0.0.1:${listener.port}/x`,
      'http://10.0.0.1/',
      'http://169.254.169.254/latest/meta-data/',
      `http://localhost:${listener.port}/x`,
      'http://[::1]/x',
      'http://[::ffff:127.0.0.1]/x',
    ]) {
      const res = await h.api.call('PUT', `/api/devices/${id}/webhook`, { body: { url } });
      expect(res.status, url).toBe(422);
      expect(res.body.error.details).toEqual([{ path: 'body.url', message: expect.stringMatching(/loopback, private, link-local or reserved/) }]);
    }
    expect(listener.hits).toHaveLength(0);
  });

  it('answers 503 webhooks_unavailable when no key encrypts secrets', async () => {
    const id = await h.device();
    const res = await h.api.call('PUT', `/api/devices/${id}/webhook`, { body: { url: 'https://93.184.215.14/hook' } });
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('webhooks_unavailable');
    expect(res.body.error.message).toMatch(/WEBHOOK_SECRET_KEY/);
  });

  it('a delivery to a name that resolves to loopback makes no request, and is dead-lettered with the reason', async () => {
    // Registered before the address rule could see it (the older webhookUrl), or a name whose
    // DNS changed since: the guarded client refuses it when it connects.
    const id = await h.device({ webhookUrl: `http://localhost:${listener.port}/ssrf` });
    await h.emit(id, 1);
    let failures: any[] = [];
    await until('the dead letter', async () => {
      failures = (await h.api.call('GET', `/api/devices/${id}/webhook/failures`)).body.failures;
      return failures.length > 0;
    });
    expect(failures[0].lastError).toMatch(/localhost resolves to (127\.0\.0\.1|::1), which is a loopback/);
    expect(listener.hits).toHaveLength(0);
    // The operator's WEBHOOK_URL is configuration, not a user's URL: it may be on a private address.
    await until("the operator's copy", () => operator.on('/operator').some((hit) => hit.payload.deviceId === id));
  });
});
