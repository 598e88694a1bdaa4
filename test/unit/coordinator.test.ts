import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCoordinator, type Coordinator } from '../../src/cluster/coordinator.js';
import { createHeartbeat, type Heartbeat } from '../../src/cluster/heartbeat.js';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseGuard, type LeaseGuard } from '../../src/cluster/lease-guard.js';
import { createLeaseStore, type LeaseStore } from '../../src/cluster/lease-store.js';
import type { LeaseRecorder } from '../../src/cluster/recorder.js';
import { adoptFreshRedis } from '../../src/cluster/redis-reset.js';
import type { DeviceRuntime } from '../../src/devices/runtime.js';
import { monotonicNow } from '../../src/shared/clock.js';
import { duplicateRedis, type Redis } from '../../src/shared/redis.js';
import { Redis as IORedis } from 'ioredis';
import { waitUntil } from '../../harness/cluster.js';
import { removeKeys, useTestRedis, type TestRedis } from '../../harness/redis.js';
import { startTcpProxy } from '../../harness/tcp-proxy.js';

// The coordinator against a real Redis, one server in this process: its lease scripts, inbox
// stream and heartbeat are the real ones. The device runtime is a plain object that records what
// it was asked (the coordinator's seam to the sockets), so each race below can be staged exactly.

const TTL = 3000;
let t: TestRedis;
let keys: ClusterKeys;
let leases: LeaseStore;
const open: Array<{ close(): Promise<void> }> = [];

interface RecordingRuntime extends DeviceRuntime {
  readonly calls: string[];
  /** Devices with a (pretend) socket, by token. */
  readonly sockets: Map<string, number>;
}

function recordingRuntime(): RecordingRuntime {
  const calls: string[] = [];
  const sockets = new Map<string, number>();
  const running = new Map<string, number>();
  return {
    calls,
    sockets,
    start(deviceId, token) {
      calls.push(`start ${deviceId} ${token}`);
      running.set(deviceId, token);
      sockets.set(deviceId, token);
    },
    async stop(deviceId, reason) {
      calls.push(`stop ${deviceId} ${reason}`);
      running.delete(deviceId);
      sockets.delete(deviceId);
    },
    async stopAll(reason) {
      calls.push(`stopAll ${reason}`);
      running.clear();
      sockets.clear();
    },
    async logout() {
      return { redis: true, store: true };
    },
    onRetired() {},
    async send() {},
    get activeConnections() {
      return sockets.size;
    },
    get running() {
      return running.size;
    },
    statusCounts: () => ({}),
    isRunning: (deviceId) => running.has(deviceId),
    describe: (deviceId) => {
      const token = running.get(deviceId);
      return token === undefined ? null : { token, connected: sockets.has(deviceId), attempts: 0, conflicts: 0, qrRounds: 0, qrRefreshes: 0 };
    },
  };
}

const recorder: LeaseRecorder = {
  leaseEvent: () => undefined,
  assignment: () => undefined,
  serverLog: () => undefined,
  flush: async () => undefined,
};

interface Server {
  serverId: string;
  guard: LeaseGuard;
  heartbeat: Heartbeat;
  coordinator: Coordinator;
  runtime: RecordingRuntime;
  redis: Redis;
}

async function startServer(serverId: string, overrides: { redis?: Redis; inboxReader?: Redis; bootId?: string; leases?: LeaseStore } = {}): Promise<Server> {
  const { bootId } = overrides;
  const redis = overrides.redis ?? t.redis;
  const log = pino({ level: 'silent' });
  const guard = createLeaseGuard({ clock: monotonicNow, selfFenceMs: (TTL * 2) / 3 });
  const runtime = recordingRuntime();
  const inboxReader = overrides.inboxReader ?? (duplicateRedis(redis, { connectionName: `${serverId}:inbox` }) as Redis);
  const serverLeases = overrides.leases ?? createLeaseStore({ redis, keys });
  const heartbeat = createHeartbeat({
    redis,
    keys,
    leases: serverLeases,
    guard,
    clock: monotonicNow,
    log,
    serverId,
    bootId,
    ttlMs: TTL,
    intervalMs: TTL / 3,
    advert: () => ({ bootId: 'b', url: '', region: 'r', capacity: 100, priority: 100, draining: false, startedAt: 0, responseTimeMs: 0 }),
    onRedisReset: () => undefined,
  });
  const coordinator = createCoordinator({
    redis,
    inboxReader,
    keys,
    leases: serverLeases,
    guard,
    heartbeat,
    runtime,
    recorder,
    log,
    serverId,
    bootId,
    ttlMs: TTL,
    sweepIntervalMs: 200,
    placementTimeoutMs: 1000,
    minHoldMs: 0,
    clock: monotonicNow,
    logout: async () => undefined,
    onRedisReset: () => undefined,
    onDrainRequested: () => undefined,
  });
  await coordinator.start();
  open.push({ close: () => coordinator.stop() });
  return { serverId, guard, heartbeat, coordinator, runtime, redis };
}

