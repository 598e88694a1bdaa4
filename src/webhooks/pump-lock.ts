import { randomUUID } from 'node:crypto';
import type { ClusterKeys } from '../cluster/keys.js';
import { loadLuaScript, runLua } from '../shared/lua.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { TargetName } from './targets.js';

// One delivery run per target of a device at a time, cluster-wide: the run holds the target's
// pump lock (SET NX PX), renews it while it works, and frees it, or leaves it paused for a retry
// interval after an event failed. Every cursor move checks the holder (advanceWebhookCursor-3), so
// a run that lost the lock while stalled writes nothing.

const extendScript = loadLuaScript(new URL('./lua/', import.meta.url), 'extendWebhookPump-1.lua');
const releaseScript = loadLuaScript(new URL('./lua/', import.meta.url), 'releaseWebhookPump-1.lua');

/** A lock value that is a pause, not a run. */
export const PAUSED_PREFIX = 'paused.';

export type TakeResult = { taken: true; lock: HeldPumpLock } | { taken: false; holder: string | null; ttlMs: number };

export interface HeldPumpLock {
  /** Random per run; no ':' (it names BullMQ jobs). */
  readonly holder: string;
  /** The lock's value while paused after this run (see release). */
  readonly pauseValue: string;
  /** True once a renewal found the lock gone: the run stops at its next step. */
  readonly lost: boolean;
  /** Frees the target, or pauses it for `pauseMs`; false when the lock was lost meanwhile. */
  release(pauseMs?: number): Promise<boolean>;
}

export async function takePumpLock(redis: Redis, keys: ClusterKeys, deviceId: string, target: TargetName, holdMs: number): Promise<TakeResult> {
  const key = keys.webhookPump(deviceId, target);
  const holder = randomUUID();
  if ((await redis.set(key, holder, 'PX', holdMs, 'NX')) !== 'OK') {
    const [[, current], [, ttl]] = (await redis.multi().get(key).pttl(key).exec()) as [[unknown, string | null], [unknown, number]];
    return { taken: false, holder: current, ttlMs: Math.max(0, ttl) };
  }
  let lost = false;
  const pauseValue = `${PAUSED_PREFIX}${randomUUID()}`;
  let renewing = false;
  // Renewed at a third of the hold, so two renewals can fail before it lapses.
  const timer = setInterval(() => {
    if (renewing) return;
    renewing = true;
    runLua<number>(redis, extendScript, [key], [holder, holdMs])
      .then((renewed) => {
        if (renewed === 0) lost = true;
      })
      // Redis unreachable is not a lost lock: the next renewal (or the cursor's check) decides.
      .catch(() => undefined)
      .finally(() => {
        renewing = false;
      });
  }, Math.max(50, Math.floor(holdMs / 3)));
  timer.unref();
  return {
    taken: true,
    lock: {
      holder,
      pauseValue,
      get lost() {
        return lost;
      },
      async release(pauseMs = 0) {
        clearInterval(timer);
        const released = await runLua<number>(redis, releaseScript, [key], [holder, Math.max(0, Math.round(pauseMs)), pauseValue]);
        return released === 1;
      },
    },
  };
}
