import { waMessageIdFor } from '../../src/queues/messages.js';
import { percentile } from '../bench/report.js';
import type { FaultType, HistoryEvent, ReceiverFault } from './history.js';

// Reads a chaos run's history (see history.ts) and either proves the run's guarantees or names the
// exact events that break them. Pure: no I/O, so planted histories test it directly.
//
// What it checks:
//  - one socket per device: the simulated WhatsApp replaced no socket that was still open (a
//    `socket_open` with `kicked` set is two sockets open at once) and counted zero conflicts;
//  - fencing: every write that counted (a delivered message, a socket opened, a store write the
//    fence let through) carried the newest token granted for its device at that moment, and in
//    the store's own apply order no write counted after one with a newer token had;
//  - messages: every accepted message delivered exactly once, in accept order per device;
//  - recovery: every device that went down after a fault was connected again within the
//    fault's bound (TTL + the configured slack, chosen by the runner) of the fault, or, for an
//    outage that began later than that, of its own start;
//  - the end: every device owned, and connected by its owner;
//  - inbound events (checkInbound): every injected message in its device's log once and, when the
//    servers deliver webhooks, acknowledged by the receiver at least once; one event id per
//    WhatsApp message and one sequence per event id (a stale owner's append would make a second
//    id); each device's log numbered 1..N without gaps, and every one of those N delivered; every
//    delivery signed and named by its event id.

export type CheckName =
  | 'double_ownership'
  | 'conflicts'
  | 'stale_write'
  | 'lost_message'
  | 'duplicate_send'
  | 'order'
  | 'recovery'
  | 'unowned'
  | 'lost_inbound'
  | 'inbound_duplicate'
  | 'event_sequence'
  | 'webhook_gap'
  | 'webhook_request';

export interface Violation {
  check: CheckName;
  message: string;
  events: HistoryEvent[];
}

export interface FaultFigures {
  count: number;
  /** The slowest device's time back, from the fault's reference moment; 0 when none went down. */
  worstRecoveryMs: number;
  /** Devices that went down after faults of this type. */
  devicesDown: number;
}

export interface InboundFigures {
  injected: number;
  /**
   * Injected before Redis lost its data and never handed to a socket: lost with the simulated
   * WhatsApp, whose queue lives in that Redis (WhatsApp would have kept it). Not wafleet's loss.
   */
  lostWithSimulator: number;
  /**
   * Injected messages missing from their log or never acknowledged by the webhook (violations)
   * that a socket of the device had taken before Redis lost its data: the store's to give back.
   */
  lostWithRedis: number;
  /** Injected messages found in their device's log at the end. */
  logged: number;
  /** Events of every type in the devices' logs at the end. */
  eventsLogged: number;
  webhooks: { enabled: boolean; reason?: string };
  /** POSTs the receiver got, and those it answered 2xx. */
  requests: number;
  acknowledged: number;
  /** Distinct events acknowledged, and acknowledged deliveries of an event acknowledged before. */
  eventsDelivered: number;
  redelivered: number;
  /** Injected messages the receiver acknowledged. */
  injectedDelivered: number;
  /** Deliveries unsigned, badly signed, not an event, or named by another id. */
  badRequests: number;
  /**
   * Events whose first request came after a request of a later event of the same device. A figure,
   * not a check: an event failing is retried on its own while later ones go ahead, and a Redis
   * loss or a paused owner can delay one; how often it happens is worth watching.
   */
  firstTriesOutOfOrder: number;
  /** From the inject's 202 to the first acknowledged delivery of its message, ms. */
  latencyMs: { p50: number; p99: number; max: number } | null;
  receiverFaults: Partial<Record<ReceiverFault, number>>;
}

