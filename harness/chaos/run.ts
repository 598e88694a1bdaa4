import { createWriteStream, mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import pg from 'pg';
import { parseLeaseValue } from '../../src/cluster/lease-store.js';
import { waMessageIdFor } from '../../src/queues/messages.js';
import { startTestCluster, TEST_LEASE_ENV, type TestCluster } from '../cluster.js';
import { startTcpProxy, type TcpProxy } from '../tcp-proxy.js';
import { freePort, startEphemeralRedis, type LocalRedis } from '../local-redis.js';
import { checkHistory, type CheckResult } from './checker.js';
import { formatHistoryLine, type FaultType, type HistoryEvent } from './history.js';
import { startInboundSide, type InboundSide } from './inbound.js';
import { faultSchedule, seededRandom } from './schedule.js';
import { createSimHistoryReader } from './sim-history.js';

// The chaos run: real server processes on a Redis of the run's own (so it can be restarted with
// its data lost) and a database behind a TCP proxy (so the store can go away), simulated devices,
// a steady message load through the HTTP API, inbound messages with a webhook receiver of its own
// (inbound.ts), and seeded faults. Everything observed goes into the history file; the checker
// decides.

export interface ChaosOptions {
  servers: number;
  devices: number;
  durationMs: number;
  seed: number;
  historyFile: string;
  /** Lease TTL of the servers; recovery bounds are TTL + slackMs. */
  ttlMs: number;
  slackMs: number;
  /** Messages accepted per second, over all devices. */
  messagesPerSecond: number;
  /**
   * Inbound messages injected per second, over all devices, with a webhook receiver (faults of its
   * own) that the servers deliver every event to; 0 (the default): neither.
   */
  inboundPerSecond?: number;
  /** After the faults, how long inbound events may take to reach the logs and the receiver (default 120 s). */
  drainMs?: number;
  progress: (line: string) => void;
}

export interface ChaosOutcome {
  result: CheckResult;
  faults: Array<{ id: number; type: FaultType; target?: string }>;
  historyFile: string;
}

const INTERNAL_KEY = 'chaos-internal-key-0123456789abcdef0123';
const RAMP_BATCH = 200;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runChaos(options: ChaosOptions): Promise<ChaosOutcome> {
  const { ttlMs, slackMs, progress } = options;
  const random = seededRandom(options.seed ^ 0x5eed);
  const cleanups: Array<() => Promise<unknown>> = [];
  mkdirSync(dirname(options.historyFile), { recursive: true });
  const out = createWriteStream(options.historyFile);
  const history: HistoryEvent[] = [];
  const record = (event: HistoryEvent) => {
    history.push(event);
    out.write(formatHistoryLine(event));
  };

  try {
    // A Redis of the run's own: the restart fault kills it and starts an empty one on the port.
    const redisPort = await freePort();
    let ownRedis: LocalRedis = await startEphemeralRedis(redisPort);
    cleanups.push(() => ownRedis.stop());
    const cluster: TestCluster = await startTestCluster({ redis: `redis://127.0.0.1:${redisPort}`, prefixLabel: 'chaos-' });
    cleanups.push(() => cluster.stop());
    const { keys } = cluster;
    const redis = cluster.redis.redis;
    // Redis goes away on purpose; every caller here retries, so its errors are expected noise.
    redis.on('error', () => undefined);

    // The servers reach the store through a proxy the store outage stops.
    const dbUrl = new URL(cluster.db.url);
    const storeProxy: TcpProxy = await startTcpProxy(dbUrl.hostname, Number(dbUrl.port || 5432));
    cleanups.push(() => storeProxy.close());
    const proxiedDb = new URL(cluster.db.url);
    proxiedDb.hostname = '127.0.0.1';
    proxiedDb.port = String(storeProxy.port);

    const inboundPerSecond = options.inboundPerSecond ?? 0;
    let inbound: InboundSide | undefined;
    // Declared here for the inbound side, which injects for the devices through the servers running.
    const devices: string[] = [];
    const running: string[] = [];
    if (inboundPerSecond > 0) {
      inbound = await startInboundSide({
        seed: options.seed,
        ttlMs,
        drainMs: options.drainMs ?? 120_000,
        internalKey: INTERNAL_KEY,
        devices,
        ports: () => running.flatMap((id) => cluster.servers.get(id)?.port ?? []),
        history,
        record,
        progress,
      });
      const side = inbound;
      cleanups.push(() => side.close());
    }

    const serverEnv: Record<string, string> = {
      ...TEST_LEASE_ENV,
      LEASE_TTL_MS: String(ttlMs),
      SIM_KEEPALIVE_TIMEOUT_MS: String(Math.floor(ttlMs / 2)),
      DATABASE_URL: proxiedDb.toString(),
      INTERNAL_API_KEY: INTERNAL_KEY,
      // The load is one API key from one address: the default limits (600 and 1,200 a minute)
      // would refuse much of a --rate of 20 a second, and the run would measure the limiter.
      // Sized for the rate with its retries, inbound injections included, and a few reads of
      // each device's log at the end.
      RATE_LIMIT_PER_MINUTE: String(Math.max(600, (options.messagesPerSecond + inboundPerSecond) * 60 * 10 + options.devices * 4)),
      RATE_LIMIT_IP_PER_MINUTE: String(Math.max(1200, (options.messagesPerSecond + inboundPerSecond) * 60 * 10 + options.devices * 4)),
      LOG_LEVEL: 'warn',
      SHUTDOWN_TIMEOUT_MS: String(Math.max(5000, ttlMs * 2)),
      ...inbound?.serverEnv,
    };
    let nextServer = 1;
    const joined: string[] = [];
    // Every process the run started (a restarted id is a new process), for the servers' log.
    const spawned: Array<{ id: string; output: () => string }> = [];
    cleanups.push(async () => {
      const logs = spawned.map(({ id, output }) => `===== ${id}\n${output()}`).join('\n');
      await writeFile(`${options.historyFile}.servers.log`, logs);
    });
    const startServer = async (id = `chaos-${nextServer++}`) => {
      const server = await cluster.start(id, serverEnv);
      spawned.push({ id, output: () => server.output() });
      if (!running.includes(id)) running.push(id);
      return id;
    };
    progress(`starting ${options.servers} servers`);
    for (let i = 0; i < options.servers; i++) await startServer();
    await inbound?.detect();

    // The runner's probes and message load use these lookups.
    const messageByWa = new Map<string, string>();
    const reader = createSimHistoryReader({ redis, keys, messageOf: (wa) => messageByWa.get(wa) });
    let conflictsBefore = 0;
    // One read of the stream at a time (two at once read the same entries twice, and each would
    // be recorded twice), and none while Redis is being restarted (see restartRedis).
    let simDrain: Promise<void> = Promise.resolve();
    let simDrainHeld = false;
    const drainSim = (): Promise<void> => {
      if (simDrainHeld) return simDrain;
      simDrain = simDrain
        .then(async () => {
          for (const e of await reader.read()) record(e);
        })
        .catch(() => undefined);
      return simDrain;
    };

    const up = new Map<string, boolean>();
    const probe = async () => {
      const [leases, sockets] = await Promise.all([redis.mget(devices.map((d) => keys.lease(d))), redis.mget(devices.map((d) => keys.simSocket(d)))]);
      const t = Date.now();
      let connected = 0;
      devices.forEach((deviceId, i) => {
        const holder = leases[i] ? parseLeaseValue(leases[i]) : null;
        const isUp = holder !== null && sockets[i]?.startsWith(`${holder.serverId}#${holder.token}#`) === true;
        if (isUp) connected += 1;
        if (up.get(deviceId) !== isUp) {
          up.set(deviceId, isUp);
          record({ t, kind: 'connectivity', deviceId, up: isUp });
        }
      });
      return connected;
    };
    const waitAllUp = async (timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const n = await probe().catch(() => -1);
        if (n === devices.length) return true;
        if (Date.now() > deadline) return false;
        await sleep(250);
      }
    };
    /** The devices `serverId` holds now, with their tokens. */
    const leasesOf = async (serverId: string) => {
      const values = devices.length ? await redis.mget(devices.map((d) => keys.lease(d))) : [];
      const held = new Map<string, number>();
      values.forEach((value, i) => {
        const lease = value ? parseLeaseValue(value) : null;
        if (lease?.serverId === serverId) held.set(devices[i]!, lease.token);
      });
      return held;
    };
    /**
     * Until every lease in `held` has been taken over under a new token. A killed or frozen
     * server's simulated sockets look open (and its leases valid) until they time out, so "all
     * connected" means nothing before this; the next fault would land in the middle of the failover.
     */
    const waitTakenOver = async (held: Map<string, number>, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      const ids = [...held.keys()];
      while (ids.length > 0 && Date.now() < deadline) {
        const values = await redis.mget(ids.map((d) => keys.lease(d))).catch(() => null);
        if (values && values.every((value, i) => value !== null && parseLeaseValue(value)?.token !== held.get(ids[i]!))) return;
        await sleep(250);
      }
    };
    /** What the devices not connected say about themselves, for the error when they never do. */
    const notConnected = async () => {
      const down = devices.filter((d) => up.get(d) !== true);
      const statuses = await Promise.all(down.map((d) => redis.hget(keys.deviceStatus(d), 'status')));
      const count = new Map<string, number>();
      for (const s of statuses) count.set(s ?? '(none)', (count.get(s ?? '(none)') ?? 0) + 1);
      return `${down.length} not connected, by status: ${[...count].map(([s, n]) => `${s} ${n}`).join(', ')}`;
    };
    // Devices come in batches, each linked before the next: the run is about faults, not about
    // a thousand first links at once (on a small machine that burst alone can starve renewals).
    for (let added = 0; added < options.devices; ) {
      const batch = Math.min(RAMP_BATCH, options.devices - added);
      devices.push(...(await cluster.addDevices(batch)));
      added += batch;
      progress(`${added}/${options.devices} devices added; waiting for them to connect`);
      // Only a standstill is an error: linking on a busy machine may take a while.
      let connected = -1;
      for (;;) {
        if (await waitAllUp(60_000)) break;
        const now = await probe();
        progress(`${now}/${devices.length} connected; ${await notConnected()}`);
        if (now <= connected) throw new Error(`the devices stopped connecting before the faults: ${await notConnected()}`);
        connected = now;
      }
    }

    // Background loops: probe, sim history, message load. Each swallows Redis being away.
    let stopping = false;
    const loops: Promise<void>[] = [];
    const every = (ms: number, step: () => Promise<unknown>) =>
      loops.push(
        (async () => {
          while (!stopping) {
            await step().catch(() => undefined);
            await sleep(ms);
          }
        })(),
      );
    every(250, probe);
    every(200, drainSim);

    const seq = new Map<string, number>();
    const busy = new Set<string>();
    const accepted: Array<{ deviceId: string; messageId: string }> = [];
    let unanswered = 0;
    const postMessage = async (deviceId: string) => {
      busy.add(deviceId);
      const n = (seq.get(deviceId) ?? 0) + 1;
      seq.set(deviceId, n);
      const key = `chaos-${options.seed}-${n}`;
      try {
        // Retried on other servers with the same idempotency key until some server answers; one
        // request per device at a time, so accept order is the device's order.
        for (let attempt = 0; attempt < 40 && !stopping; attempt++) {
          const server = cluster.servers.get(running[Math.floor(random() * running.length)] ?? '');
          if (!server) break;
          try {
            const res = await fetch(`http://127.0.0.1:${server.port}/api/devices/${deviceId}/messages`, {
              method: 'POST',
              headers: { authorization: `Bearer ${INTERNAL_KEY}`, 'content-type': 'application/json', 'idempotency-key': key },
              body: JSON.stringify({ to: '4915112345678', type: 'text', text: `${deviceId.slice(0, 8)}#${n}` }),
              signal: AbortSignal.timeout(5000),
            });
            if (res.status === 202) {
              const { id } = (await res.json()) as { id: string };
              messageByWa.set(waMessageIdFor(id), id);
              accepted.push({ deviceId, messageId: id });
              record({ t: Date.now(), kind: 'accept', deviceId, messageId: id, seq: n });
              return;
            }
          } catch {
            // That server is down or paused: another one, shortly.
          }
          await sleep(250);
        }
        // Never answered 202: never accepted, so the checker owes it nothing; counted to show
        // how much of the load the run really put through.
        if (!stopping) unanswered += 1;
      } finally {
        busy.delete(deviceId);
      }
    };
    const loadTick = Math.max(50, Math.floor(1000 / Math.max(1, options.messagesPerSecond)));
    const posting = new Set<Promise<void>>();
    every(loadTick, async () => {
      const deviceId = devices[Math.floor(random() * devices.length)]!;
      if (busy.has(deviceId)) return;
      const post = postMessage(deviceId).finally(() => posting.delete(post));
      posting.add(post);
    });
    if (inbound) {
      const side = inbound;
      every(Math.max(20, Math.floor(1000 / inboundPerSecond)), async () => side.injectOne());
      loops.push(side.runReceiverFaults(() => stopping));
    }

    // The faults.
    const faults: ChaosOutcome['faults'] = [];
    const bound = ttlMs + slackMs;
    const ended = Date.now() + options.durationMs;
    let faultId = 0;
    /** A server that holds devices, so the fault has something to move. */
    const pickServer = async (pick: number) => {
      const held = await Promise.all(running.map((id) => redis.scard(keys.owned(id)).catch(() => 0)));
      const holding = running.filter((_, i) => held[i]! > 0);
      const candidates = holding.length > 0 ? holding : running;
      return candidates[pick % candidates.length]!;
    };
    const restartRedis = async () => {
      // Whatever the simulated WhatsApp records between the last read and the stop would go with
      // Redis's data, and a message delivered in that moment would look lost. With writes paused
      // nothing more is recorded (nor sent: a send is a write), so the last read is complete. The
      // periodic reads stop first: one caught by the pause would wait in its trim until Redis stops.
      await drainSim();
      simDrainHeld = true;
      await simDrain;
      await redis.call('CLIENT', 'PAUSE', String(ttlMs * 3), 'WRITE');
      for (const e of await reader.read({ trim: false })) record(e);
      conflictsBefore += Number((await redis.hget(keys.simConflicts, 'total')) ?? 0);
      await ownRedis.stop();
      record({ t: Date.now(), kind: 'sim_reset' });
      ownRedis = await startEphemeralRedis(redisPort);
      simDrainHeld = false;
    };

    for (const planned of faultSchedule(options.seed, { minMs: Math.min(2000, ttlMs), maxMs: ttlMs * 2 })) {
      if (Date.now() >= ended && faults.length >= 8) break;
      const id = ++faultId;
      const type = planned.type;
      let target: string | undefined;
      let faultBound = bound;
      const start = () => record({ t: Date.now(), kind: 'fault', id, fault: type, phase: 'start', boundMs: faultBound, ...(target ? { target } : {}) });
      const end = () => record({ t: Date.now(), kind: 'fault', id, fault: type, phase: 'end', ...(target ? { target } : {}) });
      progress(`fault #${id}: ${type}`);
      switch (type) {
        case 'sigkill': {
          target = await pickServer(planned.pick);
          const held = await leasesOf(target);
          start();
          cluster.servers.get(target)!.signal('SIGKILL');
          await cluster.servers.get(target)!.exited;
          await waitTakenOver(held, bound * 3);
          await waitAllUp(bound * 3);
          await startServer(target);
          end();
          break;
        }
        case 'sigstop': {
          target = await pickServer(planned.pick);
          const server = cluster.servers.get(target)!;
          const held = await leasesOf(target);
          start();
          server.signal('SIGSTOP');
          await sleep(Math.round(ttlMs * 1.5));
          server.signal('SIGCONT');
          await waitTakenOver(held, bound * 3);
          end();
          break;
        }
        case 'sigterm': {
          target = await pickServer(planned.pick);
          start();
          running.splice(running.indexOf(target), 1);
          cluster.servers.get(target)!.signal('SIGTERM');
          await cluster.servers.get(target)!.exited;
          await startServer(target);
          end();
          break;
        }
        case 'redis_client_kill':
          start();
          await redis.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
          await redis.client('KILL', 'TYPE', 'pubsub', 'SKIPME', 'yes');
          end();
          break;
        case 'redis_restart':
          // Back, then one TTL of claim embargo, then reconcile places every wanted device.
          faultBound = bound + ttlMs + Number(TEST_LEASE_ENV.RECONCILE_INTERVAL_MS) * 2;
          start();
          await restartRedis();
          end();
          break;
        case 'store_outage':
          start();
          await storeProxy.stop();
          await sleep(ttlMs * 2);
          await storeProxy.resume();
          end();
          break;
        case 'server_join':
          start();
          target = await startServer();
          joined.push(target);
          end();
          break;
        case 'server_leave':
          // The newest joined server leaves (so the run never shrinks below --servers).
          target = joined.pop() ?? running[running.length - 1]!;
          start();
          running.splice(running.indexOf(target), 1);
          cluster.servers.get(target)!.signal('SIGTERM');
          await cluster.servers.get(target)!.exited;
          cluster.servers.delete(target);
          end();
          break;
      }
      faults.push({ id, type, ...(target ? { target } : {}) });
      await waitAllUp(faultBound * 3);
      await sleep(planned.gapMs);
    }

    // Settle: every device up, every accepted message delivered, the store caught up.
    progress('faults done; settling');
    progress(`message requests never answered 202 within 40 tries (10 s): ${unanswered}`);
    await waitAllUp(bound * 4);
    const undelivered = async () => {
      await drainSim();
      const sent = new Set(history.filter((e) => e.kind === 'send').map((e) => (e as { messageId: string }).messageId));
      return accepted.filter((m) => !sent.has(m.messageId)).length;
    };
    stopping = true;
    await Promise.all(loops);
    // A request in flight may still be accepted: it must be waited for like the others.
    await Promise.all(posting);
    const settleDeadline = Date.now() + Math.max(30_000, ttlMs * 10);
    while ((await undelivered()) > 0 && Date.now() < settleDeadline) await sleep(500);
    if (inbound) {
      progress(`inbound injections never answered 202 within 40 tries: ${inbound.unanswered()}; waiting for the logs and the webhook receiver`);
      const { waitedMs, pending } = await inbound.settle(drainSim);
      progress(`inbound settled in ${Math.round(waitedMs / 1000)} s; devices still owed something: ${pending}`);
    }
    await probe();
    await drainSim();

    const t = Date.now();
    const [leases, sockets] = await Promise.all([redis.mget(devices.map((d) => keys.lease(d))), redis.mget(devices.map((d) => keys.simSocket(d)))]);
    devices.forEach((deviceId, i) => {
      const holder = leases[i] ? parseLeaseValue(leases[i]) : null;
      record({ t, kind: 'final', deviceId, owner: holder?.serverId ?? null, socketServer: sockets[i]?.split('#')[0] ?? null, token: holder?.token ?? null });
    });
    record({ t, kind: 'conflicts', total: conflictsBefore + Number((await redis.hget(keys.simConflicts, 'total')) ?? 0) });
    await sleep(ttlMs); // write-behind: the last records reach the store
    for (const e of await storeHistory(cluster.db.url, devices)) record(e);

    const result = checkHistory(history, { defaultBoundMs: bound });
    return { result, faults, historyFile: options.historyFile };
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        progress(`clean-up failed: ${(err as Error).message}`);
      }
    }
    await new Promise((r) => out.end(r));
  }
}

