import type { MonotonicClock } from '../shared/clock.js';
import { LeaseLostError, SelfFencedError } from './errors.js';

/**
 * The one gate every side effect passes: a send, an auth-state write, a status write. It knows
 * two things, both local and cheap: when the last renewal that succeeded was *sent* (a monotonic
 * time), and which token this server holds for each device. A renewal's success proves the leases
 * were valid when it was sent, not when the answer arrived, so the self-fence deadline counts from
 * the send: past selfFenceMs from it, another server may be about to claim (TTL), and this one
 * stops acting before that can happen.
 *
 * The guard also says when it changes between fenced and not, whatever made it change (the
 * deadline passing, a renewal by the heartbeat or by the Redis-reset path, a revoke), so whoever
 * stops and restarts devices learns of every change, not only those one caller happened to see.
 */
export interface LeaseGuard {
  /** Records a renewal that succeeded, with the monotonic time at which it was sent. */
  renewed(sentAt: number): void;
  /** Forgets the renewal history (e.g. Redis lost its data): fenced until the next success. */
  revoke(): void;
  isFenced(): boolean;
  /** ms left before self-fencing; negative once fenced. */
  remainingMs(): number;
  hold(deviceId: string, token: number): void;
  drop(deviceId: string, token?: number): void;
  tokenOf(deviceId: string): number | undefined;
  /** Throws SelfFencedError or LeaseLostError unless this server may act for the device now. */
  check(deviceId: string, token: number): void;
  /** The devices and tokens held, for the heartbeat. */
  held(): Array<{ deviceId: string; token: number }>;
  readonly size: number;
  /**
   * Calls `listener(true)` each time the guard becomes fenced and `listener(false)` each time a
   * renewal lifts the fence, from the first change after subscribing. Returns the unsubscribe.
   */
  onChange(listener: (fenced: boolean) => void): () => void;
}

export function createLeaseGuard({ clock, selfFenceMs }: { clock: MonotonicClock; selfFenceMs: number }): LeaseGuard {
  // Starts fenced: nothing may act before the first renewal succeeds.
  let lastRenewalSentAt = Number.NEGATIVE_INFINITY;
  const tokens = new Map<string, number>();
  const listeners = new Set<(fenced: boolean) => void>();
  /** The state listeners last heard of. */
  let reported = true;
  let deadlineTimer: NodeJS.Timeout | undefined;

  const remainingMs = () => lastRenewalSentAt + selfFenceMs - clock();
  const report = () => {
    const fenced = remainingMs() <= 0;
    if (fenced !== reported) {
      reported = fenced;
      for (const listener of [...listeners]) listener(fenced);
    }
    clearTimeout(deadlineTimer);
    deadlineTimer = undefined;
    // Nobody learns of the deadline passing unless something looks then; the clock is checked
    // again when the timer fires, so an early timer only re-arms.
    if (!fenced && listeners.size > 0) {
      deadlineTimer = setTimeout(report, Math.max(1, Math.ceil(remainingMs())));
      deadlineTimer.unref();
    }
  };
  return {
    renewed(sentAt) {
      if (sentAt > lastRenewalSentAt) lastRenewalSentAt = sentAt;
      report();
    },
    revoke() {
      lastRenewalSentAt = Number.NEGATIVE_INFINITY;
      report();
    },
    isFenced: () => remainingMs() <= 0,
    remainingMs,
    hold(deviceId, token) {
      tokens.set(deviceId, token);
    },
    drop(deviceId, token) {
      if (token === undefined || tokens.get(deviceId) === token) tokens.delete(deviceId);
    },
    tokenOf: (deviceId) => tokens.get(deviceId),
    check(deviceId, token) {
      const left = remainingMs();
      if (left <= 0) throw new SelfFencedError(selfFenceMs - left);
      const held = tokens.get(deviceId);
      if (held !== token) {
        throw new LeaseLostError(deviceId, token, held === undefined ? 'not held by this server' : `this server holds token ${held}`);
      }
    },
    held: () => [...tokens].map(([deviceId, token]) => ({ deviceId, token })),
    get size() {
      return tokens.size;
    },
    onChange(listener) {
      listeners.add(listener);
      report();
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0) clearTimeout(deadlineTimer);
      };
    },
  };
}