export interface CheckResult {
  ok: boolean;
  violations: Violation[];
  stats: {
    events: number;
    devices: number;
    socketsOpened: number;
    accepted: number;
    delivered: number;
    /** Resends the simulated WhatsApp dropped because it had delivered the id already. */
    duplicatesDropped: number;
    /**
     * Resends, after Redis lost its data, of a message delivered before the loss: WhatsApp drops
     * them by message id, the simulated one no longer can (see the `send` case); counted apart so
     * the report shows how many the run leaned on that for.
     */
    resentAfterRedisLoss: number;
    conflicts: number;
    /** State writes that reached the store, and those of them its fence refused. */
    storeWrites: number;
    storeWritesFenced: number;
    faults: Partial<Record<FaultType, FaultFigures>>;
    inbound: InboundFigures;
  };
}

export interface CheckOptions {
  /** Bound for a fault event that carries none. */
  defaultBoundMs: number;
  /** Violations listed per check at most (the count is always exact in the message). */
  maxPerCheck?: number;
}

/**
 * How soon after a rebalance release the probe (every 250 ms) sees the device down, for the
 * outage to be the handoff's.
 */
const REBALANCE_OUTAGE_LINK_MS = 1000;

/** Faults whose devices cannot come back before the fault is undone: measured from its end. */
const MEASURED_FROM_END = new Set<FaultType>(['redis_restart']);

type Of<K extends HistoryEvent['kind']> = Extract<HistoryEvent, { kind: K }>;

/** Stable sort by time: events from one source keep their file order on equal times. */
const byTime = (events: readonly HistoryEvent[]) =>
  events
    .map((e, i) => [e, i] as const)
    .sort((a, b) => a[0].t - b[0].t || a[1] - b[1])
    .map(([e]) => e);

