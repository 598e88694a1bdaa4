import type { HistoryEvent } from './history.js';
import { startWebhookReceiver, type WebhookReceiver } from './receiver.js';
import { receiverFaultSchedule, seededRandom } from './schedule.js';

// The chaos run's inbound side: contacts writing to the devices at a steady rate (the simulated
// WhatsApp's inbound route, through any live server), a webhook receiver with faults of its own
// that the servers deliver every event to (the operator's WEBHOOK_URL), and, once the faults are
// over, the devices' logs read through the pull API. The checker (checkInbound) judges.

/** What the run's receiver verifies signatures with; the servers sign with it (WEBHOOK_SECRET). */
const WEBHOOK_SECRET = 'chaos-webhook-secret-0123456789abcdef';
/** The route that exists only where the servers deliver webhooks. */
const WEBHOOK_ROUTE = '/api/devices/{id}/webhook';
const PAGE = 1000;
const READERS = 8;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface InboundSide {
  /** For the servers: webhooks to the receiver (OUTBOUND_ALLOW_PRIVATE: it is on 127.0.0.1). */
  serverEnv: Record<string, string>;
  /** Records whether the servers deliver webhooks at all (a build without them is checked by its logs only). */
  detect(): Promise<void>;
  /** Starts one injection for a seeded device; it retries on other servers until one answers 202. */
  injectOne(): void;
  /** The receiver's faults on their seeded timeline, until `stopping()`; the receiver is healthy after. */
  runReceiverFaults(stopping: () => boolean): Promise<void>;
  /**
   * Waits for injections in flight, then until every message injected is in its device's log and
   * (with webhooks) every device's events 1..N are acknowledged, or `drainMs` passed; records
   * the logs as read at the end. `drainSim` brings the simulated WhatsApp's history up to date.
   */
  settle(drainSim: () => Promise<void>): Promise<{ waitedMs: number; pending: number }>;
  /** Injections no server answered with 202 in 40 tries (never accepted: nothing owed). */
  unanswered(): number;
  close(): Promise<void>;
}

export interface InboundOptions {
  seed: number;
  ttlMs: number;
  drainMs: number;
  internalKey: string;
  devices: readonly string[];
  /** Ports of the servers running now. */
  ports(): number[];
  /** The run's history so far (the sim's hand-overs and resets), and how to add to it. */
  history: readonly HistoryEvent[];
  record(event: HistoryEvent): void;
  progress(line: string): void;
}