/**
 * The lease records (claims, releases, expiries, losses) and self-fences from the store, every
 * state write the store received (device_state_writes), and each device's row as a store write:
 * the record must carry the newest token once the run settled.
 */
async function storeHistory(dbUrl: string, devices: readonly string[]): Promise<HistoryEvent[]> {
  const client = new pg.Client({ connectionString: dbUrl });
  await client.connect();
  try {
    const events: HistoryEvent[] = [];
    const leases = await client.query<{ device_id: string; server_id: string; event_type: string; epoch: string; t: string; reason: string | null }>(
      `select device_id, server_id, event_type, epoch::text, (extract(epoch from created_at) * 1000)::bigint::text as t, details->>'reason' as reason
       from device_lease_events where device_id = any($1::uuid[]) order by created_at, id`,
      [devices],
    );
    for (const r of leases.rows) {
      const base = { t: Number(r.t), deviceId: r.device_id, serverId: r.server_id, token: Number(r.epoch) };
      if (r.event_type === 'claim') events.push({ ...base, kind: 'claim' });
      else if (r.event_type === 'expire') events.push({ ...base, kind: 'expire' });
      else if (r.event_type === 'lost') events.push({ ...base, kind: 'lease_lost' });
      else events.push({ ...base, kind: 'release', reason: r.reason ?? r.event_type });
    }
    const fences = await client.query<{ server_id: string; t: string }>(
      `select server_id, (extract(epoch from created_at) * 1000)::bigint::text as t from server_logs where event = 'self_fenced'`,
    );
    for (const r of fences.rows) events.push({ t: Number(r.t), kind: 'self_fence', serverId: r.server_id });
    const writes = await client.query<{ id: string; device_id: string; server_id: string | null; kind: string; epoch: string; status: string | null; applied: boolean; t: string }>(
      `select id::text, device_id, server_id, kind, epoch::text, status, applied, (extract(epoch from happened_at) * 1000)::bigint::text as t
       from device_state_writes where device_id = any($1::uuid[]) order by id`,
      [devices],
    );
    for (const w of writes.rows) {
      events.push({
        t: Number(w.t),
        kind: 'store_write',
        deviceId: w.device_id,
        serverId: w.server_id ?? '',
        token: Number(w.epoch),
        what: w.kind === 'status' ? `status ${w.status}` : 'assignment',
        applied: w.applied,
        seq: Number(w.id),
      });
    }
    const rows = await client.query<{ id: string; assigned_server_id: string | null; lease_epoch: string }>(
      'select id, assigned_server_id, lease_epoch::text from devices where id = any($1::uuid[])',
      [devices],
    );
    const t = Date.now();
    for (const r of rows.rows) events.push({ t, kind: 'store_write', deviceId: r.id, serverId: r.assigned_server_id ?? '', token: Number(r.lease_epoch), what: 'devices row at the end' });
    return events;
  } finally {
    await client.end();
  }
}