export function checkHistory(history: readonly HistoryEvent[], options: CheckOptions): CheckResult {
  const events = byTime(history);
  const maxPerCheck = options.maxPerCheck ?? 20;
  const found = new Map<CheckName, Violation[]>();
  const counts = new Map<CheckName, number>();
  const report = (check: CheckName, message: string, evidence: HistoryEvent[]) => {
    counts.set(check, (counts.get(check) ?? 0) + 1);
    const list = found.get(check) ?? [];
    if (list.length < maxPerCheck) list.push({ check, message, events: evidence });
    found.set(check, list);
  };

  const devices = new Set<string>();
  const newestClaim = new Map<string, Of<'claim'>>();
  const openSocket = new Map<string, Of<'socket_open'>>();
  const socketsById = new Map<string, Of<'socket_open'>>();
  const closedSockets = new Set<string>();
  const accepted = new Map<string, Of<'accept'>>();
  const deliveries = new Map<string, Of<'send'>[]>();
  const lastDelivered = new Map<string, { accept: Of<'accept'>; send: Of<'send'> }>();
  const resets: Of<'sim_reset'>[] = [];
  let socketsOpened = 0;
  let duplicatesDropped = 0;
  let resentAfterRedisLoss = 0;
  let conflicts = 0;
  let conflictsEvent: Of<'conflicts'> | undefined;
  let storeWrites = 0;
  let storeWritesFenced = 0;
  // The run records an accept when the 202 reaches it, which can be after the simulated WhatsApp
  // has already delivered the message (and before the run could name the WhatsApp id it saw):
  // sends are matched to accepts over the whole history, by our id or the WhatsApp id made from it.
  const byWaMessageId = new Map<string, string>();
  for (const e of events) {
    if (e.kind !== 'accept') continue;
    accepted.set(e.messageId, e);
    byWaMessageId.set(waMessageIdFor(e.messageId), e.messageId);
  }
  const messageOf = (sent: Of<'send'>) => (sent.messageId.startsWith('wa:') ? (byWaMessageId.get(sent.messageId.slice(3)) ?? sent.messageId) : sent.messageId);

  const checkToken = (e: HistoryEvent & { deviceId: string; token: number }, what: string) => {
    const claim = newestClaim.get(e.deviceId);
    if (claim && e.token < claim.token) {
      report('stale_write', `${what} for ${e.deviceId} carried token ${e.token} after token ${claim.token} was granted to ${claim.serverId}`, [claim, e]);
    }
  };

  for (const e of events) {
    if ('deviceId' in e) devices.add(e.deviceId);
    switch (e.kind) {
      case 'claim': {
        const previous = newestClaim.get(e.deviceId);
        if (previous && e.token <= previous.token) {
          report('stale_write', `claim of ${e.deviceId} by ${e.serverId} got token ${e.token}, not above ${previous.token} already granted`, [previous, e]);
        }
        if (!previous || e.token > previous.token) newestClaim.set(e.deviceId, e);
        break;
      }
      case 'socket_open': {
        socketsOpened += 1;
        socketsById.set(e.socketId, e);
        checkToken(e, `socket opened by ${e.serverId}`);
        if (e.kicked) {
          const older = socketsById.get(e.kicked);
          report('double_ownership', `${e.deviceId} had two sockets open at once: ${e.kicked} was still open when ${e.socketId} opened`, older ? [older, e] : [e]);
        }
        // An older socket replaced without a kick had timed out on the WhatsApp side already.
        openSocket.set(e.deviceId, e);
        break;
      }
      case 'socket_close': {
        const current = openSocket.get(e.deviceId);
        if (current?.socketId === e.socketId) {
          openSocket.delete(e.deviceId);
          closedSockets.add(e.socketId);
          break;
        }
        // WhatsApp logs a close only for the device's open socket: closing one that a newer
        // socket had replaced means both were open in between.
        const older = socketsById.get(e.socketId);
        if (older && current && !closedSockets.has(e.socketId) && current.kicked !== e.socketId) {
          report('double_ownership', `${e.deviceId} had two sockets open at once: ${e.socketId} closed only after ${current.socketId} had opened`, [older, current, e]);
        }
        closedSockets.add(e.socketId);
        break;
      }
      case 'sim_reset':
        resets.push(e);
        openSocket.clear();
        break;
      case 'send': {
        if (e.duplicate) {
          duplicatesDropped += 1;
          break;
        }
        const sent: Of<'send'> = { ...e, messageId: messageOf(e) };
        const earlier = deliveries.get(sent.messageId)?.[0];
        // The simulated WhatsApp keeps the ids it delivered in Redis, so once Redis lost its data
        // it cannot drop a resend the way WhatsApp does (by WhatsApp's message id, the same on
        // every resend: derived from ours). A message sent just before the loss whose end had not
        // reached the store is restored and sent again; WhatsApp drops that: not a second delivery.
        if (earlier && resets.some((r) => r.t >= earlier.t && r.t <= sent.t)) {
          resentAfterRedisLoss += 1;
          break;
        }
        checkToken(sent, `message ${sent.messageId} sent by ${sent.serverId}`);
        const list = deliveries.get(sent.messageId) ?? [];
        list.push(sent);
        deliveries.set(sent.messageId, list);
        if (list.length > 1) report('duplicate_send', `message ${sent.messageId} for ${sent.deviceId} was delivered ${list.length} times`, [...list]);
        const accept = accepted.get(sent.messageId);
        if (accept && list.length === 1) {
          const last = lastDelivered.get(sent.deviceId);
          if (last && accept.seq < last.accept.seq) {
            report('order', `${sent.deviceId}: message ${sent.messageId} (#${accept.seq}) was delivered after ${last.accept.messageId} (#${last.accept.seq})`, [last.send, sent]);
          } else {
            lastDelivered.set(sent.deviceId, { accept, send: sent });
          }
        }
        break;
      }
      case 'store_write':
        storeWrites += 1;
        // A write the fence refused did not count, whatever token it carried.
        if (e.applied === false) storeWritesFenced += 1;
        else checkToken(e, `store write${e.what ? ` (${e.what})` : ''} by ${e.serverId}`);
        break;
      case 'conflicts':
        conflicts = e.total;
        conflictsEvent = e;
        break;
      default:
        break;
    }
  }

  // The write-behind applies writes long after they happened; what must hold in the store itself
  // is that, in the order it applied them, a device's token never went back.
  const applyOrder = events
    .filter((e): e is Of<'store_write'> => e.kind === 'store_write' && e.applied === true && e.seq !== undefined)
    .sort((a, b) => a.seq! - b.seq!);
  const newestApplied = new Map<string, Of<'store_write'>>();
  for (const w of applyOrder) {
    const newest = newestApplied.get(w.deviceId);
    if (newest && w.token < newest.token) {
      report('stale_write', `store applied ${w.what ?? 'a write'} for ${w.deviceId} with token ${w.token} after it had applied token ${newest.token}`, [newest, w]);
    }
    if (!newest || w.token > newest.token) newestApplied.set(w.deviceId, w);
  }

  if (conflicts > 0 && conflictsEvent) report('conflicts', `the simulated WhatsApp counted ${conflicts} conflicts`, [conflictsEvent]);

  // Accepted messages are in the store before the 202, and put back after Redis lost its data:
  // one never delivered is lost, Redis loss or not.
  for (const accept of accepted.values()) {
    if (deliveries.has(accept.messageId)) continue;
    const reset = resets.find((r) => r.t >= accept.t);
    report('lost_message', `message ${accept.messageId} (#${accept.seq}) accepted for ${accept.deviceId} was never delivered${reset ? ' (accepted before Redis lost its data)' : ''}`, reset ? [accept, reset] : [accept]);
  }

  const faults = checkRecovery(events, options, report);
  const inbound = checkInbound(events, report);

  for (const e of events) {
    if (e.kind !== 'final') continue;
    if (e.owner === null) report('unowned', `${e.deviceId} ended with no owner`, [e]);
    else if (e.socketServer !== e.owner) report('unowned', `${e.deviceId} ended owned by ${e.owner} but ${e.socketServer ? `connected by ${e.socketServer}` : 'not connected'}`, [e]);
  }

  const violations: Violation[] = [];
  for (const [check, list] of found) {
    const total = counts.get(check) ?? list.length;
    if (total > list.length) list[list.length - 1]!.message += ` (and ${total - list.length} more ${check} violations)`;
    violations.push(...list);
  }
  return {
    ok: violations.length === 0,
    violations,
    stats: {
      events: events.length,
      devices: devices.size,
      socketsOpened,
      accepted: accepted.size,
      delivered: deliveries.size,
      duplicatesDropped,
      resentAfterRedisLoss,
      conflicts,
      storeWrites,
      storeWritesFenced,
      faults,
      inbound,
    },
  };
}

