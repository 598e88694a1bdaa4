import pino from 'pino';
import { createHeartbeat, type Heartbeat } from '../../../src/cluster/heartbeat.js';
import { createClusterKeys } from '../../../src/cluster/keys.js';
import { createLeaseGuard } from '../../../src/cluster/lease-guard.js';
import { createLeaseStore, RENEW_CHUNK, type HeldLease } from '../../../src/cluster/lease-store.js';
import { monotonicNow } from '../../../src/shared/clock.js';
import { useTestRedis } from '../../../harness/redis.js';
import { countRoundTrips, difference, redisCpuSeconds, sleep } from '../../../harness/bench/probe.js';
import { compared, formatNumber, median, type Figure } from '../../../harness/bench/report.js';
import type { Scenario } from '../context.js';

// The cost of a heartbeat: the real one (src/cluster/heartbeat.ts), on one connection that counts
// what it sends, renewing 1,000, 10,000 and 50,000 leases of one server; against one raw
// pipeline of PEXPIRE on the same lease keys. Then Redis's own CPU (INFO cpu) while the heartbeat
// renews 50,000 leases every TTL/3 for a while, against the raw PEXPIRE pipeline at the same rate,
// both net of what Redis spends idle over as long.

const CLAIM_BATCH = 1000;
const SERVER_ID = 'bench-renewer';

