import type { FaultType, ReceiverFault } from './history.js';

// The fault schedule, drawn from the seed: the same seed gives the same faults, in the same
// order, on the same targets (by index), so a failing run can be run again.

export const FAULT_TYPES: readonly FaultType[] = [
  'sigkill',
  'sigstop',
  'sigterm',
  'redis_client_kill',
  'redis_restart',
  'store_outage',
  'server_join',
  'server_leave',
];

/** mulberry32: small, fast, and good enough to pick faults. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface PlannedFault {
  type: FaultType;
  /** Picks the target among the candidates at the time (servers running, say). */
  pick: number;
  /** Quiet time after the cluster recovered, before the next fault. */
  gapMs: number;
}

/**
 * Every fault type once, in a seeded order (a join always before a leave, so a leave never
 * shrinks the cluster below where it started), then seeded picks for as long as the run lasts.
 */
export function* faultSchedule(seed: number, gap: { minMs: number; maxMs: number }): Generator<PlannedFault> {
  const random = seededRandom(seed);
  const draw = (type: FaultType): PlannedFault => ({
    type,
    pick: Math.floor(random() * 1_000_000),
    gapMs: Math.round(gap.minMs + random() * (gap.maxMs - gap.minMs)),
  });
  const first = [...FAULT_TYPES];
  for (let i = first.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [first[i], first[j]] = [first[j]!, first[i]!];
  }
  const join = first.indexOf('server_join');
  const leave = first.indexOf('server_leave');
  if (leave < join) [first[join], first[leave]] = [first[leave]!, first[join]!];
  for (const type of first) yield draw(type);
  let joined = 0;
  for (;;) {
    const type = FAULT_TYPES[Math.floor(random() * FAULT_TYPES.length)]!;
    // Leaves only ever take away servers that joined, so the cluster keeps its size on average.
    if (type === 'server_leave' && joined === 0) continue;
    if (type === 'server_join') joined += 1;
    if (type === 'server_leave') joined -= 1;
    yield draw(type);
  }
}

export const RECEIVER_FAULTS: readonly ReceiverFault[] = ['error', 'hang', 'down'];

export interface PlannedReceiverFault {
  mode: ReceiverFault;
  /** Healthy time before it starts. */
  afterMs: number;
  /** How long it lasts. */
  forMs: number;
}

/**
 * The webhook receiver's own faults, on a timeline of their own beside the cluster's: every mode
 * once in a seeded order, then seeded picks for as long as the run lasts. Drawn from a stream of
 * the seed apart from the cluster's faults, so adding these changed none of those.
 */
export function* receiverFaultSchedule(seed: number, bounds: { gapMs: [number, number]; forMs: [number, number] }): Generator<PlannedReceiverFault> {
  const random = seededRandom(seed ^ 0x7ec31e);
  const between = ([min, max]: [number, number]) => Math.round(min + random() * (max - min));
  const first = [...RECEIVER_FAULTS];
  for (let i = first.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [first[i], first[j]] = [first[j]!, first[i]!];
  }
  for (const mode of first) yield { mode, afterMs: between(bounds.gapMs), forMs: between(bounds.forMs) };
  for (;;) yield { mode: RECEIVER_FAULTS[Math.floor(random() * RECEIVER_FAULTS.length)]!, afterMs: between(bounds.gapMs), forMs: between(bounds.forMs) };
}