/**
 * Each fault owns the devices that went down between its start and the next fault's start; each
 * of those must be up again within the fault's bound of its reference moment.
 */
function checkRecovery(
  events: readonly HistoryEvent[],
  options: CheckOptions,
  report: (check: CheckName, message: string, events: HistoryEvent[]) => void,
): Partial<Record<FaultType, FaultFigures>> {
  interface Instance {
    start: Of<'fault'>;
    end?: Of<'fault'>;
  }
  const instances = new Map<number, Instance>();
  for (const e of events) {
    if (e.kind !== 'fault') continue;
    const instance = instances.get(e.id);
    if (e.phase === 'start' && !instance) instances.set(e.id, { start: e });
    else if (e.phase === 'end' && instance) instance.end = e;
  }
  const ordered = [...instances.values()].sort((a, b) => a.start.t - b.start.t);

  // Down intervals per device from the runner's probe: [down event, next up event or none].
  const downs: Array<{ down: Of<'connectivity'>; up?: Of<'connectivity'> }> = [];
  const openDown = new Map<string, { down: Of<'connectivity'>; up?: Of<'connectivity'> }>();
  for (const e of events) {
    if (e.kind !== 'connectivity') continue;
    const current = openDown.get(e.deviceId);
    if (!e.up && !current) {
      const interval = { down: e };
      downs.push(interval);
      openDown.set(e.deviceId, interval);
    } else if (e.up && current) {
      current.up = e;
      openDown.delete(e.deviceId);
    }
  }

  // A device the rebalance handed over goes down for the handoff: a planned move with an outage of
  // its own, whenever it falls (a rebalance follows a killed server's restart within the fault's
  // bound), so it counts from its own start, like any later blip.
  const rebalancedAt = new Map<string, number[]>();
  for (const e of events) {
    if (e.kind === 'release' && e.reason === 'rebalance') rebalancedAt.set(e.deviceId, [...(rebalancedAt.get(e.deviceId) ?? []), e.t]);
  }
  const beganWithRebalance = (down: Of<'connectivity'>) =>
    (rebalancedAt.get(down.deviceId) ?? []).some((t) => t <= down.t && down.t - t <= REBALANCE_OUTAGE_LINK_MS);

  const figures: Partial<Record<FaultType, FaultFigures>> = {};
  ordered.forEach((instance, i) => {
    const { start } = instance;
    const type = start.fault;
    const from = MEASURED_FROM_END.has(type) ? (instance.end ?? start).t : start.t;
    const until = ordered[i + 1]?.start.t ?? Number.POSITIVE_INFINITY;
    const bound = start.boundMs ?? options.defaultBoundMs;
    const f = (figures[type] ??= { count: 0, worstRecoveryMs: 0, devicesDown: 0 });
    f.count += 1;
    for (const interval of downs) {
      if (interval.down.t < start.t || interval.down.t >= until) continue;
      f.devicesDown += 1;
      // An outage that starts within the bound is the fault's doing and counts from the fault,
      // unless a rebalance handoff began it; a later one is a blip of its own, and counts from
      // when it began. Either way no device may stay down longer than the bound.
      const since = interval.down.t - from <= bound && !beganWithRebalance(interval.down) ? from : interval.down.t;
      const back = interval.up ? Math.max(0, interval.up.t - since) : Number.POSITIVE_INFINITY;
      f.worstRecoveryMs = Math.max(f.worstRecoveryMs, back);
      if (back > bound) {
        const how = interval.up ? `was connected again ${back} ms after${since === from ? '' : ' going down during'}` : 'was never connected again after';
        report('recovery', `${interval.down.deviceId} ${how} ${type} #${start.id} (bound ${bound} ms)`, interval.up ? [start, interval.down, interval.up] : [start, interval.down]);
      }
    }
  });
  return figures;
}

