import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatReport } from '../../harness/chaos/checker.js';
import { parseHistory } from '../../harness/chaos/history.js';
import { runChaos } from '../../harness/chaos/run.js';
import { FAULT_TYPES } from '../../harness/chaos/schedule.js';

// The short chaos run (issue 9): 3 real servers, 200 simulated devices, a message load, inbound
// messages delivered to a webhook receiver with faults of its own (issue 17), and every fault
// type at least once; the checker must find nothing. About two minutes on an idle machine.

const dir = mkdtempSync(join(tmpdir(), 'wafleet-chaos-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('chaos run', () => {
  it('3 servers, 200 devices, every fault once: no device owned twice, no message lost or sent twice, no inbound message lost, every device back within its bound', { timeout: 600_000 }, async () => {
    const historyFile = join(dir, 'history.jsonl');
    const outcome = await runChaos({
      servers: 3,
      devices: 200,
      durationMs: 1000, // the first round (every fault type once) always runs in full
      seed: 9,
      historyFile,
      ttlMs: 3000,
      slackMs: 10_000, // generous: a shared 2-core CI machine; the bound is behaviour, not speed
      messagesPerSecond: 5,
      inboundPerSecond: 3,
      drainMs: 90_000,
      progress: () => undefined,
    });
    const report = formatReport(outcome.result);
    console.log(report);

    expect(outcome.result.violations, report).toEqual([]);
    expect(outcome.result.ok).toBe(true);
    expect(new Set(outcome.faults.map((f) => f.type))).toEqual(new Set(FAULT_TYPES));
    const { stats } = outcome.result;
    expect(stats.devices).toBe(200);
    expect(stats.accepted).toBeGreaterThan(0);
    expect(stats.delivered).toBeGreaterThanOrEqual(stats.accepted);
    // Faults that take a server's devices away really did: the check had something to check.
    expect(stats.faults.sigkill?.devicesDown).toBeGreaterThan(0);
    expect(stats.faults.redis_restart?.devicesDown).toBeGreaterThan(0);
    // Every device was claimed (an assignment) and connected (statuses) at least once, each a
    // state write the store audited.
    expect(stats.storeWrites).toBeGreaterThan(stats.devices * 2);
    // Inbound: every message a socket took is in its log and reached the webhook receiver, signed;
    // only what the simulated WhatsApp itself lost with Redis (never handed to a socket) is not.
    const { inbound } = stats;
    expect(inbound.webhooks.enabled).toBe(true);
    expect(inbound.injected).toBeGreaterThan(0);
    expect(inbound.lostWithRedis).toBe(0);
    expect(inbound.logged + inbound.lostWithSimulator).toBe(inbound.injected);
    expect(inbound.injectedDelivered).toBe(inbound.logged);
    expect(inbound.badRequests).toBe(0);

    // The file is the history the checker read.
    const history = parseHistory(readFileSync(historyFile, 'utf8'));
    expect(history.length).toBe(stats.events);
    for (const kind of ['claim', 'socket_open', 'accept', 'send', 'fault', 'final', 'connectivity', 'sim_reset'] as const) {
      expect(history.some((e) => e.kind === kind), kind).toBe(true);
    }
  });
});