/** A server that looks live to placement (a fresh advert) but runs nothing: it never claims. */
async function silentServer(serverId: string, priority: number): Promise<void> {
  await t.redis
    .multi()
    .hset(keys.server(serverId), { capacity: 100, priority, draining: 0, responseTimeMs: 0 })
    .pexpire(keys.server(serverId), 60_000)
    .sadd(keys.servers, serverId)
    .exec();
}

async function wantedDevice(): Promise<string> {
  const id = randomUUID();
  await leases.setWanted([id], true);
  return id;
}

beforeAll(async () => {
  t = await useTestRedis();
});
beforeEach(async () => {
  await removeKeys(t.redis, `*{${t.prefix}}*`);
  keys = createClusterKeys(t.prefix);
  await adoptFreshRedis(t.redis, keys);
  leases = createLeaseStore({ redis: t.redis, keys });
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});
afterAll(async () => {
  await t.cleanup();
});

describe('lost leases', () => {
  it('a renewal answer about an older token does not stop the device held under a newer one', async () => {
    const a = await startServer('srv-a');
    const device = await wantedDevice();
    await a.coordinator.place(device);
    await waitUntil(async () => a.guard.tokenOf(device) === 1, 5000);

    // The device goes and comes back (a release, then a placement back here) while a renewal of
    // token 1 is in flight; that renewal's answer, arriving now, says token 1 was lost.
    a.guard.drop(device, 1);
    await a.runtime.stop(device, 'released');
    expect(await leases.release(device, 'srv-a', 1)).toBe(true);
    await a.coordinator.place(device);
    await waitUntil(async () => a.guard.tokenOf(device) === 2, 5000);
    a.runtime.calls.length = 0;

    a.coordinator.onLost([{ deviceId: device, token: 1, holder: { serverId: 'srv-a', token: 2 } }]);
    expect(a.guard.tokenOf(device)).toBe(2);
    expect(a.runtime.isRunning(device)).toBe(true);
    expect(a.runtime.calls).toEqual([]);

    // The current token's loss still stops it.
    a.coordinator.onLost([{ deviceId: device, token: 2, holder: null }]);
    expect(a.guard.tokenOf(device)).toBeUndefined();
    expect(a.runtime.calls).toEqual([`stop ${device} lease lost`]);
  });
});

