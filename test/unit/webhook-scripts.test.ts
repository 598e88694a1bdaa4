import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { loadLuaScript, runLua } from '../../src/shared/lua.js';
import { PAUSED_PREFIX, takePumpLock } from '../../src/webhooks/pump-lock.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The webhook delivery's Lua on a real Redis: the pump lock (one run per target, renewed, freed or
// paused), and the cursor, which only the lock's holder moves, never backwards, and which lives
// exactly as long as the device's event numbering.

const lua = new URL('../../src/webhooks/lua/', import.meta.url);
const advance = loadLuaScript(lua, 'advanceWebhookCursor-3.lua');
const start = loadLuaScript(lua, 'startWebhookCursor-2.lua');

let t: TestRedis;
let keys: ClusterKeys;

beforeAll(async () => {
  t = await useTestRedis();
  keys = createClusterKeys(t.prefix);
});
afterAll(async () => {
  await t.cleanup();
});

const advanceAs = (deviceId: string, holder: string, sequence: number) =>
  runLua<number>(t.redis, advance, [keys.webhookPump(deviceId, 'device'), keys.webhookCursor(deviceId, 'device'), keys.eventSeq(deviceId)], [holder, sequence]);

describe('pump lock', () => {
  it('is held by one run at a time; the others learn who holds it and for how long', async () => {
    const device = randomUUID();
    const first = await takePumpLock(t.redis, keys, device, 'device', 5000);
    expect(first.taken).toBe(true);
    const second = await takePumpLock(t.redis, keys, device, 'device', 5000);
    expect(second).toEqual({ taken: false, holder: first.taken ? first.lock.holder : null, ttlMs: expect.any(Number) });
    if (second.taken) throw new Error('unreachable');
    expect(second.ttlMs).toBeGreaterThan(4000);
    // Each target of a device is a lock of its own.
    const operator = await takePumpLock(t.redis, keys, device, 'operator', 5000);
    expect(operator.taken).toBe(true);
    if (!first.taken || !operator.taken) throw new Error('unreachable');
    expect(await first.lock.release()).toBe(true);
    expect(await t.redis.exists(keys.webhookPump(device, 'device'))).toBe(0);
    expect(await first.lock.release()).toBe(false);
    await operator.lock.release();
  });

  it('is renewed while held, and a pause leaves it held by the pause for that long', async () => {
    const device = randomUUID();
    const took = await takePumpLock(t.redis, keys, device, 'device', 300);
    if (!took.taken) throw new Error('not taken');
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(took.lock.lost).toBe(false);
    expect(await t.redis.get(keys.webhookPump(device, 'device'))).toBe(took.lock.holder);
    expect(await took.lock.release(2000)).toBe(true);
    const value = await t.redis.get(keys.webhookPump(device, 'device'));
    expect(value).toBe(took.lock.pauseValue);
    expect(value?.startsWith(PAUSED_PREFIX)).toBe(true);
    const pttl = await t.redis.pttl(keys.webhookPump(device, 'device'));
    expect(pttl).toBeGreaterThan(1500);
    expect(pttl).toBeLessThanOrEqual(2000);
    expect((await takePumpLock(t.redis, keys, device, 'device', 300)).taken).toBe(false);
  });

  it('a run whose hold lapsed and was taken by another finds out at its next renewal', async () => {
    const device = randomUUID();
    const took = await takePumpLock(t.redis, keys, device, 'device', 600);
    if (!took.taken) throw new Error('not taken');
    await t.redis.set(keys.webhookPump(device, 'device'), 'someone-else', 'PX', 5000);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(took.lock.lost).toBe(true);
    expect(await took.lock.release()).toBe(false);
    expect(await t.redis.get(keys.webhookPump(device, 'device'))).toBe('someone-else');
  });
});

describe('advanceWebhookCursor-3', () => {
  it('moves the cursor for the holder only, never backwards, expiring with the numbering', async () => {
    const device = randomUUID();
    await t.redis.set(keys.eventSeq(device), '10', 'PX', 60_000);
    await t.redis.set(keys.webhookPump(device, 'device'), 'run-1', 'PX', 5000);
    expect(await advanceAs(device, 'run-1', 3)).toBe(1);
    expect(await t.redis.get(keys.webhookCursor(device, 'device'))).toBe('3');
    const pttl = await t.redis.pttl(keys.webhookCursor(device, 'device'));
    expect(pttl).toBeGreaterThan(59_000);
    expect(pttl).toBeLessThanOrEqual(60_000);
    expect(await advanceAs(device, 'run-1', 2)).toBe(1);
    expect(await t.redis.get(keys.webhookCursor(device, 'device'))).toBe('3');
    // A stalled run that lost the lock writes nothing.
    expect(await advanceAs(device, 'run-0', 9)).toBe(0);
    expect(await t.redis.get(keys.webhookCursor(device, 'device'))).toBe('3');
    // The numbering expired (an idle device): the cursor goes with it, so a new event 1 is not skipped.
    await t.redis.del(keys.eventSeq(device));
    expect(await advanceAs(device, 'run-1', 4)).toBe(1);
    expect(await t.redis.exists(keys.webhookCursor(device, 'device'))).toBe(0);
  });
});

describe('startWebhookCursor-2', () => {
  it("starts a new webhook at the device's latest event, keeps an existing cursor, and starts at 0 without numbering", async () => {
    const device = randomUUID();
    const run = () => runLua<number>(t.redis, start, [keys.webhookCursor(device, 'device'), keys.eventSeq(device)], []);
    expect(await run()).toBe(0);
    expect(await t.redis.exists(keys.webhookCursor(device, 'device'))).toBe(0);
    await t.redis.set(keys.eventSeq(device), '7', 'PX', 30_000);
    expect(await run()).toBe(7);
    expect(await t.redis.pttl(keys.webhookCursor(device, 'device'))).toBeGreaterThan(29_000);
    await t.redis.set(keys.eventSeq(device), '12', 'PX', 30_000);
    expect(await run()).toBe(7);
  });
});