/** `1-3, 7` for [1, 2, 3, 7]: the sequences a device is missing, short. */
function ranges(values: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < values.length; ) {
    let j = i;
    while (j + 1 < values.length && values[j + 1] === values[j]! + 1) j++;
    parts.push(i === j ? `${values[i]}` : `${values[i]}-${values[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

const acknowledged = (e: Of<'webhook'>) => typeof e.answer === 'number' && e.answer >= 200 && e.answer < 300;

/**
 * Inbound events: what the run injected against what the devices' logs hold at the end (the pull
 * API) and what the webhook receiver got. Without a `webhooks` event saying the servers deliver
 * them, only the logs are checked.
 */
function checkInbound(events: readonly HistoryEvent[], report: (check: CheckName, message: string, events: HistoryEvent[]) => void): InboundFigures {
  const of = <K extends HistoryEvent['kind']>(kind: K) => events.filter((e): e is Of<K> => e.kind === kind);
  const injects = of('inject');
  const logged = of('logged');
  const requests = of('webhook');
  const resets = of('sim_reset');
  const switched = of('webhooks').at(-1);
  const webhooks = switched ? { enabled: switched.enabled, ...(switched.reason ? { reason: switched.reason } : {}) } : { enabled: false, reason: 'no webhook receiver in this run' };
  const key = (deviceId: string, what: string | number) => `${deviceId}|${what}`;

  const handed = new Map<string, Of<'sim_inbound'>[]>();
  for (const e of of('sim_inbound')) handed.set(key(e.deviceId, e.waMessageId), [...(handed.get(key(e.deviceId, e.waMessageId)) ?? []), e]);

  // Every delivery is an event, signed, and named by its own id.
  let badRequests = 0;
  for (const r of requests) {
    const problem = !r.eventId
      ? 'a POST whose body is not an event'
      : r.signature !== 'valid'
        ? `event ${r.eventId} of ${r.deviceId} delivered with a ${r.signature} signature`
        : r.headerEventId !== r.eventId
          ? `event ${r.eventId} of ${r.deviceId} delivered with X-Wafleet-Event-Id ${r.headerEventId || '(none)'}`
          : null;
    if (!problem) continue;
    badRequests += 1;
    report('webhook_request', problem, [r]);
  }

  // One sequence per event id, one event id per sequence, one event id per WhatsApp message: over
  // the log and every delivery, so a redelivery that renumbered or renamed an event is caught too.
  const sequenceOf = new Map<string, Of<'logged'> | Of<'webhook'>>();
  const eventAt = new Map<string, Of<'logged'> | Of<'webhook'>>();
  const eventOfMessage = new Map<string, Of<'logged'> | Of<'webhook'>>();
  const told = new Set<string>();
  const once = (id: string, check: CheckName, message: string, evidence: HistoryEvent[]) => {
    if (told.has(id)) return;
    told.add(id);
    report(check, message, evidence);
  };
  for (const e of [...logged, ...requests.filter((r) => r.eventId)]) {
    const first = sequenceOf.get(key(e.deviceId, e.eventId));
    if (!first) sequenceOf.set(key(e.deviceId, e.eventId), e);
    else if (first.sequence !== e.sequence) {
      once(`id ${e.deviceId} ${e.eventId}`, 'event_sequence', `event ${e.eventId} of ${e.deviceId} came with sequence ${first.sequence} and ${e.sequence}`, [first, e]);
    }
    const there = eventAt.get(key(e.deviceId, e.sequence));
    if (!there) eventAt.set(key(e.deviceId, e.sequence), e);
    else if (there.eventId !== e.eventId) {
      once(`seq ${e.deviceId} ${e.sequence}`, 'event_sequence', `${e.deviceId}'s sequence ${e.sequence} came as event ${there.eventId} and as ${e.eventId}`, [there, e]);
    }
    if (e.type !== 'message.received' || !e.waMessageId) continue;
    const named = eventOfMessage.get(key(e.deviceId, e.waMessageId));
    if (!named) eventOfMessage.set(key(e.deviceId, e.waMessageId), e);
    else if (named.eventId !== e.eventId) {
      once(
        `wa ${e.deviceId} ${e.waMessageId}`,
        'inbound_duplicate',
        `${e.deviceId} got WhatsApp message ${e.waMessageId} as two events, ${named.eventId} (sequence ${named.sequence}) and ${e.eventId} (sequence ${e.sequence}): what a stale owner's append would make`,
        [named, e],
      );
    }
  }

  // Each device's log is 1..N without gaps (nothing is trimmed in a run's time).
  const logOf = new Map<string, number[]>();
  for (const e of logged) logOf.set(e.deviceId, [...(logOf.get(e.deviceId) ?? []), e.sequence]);
  for (const [deviceId, sequences] of logOf) {
    sequences.sort((a, b) => a - b);
    const missing: number[] = [];
    for (let expected = 1, i = 0; i < sequences.length; i++) {
      const s = sequences[i]!;
      if (s < expected) continue; // the same sequence twice: caught above if it named two events
      for (; expected < s; expected++) missing.push(expected);
      expected = s + 1;
    }
    if (missing.length > 0) {
      report('event_sequence', `${deviceId}'s log of ${sequences.at(-1)} events lacks sequence ${ranges(missing)}`, logged.filter((e) => e.deviceId === deviceId).slice(0, 3));
    }
  }

  // Every sequence of every device delivered, up to the last one anyone saw.
  const acked = requests.filter(acknowledged);
  if (webhooks.enabled) {
    const deliveredOf = new Map<string, Set<number>>();
    for (const r of acked) deliveredOf.set(r.deviceId, (deliveredOf.get(r.deviceId) ?? new Set()).add(r.sequence));
    const lastOf = new Map<string, number>();
    for (const e of [...logged, ...requests]) if (e.deviceId) lastOf.set(e.deviceId, Math.max(lastOf.get(e.deviceId) ?? 0, e.sequence));
    for (const [deviceId, last] of lastOf) {
      const delivered = deliveredOf.get(deviceId) ?? new Set<number>();
      const missing: number[] = [];
      for (let s = 1; s <= last; s++) if (!delivered.has(s)) missing.push(s);
      if (missing.length === 0) continue;
      const tried = requests.filter((r) => r.deviceId === deviceId && missing.includes(r.sequence));
      report(
        'webhook_gap',
        `the webhook never acknowledged ${deviceId}'s sequence ${ranges(missing)} of 1..${last}${tried.length > 0 ? ` (${tried.length} of its requests were answered with a fault)` : ' (never sent)'}`,
        [...tried.slice(0, 2), ...logged.filter((e) => e.deviceId === deviceId && missing.includes(e.sequence)).slice(0, 2)],
      );
    }
  }

  // Every injected message logged and, with webhooks, acknowledged.
  const inLog = new Set(logged.filter((e) => e.waMessageId && e.type === 'message.received').map((e) => key(e.deviceId, e.waMessageId!)));
  const firstAck = new Map<string, Of<'webhook'>>();
  for (const r of acked) if (r.type === 'message.received' && r.waMessageId && !firstAck.has(key(r.deviceId, r.waMessageId))) firstAck.set(key(r.deviceId, r.waMessageId), r);
  let lostWithSimulator = 0;
  let lostWithRedis = 0;
  let loggedInjected = 0;
  const latencies: number[] = [];
  for (const inject of injects) {
    const k = key(inject.deviceId, inject.waMessageId);
    const ack = firstAck.get(k);
    if (inLog.has(k)) loggedInjected += 1;
    if (ack) latencies.push(Math.max(0, ack.t - inject.t));
    if (inLog.has(k) && (ack || !webhooks.enabled)) continue;
    const sockets = handed.get(k) ?? [];
    const reset = resets.find((r) => r.t >= inject.t);
    if (!inLog.has(k) && !ack && reset && !sockets.some((h) => h.t <= reset.t)) {
      lostWithSimulator += 1;
      continue;
    }
    const where = [inLog.has(k) ? '' : 'is not in its log', !webhooks.enabled || ack ? '' : 'was never acknowledged by the webhook'].filter(Boolean).join(' and ');
    const hands = sockets.length > 0 ? `handed to ${sockets.map((h) => `${h.serverId} (token ${h.token})`).join(', ')}` : 'never handed to a socket';
    const beforeLoss = reset && sockets.some((h) => h.t <= reset.t) ? '; in wafleet before Redis lost its data' : '';
    if (beforeLoss) lostWithRedis += 1;
    report('lost_inbound', `WhatsApp message ${inject.waMessageId} injected for ${inject.deviceId} ${where} (${hands}${beforeLoss})`, [inject, ...sockets.slice(0, 2), ...(beforeLoss ? [reset!] : [])]);
  }

  let firstTriesOutOfOrder = 0;
  const tried = new Set<string>();
  const highest = new Map<string, number>();
  for (const r of requests) {
    if (!r.eventId || tried.has(key(r.deviceId, r.eventId))) continue;
    tried.add(key(r.deviceId, r.eventId));
    if (r.sequence < (highest.get(r.deviceId) ?? 0)) firstTriesOutOfOrder += 1;
    else highest.set(r.deviceId, r.sequence);
  }

  const delivered = new Set(acked.map((r) => key(r.deviceId, r.eventId)));
  const receiverFaults: InboundFigures['receiverFaults'] = {};
  for (const e of of('receiver')) if (e.phase === 'start') receiverFaults[e.mode] = (receiverFaults[e.mode] ?? 0) + 1;
  latencies.sort((a, b) => a - b);
  return {
    injected: injects.length,
    lostWithSimulator,
    lostWithRedis,
    logged: loggedInjected,
    eventsLogged: logged.length,
    webhooks,
    requests: requests.length,
    acknowledged: acked.length,
    eventsDelivered: delivered.size,
    redelivered: acked.length - delivered.size,
    injectedDelivered: injects.filter((i) => firstAck.has(key(i.deviceId, i.waMessageId))).length,
    badRequests,
    firstTriesOutOfOrder,
    latencyMs: latencies.length > 0 ? { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1)! } : null,
    receiverFaults,
  };
}

