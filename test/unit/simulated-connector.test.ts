import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys } from '../../src/cluster/keys.js';
import type { DeviceConnector, DeviceSocketEvents } from '../../src/devices/connector.js';
import { createSimulatedConnector } from '../../src/devices/simulated/connector.js';
import { useTestRedis, type TestRedis } from '../helpers/redis.js';

let t: TestRedis;
const connectors: DeviceConnector[] = [];
const connections: Redis[] = [];
const log = pino({ level: 'silent' });

async function connector(keepAliveTimeoutMs = 300): Promise<DeviceConnector> {
  const [redis, subscriber] = [new Redis(t.url), new Redis(t.url)];
  connections.push(redis, subscriber);
  const c = await createSimulatedConnector({
    redis,
    subscriber,
    keys: createClusterKeys(t.prefix),
    log,
    connectLatencyMs: 5,
    keepAliveTimeoutMs,
  });
  connectors.push(c);
  return c;
}

function recorder() {
  const statuses: string[] = [];
  const closes: Array<{ code: number; reason: string }> = [];
  const events: DeviceSocketEvents = {
    status: (s) => statuses.push(s),
    closed: (code, reason) => closes.push({ code, reason }),
  };
  return { statuses, closes, events };
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  t = await useTestRedis();
});
afterAll(async () => {
  await Promise.all(connectors.map((c) => c.close()));
  for (const connection of connections) connection.disconnect();
  await t.cleanup();
});

describe('simulated WhatsApp', () => {
  it('kicks the older socket with 440 when a second one opens, and counts the conflict', async () => {
    const keys = createClusterKeys(t.prefix);
    const [a, b] = [await connector(), await connector()];
    const device = randomUUID();
    const first = recorder();
    const second = recorder();
    await a.open({ deviceId: device, token: 1, serverId: 'srv-a', log, events: first.events, guard: () => {} });
    expect(first.statuses).toEqual(['connecting', 'connected']);
    await b.open({ deviceId: device, token: 2, serverId: 'srv-b', log, events: second.events, guard: () => {} });
    await until(() => first.closes.length === 1);
    expect(first.closes[0]!.code).toBe(440);
    expect(second.closes).toEqual([]);
    expect(await t.redis.hget(keys.simConflicts, device)).toBe('1');
    expect(await t.redis.hget(keys.simConnects, device)).toBe('2');
    expect(await t.redis.get(keys.simSocket(device))).toMatch(/^srv-b#2#/);
  });

  it('a socket closed before the next one opens causes no conflict', async () => {
    const keys = createClusterKeys(t.prefix);
    const c = await connector();
    const device = randomUUID();
    const socket = await c.open({ deviceId: device, token: 1, serverId: 'srv-a', log, events: recorder().events, guard: () => {} });
    await socket.close();
    expect(await t.redis.exists(keys.simSocket(device))).toBe(0);
    await c.open({ deviceId: device, token: 2, serverId: 'srv-b', log, events: recorder().events, guard: () => {} });
    expect(await t.redis.hget(keys.simConflicts, device)).toBeNull();
  });

  it('stops pinging when the guard refuses, so WhatsApp drops the socket after the keep-alive timeout', async () => {
    const keys = createClusterKeys(t.prefix);
    const c = await connector(150);
    const device = randomUUID();
    let allowed = true;
    const events = recorder();
    await c.open({
      deviceId: device,
      token: 1,
      serverId: 'srv-a',
      log,
      events: events.events,
      guard: () => {
        if (!allowed) throw new Error('self-fenced');
      },
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(await t.redis.exists(keys.simSocket(device))).toBe(1); // kept alive by pings
    allowed = false;
    await until(() => events.closes.length === 1);
    expect(events.closes[0]).toEqual({ code: 0, reason: 'self-fenced' });
    await until(async () => (await t.redis.exists(keys.simSocket(device))) === 0);
  });

  it('refuses to open when the guard refuses', async () => {
    const c = await connector();
    await expect(
      c.open({ deviceId: randomUUID(), token: 1, serverId: 'srv-a', log, events: recorder().events, guard: () => { throw new Error('lease lost'); } }),
    ).rejects.toThrow('lease lost');
  });
});
