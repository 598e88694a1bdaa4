import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/types.js';

// Who is calling. The INTERNAL_API_KEY acts for the service and for admins; a user API key acts
// for its own user only. User keys are stored as SHA-256 hashes and looked up by hash, so the
// store never compares secrets; the internal key is compared in constant time.

export type Caller = { kind: 'internal' } | { kind: 'user'; userId: string; keyId: string };

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A new user API key: 32 random bytes, prefixed so it is recognisable in a leaked config. */
export function generateApiKey(): string {
  return `wfk_${randomBytes(32).toString('base64url')}`;
}

/** The token of `Authorization: Bearer <token>`, or null when the header is absent or malformed. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const match = /^Bearer ([\x21-\x7e]{1,512})$/.exec(header);
  return match ? match[1]! : null;
}

export interface Authenticator {
  /** The caller for a token, or null when no key matches. */
  identify(token: string): Promise<Caller | null>;
  /** Forgets cached look-ups (a key was revoked through this server). */
  forget(): void;
}

export function createAuthenticator({
  internalApiKey,
  store,
  cacheMs = 5000,
  now = Date.now,
}: {
  internalApiKey: string | undefined;
  store: Store;
  /** How long a look-up is trusted; a key revoked on another server stops working within this. */
  cacheMs?: number;
  now?: () => number;
}): Authenticator {
  // Comparing digests keeps timingSafeEqual's equal-length requirement from leaking the length.
  const internalDigest = internalApiKey ? createHash('sha256').update(internalApiKey, 'utf8').digest() : null;
  const cache = new Map<string, { caller: Caller | null; until: number }>();

  return {
    async identify(token) {
      const digest = createHash('sha256').update(token, 'utf8').digest();
      if (internalDigest && timingSafeEqual(digest, internalDigest)) return { kind: 'internal' };
      const hash = digest.toString('hex');
      const cached = cache.get(hash);
      if (cached && cached.until > now()) return cached.caller;
      const key = await store.findApiKey(hash);
      const caller: Caller | null = key ? { kind: 'user', userId: key.userId, keyId: key.id } : null;
      if (cache.size > 10_000) cache.clear();
      cache.set(hash, { caller, until: now() + cacheMs });
      return caller;
    },
    forget() {
      cache.clear();
    },
  };
}