/** A human summary: faults by type with the worst recovery, then the verdict and its evidence. */
export function formatReport(result: CheckResult): string {
  const { stats } = result;
  const lines = [
    `history: ${stats.events} events, ${stats.devices} devices, ${stats.socketsOpened} sockets opened`,
    `messages: ${stats.accepted} accepted, ${stats.delivered} delivered, ${stats.duplicatesDropped} resends dropped by WhatsApp, ${stats.resentAfterRedisLoss} resent after Redis lost its data (same WhatsApp id: dropped by WhatsApp)`,
    `conflicts counted by the simulated WhatsApp: ${stats.conflicts}`,
    `store state writes: ${stats.storeWrites}, of which the fence refused ${stats.storeWritesFenced}`,
    'faults:',
  ];
  for (const [type, f] of Object.entries(stats.faults)) {
    const worst = Number.isFinite(f.worstRecoveryMs) ? `${f.worstRecoveryMs} ms` : 'never';
    lines.push(`  ${type.padEnd(18)} ${String(f.count).padStart(3)} injected, ${String(f.devicesDown).padStart(5)} device outages, worst recovery ${worst}`);
  }
  lines.push(...inboundLines(stats.inbound));
  lines.push(result.ok ? 'verdict: PASS (no violation)' : `verdict: FAIL (${result.violations.length} violations listed)`);
  for (const v of result.violations) {
    lines.push(`  [${v.check}] ${v.message}`);
    for (const e of v.events) lines.push(`      ${JSON.stringify(e)}`);
  }
  return lines.join('\n');
}

