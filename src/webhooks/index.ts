import type { ClusterKeys } from '../cluster/keys.js';
import type { EventLog } from '../events/event-log.js';
import { createGuardedHttpClient } from '../shared/guarded-http.js';
import type { Logger } from '../shared/logger.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { Store } from '../store/types.js';
import { createWebhookDelivery, type DeliveryTuning, type WebhookDelivery, type WebhookMetrics } from './delivery.js';
import { createSecretBox } from './secrets.js';
import { createWebhookTargets, type WebhookRegistry } from './targets.js';

// Webhooks put together: the targets (each device's own webhook, the operator's), the signing
// secrets' encryption, and delivery on BullMQ. main.ts makes one with createWebhooks, wires
// `wake` into the event log's onAppended, hands `registry` to the HTTP API, starts the workers and
// closes it at shutdown.

export { WEBHOOK_QUEUE, DEFAULT_DELIVERY_TUNING, type WebhookMetrics, type DeliveryTuning } from './delivery.js';
export { EVENT_ID_HEADER, SIGNATURE_HEADER, signatureHeader } from './signing.js';
export { WebhooksUnavailableError } from './secrets.js';
export type { TargetName, WebhookFailure, WebhookRegistry } from './targets.js';

/** The webhook settings as src/config reads them (Config['webhooks']). */
export interface WebhookSettings {
  operator: { url: string; secret: string } | null;
  sharedSecret: string | undefined;
  encryptionKey: { source: 'WEBHOOK_SECRET_KEY' | 'INTERNAL_API_KEY'; material: string } | null;
  retryMs: number;
  timeoutMs: number;
  concurrency: number;
}

export interface WebhooksOptions {
  /** Commands. */
  redis: Redis;
  /** BullMQ's connection. */
  bull: Redis;
  keys: ClusterKeys;
  store: Pick<Store, 'getDevice' | 'getWebhook' | 'putWebhook' | 'deleteWebhook'>;
  events: Pick<EventLog, 'read'>;
  log: Logger;
  settings: WebhookSettings;
  /** OUTBOUND_ALLOW_PRIVATE: receivers on loopback or private addresses are allowed (tests, private deployments). */
  allowPrivate: boolean;
  /** EVENTS_RETENTION_HOURS in ms. */
  eventRetentionMs: number;
  metrics?: WebhookMetrics;
  /**
   * Told how far the device's webhooks have got (every target has handed on every event up to
   * `sequence`): for writing the progress behind to the store (recorder.webhookProgress).
   */
  onDelivered?: (deviceId: string, sequence: number) => void;
  /** Tests shorten the retry intervals, holds and the target cache. */
  tuning?: Partial<DeliveryTuning> & { targetCacheMs?: number };
}

export interface Webhooks extends Pick<WebhookDelivery, 'wake' | 'startWorkers' | 'jobCounts' | 'close'> {
  /** For the HTTP API (ApiDeps.webhooks): register, remove, dead letters, URL screening. */
  readonly registry: WebhookRegistry;
}

export function createWebhooks(options: WebhooksOptions): Webhooks {
  const { settings } = options;
  const targets = createWebhookTargets({
    redis: options.redis,
    keys: options.keys,
    store: options.store,
    box: settings.encryptionKey ? createSecretBox(settings.encryptionKey) : null,
    operator: settings.operator,
    sharedSecret: settings.sharedSecret,
    allowPrivate: options.allowPrivate,
    cacheMs: options.tuning?.targetCacheMs ?? 60_000,
  });
  // A receiver's answer is its status line: the body is not read, and a redirect is not followed
  // (a webhook URL that moved is the user's to update; following it would turn the POST into a GET).
  const client = (allowPrivate: boolean) => createGuardedHttpClient({ allowPrivate, timeoutMs: settings.timeoutMs, maxBytes: 65_536, maxRedirects: 0 });
  const http = { user: client(options.allowPrivate), trusted: client(true) };
  const delivery = createWebhookDelivery({
    redis: options.redis,
    bull: options.bull,
    keys: options.keys,
    events: options.events,
    targets,
    http,
    log: options.log,
    retryMs: settings.retryMs,
    concurrency: settings.concurrency,
    eventRetentionMs: options.eventRetentionMs,
    tuning: options.tuning,
    metrics: options.metrics,
    onDelivered: options.onDelivered,
  });
  return {
    registry: targets,
    wake: (deviceId) => delivery.wake(deviceId),
    startWorkers: () => delivery.startWorkers(),
    jobCounts: () => delivery.jobCounts(),
    close: () => delivery.close(),
  };
}