export async function startInboundSide(options: InboundOptions): Promise<InboundSide> {
  const { devices, record, internalKey } = options;
  // Streams of the seed of their own: the cluster's faults and message load stay what they were.
  const random = seededRandom(options.seed ^ 0x1b0d);
  // Short against the TTL, so a hang is a fault the servers sit out within a run's time.
  const webhookTimeoutMs = Math.max(1000, Math.min(3000, options.ttlMs));
  const injecting = new Set<Promise<void>>();
  const acked = new Map<string, Set<number>>();
  const ackedMessages = new Set<string>();
  const injected: Array<Extract<HistoryEvent, { kind: 'inject' }>> = [];
  let closing = false;
  let injections = 0;
  let unanswered = 0;
  let webhooks = false;

  const receiver: WebhookReceiver = await startWebhookReceiver({
    secret: WEBHOOK_SECRET,
    hangMs: webhookTimeoutMs * 2,
    onRequest({ at, ...r }) {
      if (closing) return;
      record({ t: at, kind: 'webhook', ...r });
      if (typeof r.answer !== 'number' || r.answer >= 300) return;
      acked.set(r.deviceId, (acked.get(r.deviceId) ?? new Set()).add(r.sequence));
      if (r.type === 'message.received' && r.waMessageId) ackedMessages.add(`${r.deviceId}|${r.waMessageId}`);
    },
  });

  /** Any running server; a call that fails there is tried on another. */
  const call = async (path: string, init: RequestInit = {}): Promise<Response | null> => {
    for (let attempt = 0; attempt < 40 && !closing; attempt++) {
      const ports = options.ports();
      const port = ports[Math.floor(random() * ports.length)];
      if (port !== undefined) {
        try {
          const res = await fetch(`http://127.0.0.1:${port}${path}`, {
            ...init,
            headers: { authorization: `Bearer ${internalKey}`, 'content-type': 'application/json' },
            signal: AbortSignal.timeout(5000),
          });
          // 5xx: that server cannot now (store away, draining); another may.
          if (res.status < 500) return res;
        } catch {
          // Down or paused: another one, shortly.
        }
      }
      await sleep(250);
    }
    return null;
  };

  const inject = async (deviceId: string) => {
    const n = ++injections;
    const res = await call(`/api/sim/devices/${deviceId}/inbound`, { method: 'POST', body: JSON.stringify({ from: '4915187654321', text: `chaos ${options.seed} #${n}` }) });
    if (res?.status !== 202) {
      // A 202 lost on the way back leaves a message the run never heard of: not checked, only logged.
      if (!closing) unanswered += 1;
      return;
    }
    const { waMessageId } = (await res.json()) as { waMessageId: string };
    const event = { t: Date.now(), kind: 'inject' as const, deviceId, waMessageId };
    injected.push(event);
    record(event);
  };

  // The log only grows: each device is read on from where its last read ended.
  const cursor = new Map<string, number>();
  const logged = new Map<string, Array<Extract<HistoryEvent, { kind: 'logged' }>>>();
  const readLog = async (deviceId: string) => {
    for (;;) {
      const res = await call(`/api/devices/${deviceId}/events?after=${cursor.get(deviceId) ?? 0}&limit=${PAGE}`);
      if (res?.status !== 200) throw new Error(`GET /api/devices/${deviceId}/events answered ${res ? res.status : 'nothing on any server'}`);
      const page = (await res.json()) as { events: Array<{ id: string; type: string; sequence: number; data: { waMessageId?: unknown } | null }>; last: number };
      const t = Date.now();
      const list = logged.get(deviceId) ?? [];
      for (const e of page.events) {
        const wa = e.data?.waMessageId;
        list.push({ t, kind: 'logged', deviceId, sequence: e.sequence, eventId: e.id, type: e.type, ...(typeof wa === 'string' ? { waMessageId: wa } : {}) });
      }
      logged.set(deviceId, list);
      cursor.set(deviceId, page.last);
      if (page.events.length < PAGE) return;
    }
  };

  /** Devices still owed something: an injected message not logged or not acknowledged, or a sequence not acknowledged. */
  const owing = () => {
    const handed = new Map<string, number>();
    const resets: number[] = [];
    for (const e of options.history) {
      if (e.kind === 'sim_inbound' && !handed.has(`${e.deviceId}|${e.waMessageId}`)) handed.set(`${e.deviceId}|${e.waMessageId}`, e.t);
      if (e.kind === 'sim_reset') resets.push(e.t);
    }
    const inLog = new Set([...logged.values()].flat().map((e) => `${e.deviceId}|${e.waMessageId}`));
    const owed = new Set<string>();
    for (const i of injected) {
      const k = `${i.deviceId}|${i.waMessageId}`;
      if (inLog.has(k) && (!webhooks || ackedMessages.has(k))) continue;
      // The simulated WhatsApp lost it with Redis before any socket had it: it never comes.
      const reset = resets.find((r) => r >= i.t);
      if (reset !== undefined && !((handed.get(k) ?? Infinity) <= reset)) continue;
      owed.add(i.deviceId);
    }
    if (webhooks) {
      for (const deviceId of devices) {
        const last = cursor.get(deviceId) ?? 0;
        const got = acked.get(deviceId);
        for (let s = 1; s <= last; s++) {
          if (!got?.has(s)) {
            owed.add(deviceId);
            break;
          }
        }
      }
    }
    return owed;
  };

  const readAll = async (ids: readonly string[]) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: READERS }, async () => {
        for (let i = next++; i < ids.length; i = next++) await readLog(ids[i]!);
      }),
    );
  };

  return {
    serverEnv: {
      OUTBOUND_ALLOW_PRIVATE: 'true',
      WEBHOOK_URL: receiver.url,
      WEBHOOK_SECRET,
      WEBHOOK_TIMEOUT_MS: String(webhookTimeoutMs),
    },

    async detect() {
      const res = await call('/openapi.json');
      const doc = res?.ok ? ((await res.json()) as { paths?: Record<string, unknown> }) : {};
      webhooks = WEBHOOK_ROUTE in (doc.paths ?? {});
      record({ t: Date.now(), kind: 'webhooks', enabled: webhooks, ...(webhooks ? {} : { reason: `no ${WEBHOOK_ROUTE} in /openapi.json: this build delivers no webhooks` }) });
      options.progress(webhooks ? `webhooks to ${receiver.url}` : 'this build delivers no webhooks: inbound checked through the pull API only');
    },

    injectOne() {
      const deviceId = devices[Math.floor(random() * devices.length)]!;
      const running = inject(deviceId).finally(() => injecting.delete(running));
      injecting.add(running);
    },

    async runReceiverFaults(stopping) {
      // Faults of a receiver nobody delivers to would test nothing.
      if (!webhooks) return;
      const wait = async (ms: number) => {
        const until = Date.now() + ms;
        while (!stopping() && Date.now() < until) await sleep(Math.min(250, until - Date.now()));
      };
      const longest = Math.max(webhookTimeoutMs * 3, options.ttlMs * 2);
      const bounds = { gapMs: [options.ttlMs, options.ttlMs * 4] as [number, number], forMs: [webhookTimeoutMs * 2, longest] as [number, number] };
      let id = 0;
      for (const planned of receiverFaultSchedule(options.seed, bounds)) {
        await wait(planned.afterMs);
        if (stopping()) break;
        id += 1;
        record({ t: Date.now(), kind: 'receiver', id, mode: planned.mode, phase: 'start' });
        options.progress(`webhook receiver fault #${id}: ${planned.mode} for ${planned.forMs} ms`);
        await receiver.setMode(planned.mode);
        await wait(planned.forMs);
        await receiver.setMode('ok');
        record({ t: Date.now(), kind: 'receiver', id, mode: planned.mode, phase: 'end' });
      }
    },

    async settle(drainSim) {
      await Promise.all(injecting);
      const started = Date.now();
      let pending: readonly string[] = devices;
      for (;;) {
        await drainSim();
        await readAll(pending);
        pending = [...owing()];
        if (pending.length === 0 || Date.now() - started > options.drainMs) break;
        await sleep(1000);
      }
      // What every device's log holds now, with what arrived since its last read.
      await readAll(devices);
      for (const deviceId of devices) for (const e of logged.get(deviceId) ?? []) record(e);
      return { waitedMs: Date.now() - started, pending: pending.length };
    },

    unanswered: () => unanswered,

    async close() {
      closing = true;
      await receiver.close();
    },
  };
}
