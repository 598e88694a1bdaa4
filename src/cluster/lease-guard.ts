import type { MonotonicClock } from '../shared/clock.js';
import { LeaseLostError, SelfFencedError } from './errors.js';

/**
 * The one gate every side effect passes: a send, an auth-state write, a status write. It knows
 * two things, both local and cheap: when the last renewal that succeeded was *sent* (a monotonic
 * time), and which token this server holds for each device. A renewal's success proves the leases
 * were valid when it was sent, not when the answer arrived, so the self-fence deadline counts from
 * the send: past selfFenceMs from it, another server may be about to claim (TTL), and this one
 * stops acting before that can happen.
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
}

export function createLeaseGuard({ clock, selfFenceMs }: { clock: MonotonicClock; selfFenceMs: number }): LeaseGuard {
  // Starts fenced: nothing may act before the first renewal succeeds.
  let lastRenewalSentAt = Number.NEGATIVE_INFINITY;
  const tokens = new Map<string, number>();

  const remainingMs = () => lastRenewalSentAt + selfFenceMs - clock();
  return {
    renewed(sentAt) {
      if (sentAt > lastRenewalSentAt) lastRenewalSentAt = sentAt;
    },
    revoke() {
      lastRenewalSentAt = Number.NEGATIVE_INFINITY;
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
  };
}