describe('placement only goes where a claim can follow', () => {
  it('the inbox reader outlives a failed acknowledgement, and the server keeps claiming', async () => {
    const url = new URL(t.url);
    const proxy = await startTcpProxy(url.hostname, Number(url.port || 6379));
    // Commands (claims, acknowledgements, heartbeats) go through the proxy; the blocking inbox
    // read does not, so it reads a placement while every other command fails.
    const viaProxy = new IORedis(proxy.port, '127.0.0.1', { maxRetriesPerRequest: 1, commandTimeout: 1000 });
    viaProxy.on('error', () => undefined);
    const reader = t.redis.duplicate({ connectionName: 'srv-a:inbox' });
    open.push({ close: async () => void (viaProxy.disconnect(), reader.disconnect(), await proxy.close()) });
    const a = await startServer('srv-a', { redis: viaProxy, inboxReader: reader });
    const first = await wantedDevice();
    await a.coordinator.place(first);
    await waitUntil(async () => a.guard.tokenOf(first) !== undefined, 5000);

    await proxy.stop();
    const lostWhileCut = await wantedDevice();
    await t.redis.xadd(keys.inbox('srv-a'), '*', 'type', 'place', 'deviceId', lostWhileCut);
    // The claim and then the acknowledgement fail; before the fix the latter ended the reader.
    await new Promise((r) => setTimeout(r, 1000));
    await proxy.resume();
    await waitUntil(async () => !a.guard.isFenced() && (await t.redis.hget(keys.server('srv-a'), 'accepting')) === '1', 10_000);

    const after = await wantedDevice();
    expect(await a.coordinator.place(after)).toEqual({ outcome: 'placed', serverId: 'srv-a' });
    await waitUntil(async () => a.guard.tokenOf(after) !== undefined, 5000, () => 'the device placed after the cut was never claimed');
  });

  it('the placements one inbox read brings are claimed in one script call, and each device starts once', async () => {
    const store = createLeaseStore({ redis: t.redis, keys });
    const batches: number[] = [];
    const recording: LeaseStore = { ...store, claimMany: (claims, ...rest) => (batches.push(claims.length), store.claimMany(claims, ...rest)) };
    const a = await startServer('srv-a', { leases: recording });
    const devices = await Promise.all(Array.from({ length: 30 }, () => wantedDevice()));
    // Thirty placements written in one transaction (what placeDevice writes for each), as a burst
    // of failovers brings them: the blocked reader is woken once and reads them all.
    const until = Date.now() + 60_000;
    const tx = t.redis.multi();
    for (const deviceId of devices) {
      tx.zadd(keys.reserved('srv-a'), until, deviceId).zadd(keys.placements, until, deviceId).hset(keys.placementTargets, deviceId, 'srv-a');
      tx.xadd(keys.inbox('srv-a'), '*', 'type', 'place', 'deviceId', deviceId);
    }
    await tx.exec();
    await waitUntil(async () => devices.every((d) => a.guard.tokenOf(d) !== undefined), 5000);
    expect(batches).toEqual([30]);
    expect(a.runtime.calls.filter((c) => c.startsWith('start ')).sort()).toEqual(devices.map((d) => `start ${d} 1`).sort());
    expect(await t.redis.zcard(keys.reserved('srv-a'))).toBe(0);
  });

  it('a self-fenced server whose advert stays fresh advertises that it accepts no placements', async () => {
    const a = await startServer('srv-a');
    await silentServer('srv-b', 50);
    await waitUntil(async () => (await t.redis.hget(keys.server('srv-a'), 'accepting')) === '1', 5000);
    // Redis lost wafleet's marker and the re-seed cannot finish (the store is down, say): every
    // beat still refreshes the server key, but no renewal counts, so the server self-fences.
    await t.redis.del(keys.marker);
    await waitUntil(async () => a.guard.isFenced(), 5000);
    await waitUntil(async () => (await t.redis.hget(keys.server('srv-a'), 'accepting')) === '0', 5000);
    expect(await t.redis.exists(keys.server('srv-a'))).toBe(1);
    // srv-a has the higher priority, but would never claim: the device goes to srv-b.
    expect(await leases.place(await wantedDevice(), ['srv-a', 'srv-b'], 1000)).toEqual({ outcome: 'placed', serverId: 'srv-b' });
  });

  it('a placement whose target let the reservation run out goes elsewhere', async () => {
    await silentServer('srv-x', 200);
    const a = await startServer('srv-a');
    const device = await wantedDevice();
    expect(await a.coordinator.place(device)).toEqual({ outcome: 'placed', serverId: 'srv-x' });
    // srv-x never claims; after the placement timeout the sweep places the device again, and
    // srv-x, though still the first choice by priority, is passed over.
    await waitUntil(async () => a.guard.tokenOf(device) !== undefined, 5000, async () => `placed on ${await t.redis.hget(keys.placementTargets, device)}`);
  });
});

