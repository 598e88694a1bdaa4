import type { ClusterKeys } from '../cluster/keys.js';
import { screenUserUrl } from '../shared/guarded-http.js';
import { loadLuaScript, runLua } from '../shared/lua.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { Store } from '../store/types.js';
import { newWebhookSecret, WebhooksUnavailableError, type SecretBox } from './secrets.js';

// Where a device's events go. Two targets, each with its own cursor, lock and failures:
// - `device`: the device's own webhook (PUT /api/devices/:id/webhook), or the older `webhookUrl`
//   given when the device was created, which has no secret of its own and is signed with the
//   operator's WEBHOOK_SECRET when there is one;
// - `operator`: WEBHOOK_URL, which receives every device's events, signed with WEBHOOK_SECRET.
// A device's own target is read through from the store and cached in Redis for about a minute
// (a `none` marker for devices without one, so wake() costs one GET for them); a put or delete
// writes the new one there, so every server uses it from its next event on.

const startCursorScript = loadLuaScript(new URL('./lua/', import.meta.url), 'startWebhookCursor-2.lua');

export const TARGET_NAMES = ['device', 'operator'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

/** A target as a delivery uses it: the secret in the clear, in memory only. */
export interface WebhookTarget {
  url: string;
  /** Null: every event type. */
  events: readonly string[] | null;
  /** Null: deliveries go unsigned (an older `webhookUrl` and no WEBHOOK_SECRET). */
  secret: string | null;
  /**
   * The operator's WEBHOOK_URL: configuration, not a URL a user gave, so it may be on the
   * operator's private network whatever OUTBOUND_ALLOW_PRIVATE says.
   */
  trusted: boolean;
}

/** What the cache holds: the secret still sealed (null: an older `webhookUrl`). */
interface CachedTarget {
  url: string;
  events: string[] | null;
  sealed: string | null;
}

const NONE = 'none';

export interface WebhookFailure {
  eventId: string;
  type: string;
  attempts: number;
  lastError: string;
  lastAttemptAt: string;
}

/** What the HTTP API needs (ApiDeps.webhooks). */
export interface WebhookRegistry {
  /**
   * Registers or replaces the device's webhook with a new secret, returned here and never again.
   * Null: no such device. Throws WebhooksUnavailableError when no key encrypts secrets.
   */
  put(deviceId: string, webhook: { url: string; events: readonly string[] | null }): Promise<{ url: string; events: string[] | null; secret: string } | null>;
  /** Removes the device's webhook (and its older webhookUrl); false when it had neither. */
  remove(deviceId: string): Promise<boolean>;
  /** The device's own webhook's dead-lettered deliveries, newest first. */
  failures(deviceId: string): Promise<WebhookFailure[]>;
  /** Why the URL may not be registered (a loopback, private, link-local or metadata address), or null. */
  screenUrl(url: string): Promise<string | null>;
  /** The device was deleted: its delivery state in Redis goes too (the store's row cascades). */
  forget(deviceId: string): Promise<void>;
}

export interface WebhookTargets extends WebhookRegistry {
  /** The targets worth waking for the device's new events (one GET for its cached own target). */
  active(deviceId: string): Promise<TargetName[]>;
  /** The target now, secret opened; null when the device has none (or there is no operator webhook). */
  resolve(deviceId: string, target: TargetName): Promise<WebhookTarget | null>;
}

export interface WebhookTargetsOptions {
  redis: Redis;
  keys: ClusterKeys;
  store: Pick<Store, 'getDevice' | 'getWebhook' | 'putWebhook' | 'deleteWebhook'>;
  /** Null: no key (WEBHOOK_SECRET_KEY or INTERNAL_API_KEY), so device webhooks cannot be put. */
  box: SecretBox | null;
  /** WEBHOOK_URL: the operator's own receiver, trusted like the rest of the configuration (see WebhookTarget.trusted). */
  operator: { url: string; secret: string } | null;
  /** WEBHOOK_SECRET: signs an older `webhookUrl`. */
  sharedSecret: string | undefined;
  allowPrivate: boolean;
  /** How long a server trusts its cached copy of a device's target; about a minute. */
  cacheMs: number;
}

export function createWebhookTargets(options: WebhookTargetsOptions): WebhookTargets {
  const { redis, keys, store, box, operator, cacheMs } = options;

  const cached = async (deviceId: string): Promise<CachedTarget | null> => {
    const raw = await redis.get(keys.webhookTarget(deviceId));
    if (raw === NONE) return null;
    if (raw) return JSON.parse(raw) as CachedTarget;
    const row = await store.getWebhook(deviceId);
    let found: CachedTarget | null = row ? { url: row.url, events: row.events, sealed: row.secretCiphertext } : null;
    if (!found) {
      const device = await store.getDevice(deviceId);
      if (device?.webhookUrl) found = { url: device.webhookUrl, events: null, sealed: null };
    }
    // NX: a put or delete that wrote the cache since this read the store wins over what was read.
    await redis.set(keys.webhookTarget(deviceId), found ? JSON.stringify(found) : NONE, 'PX', cacheMs, 'NX');
    return found;
  };

  /**
   * After a put or delete, the cache says the new target at once (rather than being emptied), so a
   * server that read the store just before the change cannot put the old one back (see cached).
   */
  const publish = (deviceId: string, target: CachedTarget | null) => redis.set(keys.webhookTarget(deviceId), target ? JSON.stringify(target) : NONE, 'PX', cacheMs);

  return {
    async active(deviceId) {
      const own = await redis.get(keys.webhookTarget(deviceId));
      return [...(own === NONE ? [] : (['device'] as const)), ...(operator ? (['operator'] as const) : [])];
    },

    async resolve(deviceId, target) {
      if (target === 'operator') return operator ? { url: operator.url, events: null, secret: operator.secret, trusted: true } : null;
      const found = await cached(deviceId);
      if (!found) return null;
      if (found.sealed === null) return { url: found.url, events: found.events, secret: options.sharedSecret ?? null, trusted: false };
      if (!box) throw new WebhooksUnavailableError();
      return { url: found.url, events: found.events, secret: box.open(deviceId, found.sealed), trusted: false };
    },

    async put(deviceId, { url, events }) {
      if (!box) throw new WebhooksUnavailableError();
      const secret = newWebhookSecret();
      const row = await store.putWebhook({ deviceId, url, events: events ? [...events] : null, secretCiphertext: box.seal(deviceId, secret) });
      if (!row) return null;
      await publish(deviceId, { url: row.url, events: row.events, sealed: row.secretCiphertext });
      await runLua<number>(redis, startCursorScript, [keys.webhookCursor(deviceId, 'device'), keys.eventSeq(deviceId)], []);
      return { url: row.url, events: row.events, secret };
    },

    async remove(deviceId) {
      const removed = await store.deleteWebhook(deviceId);
      await publish(deviceId, null);
      // A webhook put again later starts from its own registration, not from where this one stopped.
      await redis.del(keys.webhookCursor(deviceId, 'device'));
      return removed;
    },

    async failures(deviceId) {
      const raw = await redis.lrange(keys.webhookFailures(deviceId, 'device'), 0, -1);
      return raw.map((entry) => JSON.parse(entry) as WebhookFailure);
    },

    screenUrl: (url) => screenUserUrl(url, { allowPrivate: options.allowPrivate }),

    async forget(deviceId) {
      await redis.del(
        keys.webhookTarget(deviceId),
        ...TARGET_NAMES.flatMap((target) => [keys.webhookCursor(deviceId, target), keys.webhookWake(deviceId, target), keys.webhookFailures(deviceId, target), keys.webhookRetrying(deviceId, target)]),
      );
    },
  };
}
