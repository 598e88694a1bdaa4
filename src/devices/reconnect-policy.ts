import { DisconnectCode } from './connector.js';

// What the runtime does when a socket closes on its own, by Baileys' DisconnectReason (the rules
// of the design brief's section 4). Pure functions, so the mapping can be read (and tested) in one place.

export interface ReconnectPolicy {
  /** First back-off ceiling, ms; it doubles per failed attempt. */
  backoffBaseMs: number;
  /** Highest back-off ceiling, ms. */
  backoffCapMs: number;
  /** This many 440s within conflictWindowMs while holding the lease: stop and report. */
  conflictLimit: number;
  conflictWindowMs: number;
  /** A device shown this many rounds of codes (sockets) without being linked stops. */
  qrMaxRounds: number;
  /** 515s in a row (no connection in between) restarted at once before backing off instead. */
  restartLimit: number;
}

export const DEFAULT_RECONNECT_POLICY: Readonly<ReconnectPolicy> = Object.freeze({
  backoffBaseMs: 1000,
  backoffCapMs: 60_000,
  conflictLimit: 3,
  conflictWindowMs: 10 * 60_000,
  qrMaxRounds: 3,
  restartLimit: 5,
});

export type CloseAction =
  /** Closed by this server (lease lost, drain, self-fence, stop): the core already knows. */
  | { kind: 'ignore' }
  /** 515: WhatsApp wants a fresh socket (after pairing): reconnect at once. */
  | { kind: 'restart' }
  /** 408, 428, 500, 503 and anything unknown: back off with jitter and reconnect. */
  | { kind: 'backoff' }
  /** 440: another socket took over the session; never fight for it. */
  | { kind: 'conflict' }
  /** 401, 403, 419: the phone unlinked the device, or WhatsApp banned or locked it. */
  | { kind: 'logout' }
  /** 411: the account cannot use multi-device; reconnecting cannot help. */
  | { kind: 'fail' };

export const LOGGED_OUT_CODES: readonly number[] = [DisconnectCode.loggedOut, DisconnectCode.forbidden, DisconnectCode.unauthorized];

export function closeAction(code: number): CloseAction {
  if (code === DisconnectCode.stopped) return { kind: 'ignore' };
  if (code === DisconnectCode.restartRequired) return { kind: 'restart' };
  if (code === DisconnectCode.connectionReplaced) return { kind: 'conflict' };
  if (LOGGED_OUT_CODES.includes(code)) return { kind: 'logout' };
  if (code === DisconnectCode.multideviceMismatch) return { kind: 'fail' };
  return { kind: 'backoff' };
}

/**
 * The delay before reconnect attempt `attempt` (1-based): a ceiling that doubles from the base up
 * to the cap, and a delay drawn from its upper half ("equal jitter"), so sockets dropped together
 * do not all come back in the same instant, and the delay still grows from one attempt to the next.
 */
export function backoffDelay(attempt: number, policy: Pick<ReconnectPolicy, 'backoffBaseMs' | 'backoffCapMs'>, random: () => number = Math.random) {
  const ceilingMs = Math.min(policy.backoffCapMs, policy.backoffBaseMs * 2 ** Math.max(0, attempt - 1));
  const delayMs = Math.round(ceilingMs / 2 + random() * (ceilingMs / 2));
  return { delayMs, ceilingMs };
}