function inboundLines(f: InboundFigures): string[] {
  if (f.injected === 0 && f.eventsLogged === 0 && f.requests === 0) return [];
  const lines = [
    `inbound: ${f.injected} messages injected, ${f.logged} of them in their devices' logs; ${f.eventsLogged} events logged`,
    `inbound: Redis losses: ${f.lostWithSimulator} messages never reached a socket (lost with the simulated WhatsApp: not checked), ${f.lostWithRedis} reached wafleet and are missing from a log or the webhook (violations)`,
  ];
  if (!f.webhooks.enabled) {
    lines.push(`webhooks: not checked (${f.webhooks.reason ?? 'the servers deliver none'})`);
    return lines;
  }
  const latency = f.latencyMs ? `inject to webhook p50 ${f.latencyMs.p50} ms, p99 ${f.latencyMs.p99} ms, max ${f.latencyMs.max} ms` : 'no latency (nothing delivered)';
  const faults = Object.entries(f.receiverFaults).map(([mode, n]) => `${mode} ${n}`).join(', ') || 'none';
  lines.push(
    `webhooks: ${f.requests} requests, ${f.acknowledged} acknowledged, ${f.eventsDelivered} events delivered (${f.redelivered} redeliveries), ${f.injectedDelivered}/${f.injected} injected messages, ${f.badRequests} badly signed or named`,
    `webhooks: ${latency}; ${f.firstTriesOutOfOrder} events first tried after a later one of their device; receiver faults: ${faults}`,
  );
  return lines;
}
