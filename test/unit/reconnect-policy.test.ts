import { DisconnectReason } from '@whiskeysockets/baileys';
import { describe, expect, it } from 'vitest';
import { DisconnectCode } from '../../src/devices/connector.js';
import { backoffDelay, closeAction, DEFAULT_RECONNECT_POLICY } from '../../src/devices/reconnect-policy.js';

describe('reconnect policy', () => {
  it('uses the codes of Baileys 7 DisconnectReason', () => {
    expect(DisconnectCode.loggedOut).toBe(DisconnectReason.loggedOut);
    expect(DisconnectCode.forbidden).toBe(DisconnectReason.forbidden);
    expect(DisconnectCode.timedOut).toBe(DisconnectReason.timedOut);
    expect(DisconnectCode.multideviceMismatch).toBe(DisconnectReason.multideviceMismatch);
    expect(DisconnectCode.connectionClosed).toBe(DisconnectReason.connectionClosed);
    expect(DisconnectCode.connectionReplaced).toBe(DisconnectReason.connectionReplaced);
    expect(DisconnectCode.badSession).toBe(DisconnectReason.badSession);
    expect(DisconnectCode.unavailableService).toBe(DisconnectReason.unavailableService);
    expect(DisconnectCode.restartRequired).toBe(DisconnectReason.restartRequired);
  });

  it('maps each DisconnectReason to what DESIGN.md section 4 asks for', () => {
    const kinds = Object.fromEntries([0, 401, 403, 408, 411, 419, 428, 440, 500, 503, 515, 599].map((code) => [code, closeAction(code).kind]));
    expect(kinds).toEqual({
      0: 'ignore',
      401: 'logout',
      403: 'logout',
      408: 'backoff',
      411: 'fail',
      419: 'logout',
      428: 'backoff',
      440: 'conflict',
      500: 'backoff',
      503: 'backoff',
      515: 'restart',
      599: 'backoff',
    });
  });

  it('backs off exponentially with jitter up to the cap, and every delay stays in its ceiling upper half', () => {
    const policy = { backoffBaseMs: 100, backoffCapMs: 1000 };
    const ceilings = [1, 2, 3, 4, 5, 6].map((attempt) => backoffDelay(attempt, policy).ceilingMs);
    expect(ceilings).toEqual([100, 200, 400, 800, 1000, 1000]);
    for (let attempt = 1; attempt <= 6; attempt++) {
      for (const r of [0, 0.5, 0.999]) {
        const { delayMs, ceilingMs } = backoffDelay(attempt, policy, () => r);
        expect(delayMs).toBeGreaterThanOrEqual(ceilingMs / 2);
        expect(delayMs).toBeLessThanOrEqual(ceilingMs);
      }
    }
    // Two attempts apart, the delay grows whatever the jitter drew (until the cap).
    expect(backoffDelay(3, policy, () => 0).delayMs).toBeGreaterThan(backoffDelay(1, policy, () => 0.999).delayMs);
  });

  it('has frozen, sane defaults', () => {
    expect(Object.isFrozen(DEFAULT_RECONNECT_POLICY)).toBe(true);
    expect(DEFAULT_RECONNECT_POLICY.backoffBaseMs).toBeLessThan(DEFAULT_RECONNECT_POLICY.backoffCapMs);
  });
});