describe('sweep', () => {
  it("a dead server's leases move once its one deadline passes", async () => {
    await silentServer('srv-dead', 100);
    await t.redis.pexpire(keys.server('srv-dead'), 300);
    const device = await wantedDevice();
    expect(await leases.claim(device, 'srv-dead@b0', 500)).toMatchObject({ outcome: 'claimed', token: 1 });
    const a = await startServer('srv-a');
    await waitUntil(async () => a.guard.tokenOf(device) === 2, 5000);
    expect(await t.redis.zscore(keys.holderDeadlines, 'srv-dead@b0')).toBeNull();
  });

  it('a lease this server let run out unreleased (a failed release) moves when Redis says its key expired', async () => {
    const a = await startServer('srv-a', { bootId: 'a1' });
    const [dropped, kept] = [await wantedDevice(), await wantedDevice()];
    await a.coordinator.place(dropped);
    await a.coordinator.place(kept);
    await waitUntil(async () => a.guard.tokenOf(dropped) === 1 && a.guard.tokenOf(kept) === 1, 5000);
    // Stopped here, but the release never reached Redis: nobody renews the lease, and this
    // server's deadline keeps moving with its other lease, so no sweep of due holders finds it.
    a.guard.drop(dropped, 1);
    await a.runtime.stop(dropped, 'release failed');
    await waitUntil(async () => (await t.redis.exists(keys.lease(dropped))) === 0, TTL + 2000);
    expect(await t.redis.hget(keys.holders, dropped)).toBe('srv-a@a1:1');
    a.coordinator.leaseExpired(dropped);
    await waitUntil(async () => a.guard.tokenOf(dropped) === 2, 5000);
    expect(a.guard.tokenOf(kept)).toBe(1);
  });
});

describe('self-fence', () => {
  it('a fence that returns after the Redis-reset path lifted it still stops every device; the next renewal starts them again', async () => {
    const a = await startServer('srv-a');
    const before = await wantedDevice();
    await a.coordinator.place(before);
    await waitUntil(async () => a.runtime.isRunning(before), 5000);

    // The marker is gone and no re-seed completes, so no beat renews: the server self-fences.
    const marker = await t.redis.get(keys.marker);
    await t.redis.del(keys.marker);
    await waitUntil(async () => a.runtime.running === 0, 5000);

    // The Redis-reset path re-asserts the leases and counts that as a renewal, lifting the fence
    // without any heartbeat; the held device runs again and claims go ahead.
    a.guard.renewed(monotonicNow());
    await waitUntil(async () => a.runtime.isRunning(before), 2000);
    const during = await wantedDevice();
    await a.coordinator.place(during);
    await waitUntil(async () => a.runtime.isRunning(during), 5000);

    // Still no beat renews: the guard lapses again, and every device must stop again.
    await waitUntil(async () => a.guard.isFenced(), 5000);
    await waitUntil(async () => a.runtime.running === 0, 2000, () => `still running: ${a.runtime.calls.join(', ')}`);
    expect(a.runtime.calls.filter((c) => c === 'stopAll self-fenced')).toHaveLength(2);

    await t.redis.set(keys.marker, marker!);
    await waitUntil(async () => a.runtime.isRunning(before) && a.runtime.isRunning(during), 5000);
  });
});

describe('the boot id in lease values', () => {
  it('a claim whose reply was lost is adopted by the process it was granted to, not wasted', async () => {
    const a = await startServer('srv-a', { bootId: 'a0a0a0a0a0a0' });
    const device = await wantedDevice();
    // The claim ran and granted token 1, but its reply was lost; ioredis sends the script again.
    expect(await leases.claim(device, 'srv-a@a0a0a0a0a0a0', TTL)).toEqual({ outcome: 'claimed', token: 1 });
    expect(await t.redis.get(keys.lease(device))).toBe('srv-a@a0a0a0a0a0a0:1');
    await t.redis.xadd(keys.inbox('srv-a'), '*', 'type', 'place', 'deviceId', device);
    await waitUntil(async () => a.guard.tokenOf(device) === 1 && a.runtime.isRunning(device), 2000);
    expect(await t.redis.get(keys.fence(device))).toBe('1');
  });

  it('a lease of the same server id but another boot is not taken for this process\'s own', async () => {
    const a = await startServer('srv-a', { bootId: 'a0a0a0a0a0a0' });
    const device = await wantedDevice();
    await leases.claim(device, 'srv-a@b1b1b1b1b1b1', TTL);
    await t.redis.xadd(keys.inbox('srv-a'), '*', 'type', 'place', 'deviceId', device);
    await new Promise((r) => setTimeout(r, 500));
    expect(a.guard.tokenOf(device)).toBeUndefined();
    expect(a.runtime.isRunning(device)).toBe(false);
    // Its renewals do not renew the other boot's lease either.
    expect(await leases.renew('srv-a@a0a0a0a0a0a0', TTL, [{ deviceId: device, token: 1 }])).toEqual([
      { deviceId: device, token: 1, holder: { serverId: 'srv-a', bootId: 'b1b1b1b1b1b1', token: 1 } },
    ]);
  });
});