export const renewalScenario: Scenario = {
  id: 'renewal',
  title: 'Renewal cost',
  async run(ctx) {
    const sizes = ctx.quick ? [1000, 5000] : [1000, 10_000, 50_000];
    // The default TTL; --quick shortens it only so that its CPU window is short.
    const TTL_MS = ctx.quick ? 3000 : 10_000;
    const INTERVAL_MS = Math.floor(TTL_MS / 3);
    const beats = ctx.quick ? 3 : 5;
    const windowBeats = ctx.quick ? 2 : 5;
    const idleMs = ctx.quick ? 3000 : 5000;
    const t = await useTestRedis(ctx.redisUrl, 'b-renew-');
    ctx.defer(() => t.cleanup());
    const counter = countRoundTrips(t.redis);
    const keys = createClusterKeys(t.prefix);
    const leases = createLeaseStore({ redis: t.redis, keys });
    const log = pino({ level: 'silent' });
    await t.redis.set(keys.marker, 'bench');
    await t.redis.multi().hset(keys.server(SERVER_ID), { capacity: 100_000 }).pexpire(keys.server(SERVER_ID), TTL_MS).exec();

    // Leases really held, with their tokens, claimed through the claim script.
    const largest = Math.max(...sizes);
    const held: HeldLease[] = [];
    for (let start = 0; start < largest; start += CLAIM_BATCH) {
      const ids = Array.from({ length: Math.min(CLAIM_BATCH, largest - start) }, (_, i) => `dev-${start + i}`);
      const claimed = await Promise.all(ids.map((id) => leases.claim(id, SERVER_ID, 10 * 60_000)));
      claimed.forEach((r, i) => {
        if (r.outcome !== 'claimed') throw new Error(`could not claim ${ids[i]}: ${r.outcome}`);
        held.push({ deviceId: ids[i]!, token: r.token });
      });
    }
    ctx.progress(`${largest} leases claimed`);

    // What Redis spends with nobody renewing, first: the leases, claimed for longer, stay put.
    const windowMs = INTERVAL_MS * (windowBeats + 0.5);
    const cpuOver = async (ms: number, during?: { start(): void; stop(): void }) => {
      const before = await redisCpuSeconds(t.redis);
      const started = performance.now();
      during?.start();
      await sleep(ms);
      during?.stop();
      return ((await redisCpuSeconds(t.redis)) - before) / ((performance.now() - started) / 1000);
    };
    const idle = await cpuOver(idleMs);

    let lost = 0;
    const heartbeatFor = (count: number): Heartbeat => {
      const guard = createLeaseGuard({ clock: monotonicNow, selfFenceMs: Math.floor((TTL_MS * 2) / 3) });
      for (const lease of held.slice(0, count)) guard.hold(lease.deviceId, lease.token);
      const heartbeat = createHeartbeat({
        redis: t.redis,
        keys,
        leases,
        guard,
        clock: monotonicNow,
        log,
        serverId: SERVER_ID,
        ttlMs: TTL_MS,
        intervalMs: INTERVAL_MS,
        advert: () => ({ bootId: 'bench', url: 'http://127.0.0.1:1', region: 'bench', capacity: 100_000, priority: 100, draining: false, startedAt: Date.now(), responseTimeMs: 0 }),
        onRedisReset: (reason) => {
          throw new Error(`heartbeat saw a Redis reset: ${reason}`);
        },
      });
      heartbeat.attach({ accepting: () => true, onLost: (gone) => (lost += gone.length) });
      return heartbeat;
    };
    const rawRenewal = (count: number) => async () => {
      const pipeline = t.redis.pipeline();
      for (const lease of held.slice(0, count)) pipeline.pexpire(keys.lease(lease.deviceId), TTL_MS);
      for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err;
    };
    /** ms of each call, after one warm-up call (which loads the scripts on the connection). */
    const timed = async (fn: () => Promise<unknown>, times: number) => {
      await fn();
      const before = counter.read();
      const ms: number[] = [];
      for (let i = 0; i < times; i++) {
        const started = performance.now();
        await fn();
        ms.push(performance.now() - started);
      }
      const sent = difference(counter.read(), before);
      return { ms: median(ms), roundTrips: sent.roundTrips / times, scripts: sent.scripts / times, commands: sent.commands / times };
    };

    const figures: Figure[] = [];
    const notes: string[] = [];
    for (const size of sizes) {
      const heartbeat = heartbeatFor(size);
      const beat = await timed(() => heartbeat.beat(), beats);
      const raw = await timed(rawRenewal(size), beats);
      const allowed = Math.ceil(size / RENEW_CHUNK);
      figures.push(
        compared(`ms per heartbeat, ${size.toLocaleString('en-US')} leases`, beat.ms, 'ms', { name: `one pipeline of ${size.toLocaleString('en-US')} PEXPIRE`, value: raw.ms }),
        compared(
          `round trips per heartbeat, ${size.toLocaleString('en-US')} leases`,
          beat.roundTrips,
          '',
          { name: 'the same pipeline', value: raw.roundTrips },
          { text: `<= 1 per 1,000 leases (${allowed})`, met: (_, value) => value <= allowed },
        ),
      );
      notes.push(`${size.toLocaleString('en-US')} leases: ${beat.scripts} renewal scripts and ${beat.commands} commands per heartbeat, sent in ${beat.roundTrips} round trip(s)`);
      ctx.progress(`${size} leases: heartbeat ${formatNumber(beat.ms)} ms in ${beat.roundTrips} round trip(s), raw PEXPIRE ${formatNumber(raw.ms)} ms`);
    }

    // Redis CPU over a window of `windowBeats` renewals at TTL/3, the window ending half an
    // interval after the last one so no renewal is cut in two.
    const heartbeat = heartbeatFor(largest);
    const beatLoop = await cpuOver(windowMs, heartbeat);
    let rawTimer: NodeJS.Timeout | undefined;
    const rawLoop = await cpuOver(windowMs, {
      start: () => (rawTimer = setInterval(() => void rawRenewal(largest)(), INTERVAL_MS)),
      stop: () => clearInterval(rawTimer),
    });
    await sleep(500);
    const perMinute = (coreShare: number) => Math.max(0, coreShare - idle) * 60;
    const cpu = compared(
      `Redis CPU s per minute, ${largest.toLocaleString('en-US')} leases renewed every ${formatNumber(INTERVAL_MS / 1000)} s`,
      perMinute(beatLoop),
      's/min',
      { name: 'raw PEXPIRE pipeline at the same rate', value: perMinute(rawLoop) },
      { text: 'ratio <= 2 and < 3 s/min (5% of a core)', met: (ratio, value) => ratio <= 2 && value < 3 },
    );
    if (cpu.met === false) {
      cpu.why =
        `each renewal runs one GETEX per lease inside the script and one ZADD of the holder's deadline per chunk of ${RENEW_CHUNK} ` +
        `(the baseline is PEXPIRE alone), so Redis works ${cpu.ratio === undefined ? 'harder (the baseline measured no CPU above idle this run)' : `${formatNumber(cpu.ratio)}x as hard`}.`;
    }
    figures.push(cpu);
    notes.push(
      `Redis CPU: ${formatNumber(perMinute(beatLoop) / 0.6)}% of a core for the heartbeat, net of ${formatNumber(idle * 100)}% idle; ` +
        `measured over ${formatNumber(windowMs / 1000)} s (${windowBeats} renewals)`,
    );
    notes.push(
      'a heartbeat can take less time than the raw pipeline: one script call carrying a thousand keys costs the client less than a thousand separate commands',
    );
    if (lost > 0) throw new Error(`the heartbeat reported ${lost} leases lost; none should be`);
    return {
      parameters: { sizes, ttlMs: TTL_MS, renewIntervalMs: INTERVAL_MS, beatsTimed: beats, cpuWindowMs: Math.round(windowMs), idleWindowMs: idleMs, figure: 'median ms of the timed beats' },
      figures,
      notes,
    };
  },
};
