import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import { defineLuaScripts, loadLuaScript, runLua } from '../shared/lua.js';
import { HttpError } from './errors.js';

// Rate limits live in Redis, so a caller spreading requests over every server behind a load
// balancer still meets one limit. Fixed one-minute windows: simple, one round trip, and the
// worst case (twice the limit across a window edge) is acceptable for abuse protection.

const script = loadLuaScript(new URL('./lua/', import.meta.url), 'hitRateLimit-1.lua');
export const RATE_WINDOW_MS = 60_000;

export interface RateLimiter {
  /** Counts a request; throws HttpError 429 with Retry-After once `limit` is exceeded. */
  hit(scope: string, subject: string, limit: number): Promise<void>;
  /**
   * Throws like `hit` when `limit` is already exceeded in this window, without counting: for
   * limits that count only failures (wrong logins), checked before the attempt is judged.
   */
  check(scope: string, subject: string, limit: number): Promise<void>;
}

function tooMany(limit: number, ttlMs: number): HttpError {
  const retryAfter = Math.max(1, Math.ceil(ttlMs / 1000));
  return new HttpError(429, 'rate_limited', `Too many requests; retry in ${retryAfter} s`, { limit, windowSeconds: RATE_WINDOW_MS / 1000 }, {
    'Retry-After': String(retryAfter),
  });
}

export function createRateLimiter({ redis, keys }: { redis: Redis; keys: ClusterKeys }): RateLimiter {
  defineLuaScripts(redis, [script]);
  return {
    async hit(scope, subject, limit) {
      const [count, ttlMs] = await runLua<[number, number]>(redis, script, [keys.rateLimit(scope, subject)], [RATE_WINDOW_MS]);
      if (count > limit) throw tooMany(limit, ttlMs);
    },
    async check(scope, subject, limit) {
      const key = keys.rateLimit(scope, subject);
      const results = (await redis.pipeline().get(key).pttl(key).exec()) ?? [];
      for (const [err] of results) if (err) throw err;
      const count = Number(results[0]?.[1] ?? 0);
      const ttlMs = Number(results[1]?.[1] ?? -2);
      if (count > limit) throw tooMany(limit, ttlMs > 0 ? ttlMs : RATE_WINDOW_MS);
    },
  };
}
