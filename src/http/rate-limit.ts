import type { Redis } from 'ioredis';
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
}

export function createRateLimiter({ redis, keys }: { redis: Redis; keys: ClusterKeys }): RateLimiter {
  defineLuaScripts(redis, [script]);
  return {
    async hit(scope, subject, limit) {
      const [count, ttlMs] = await runLua<[number, number]>(redis, script, [keys.rateLimit(scope, subject)], [RATE_WINDOW_MS]);
      if (count > limit) {
        const retryAfter = Math.max(1, Math.ceil(ttlMs / 1000));
        throw new HttpError(429, 'rate_limited', `Too many requests; retry in ${retryAfter} s`, { limit, windowSeconds: RATE_WINDOW_MS / 1000 }, {
          'Retry-After': String(retryAfter),
        });
      }
    },
  };
}
