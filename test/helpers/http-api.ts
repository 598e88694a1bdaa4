import type { Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { createInbox } from '../../src/cluster/inbox.js';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseStore, type LeaseStore } from '../../src/cluster/lease-store.js';
import { createServerDirectory } from '../../src/cluster/server-directory.js';
import { createDeviceSessions } from '../../src/devices/session-access.js';
import { createSimulatedWhatsApp } from '../../src/devices/simulated/inbound.js';
import { createEventLog, type EventLog } from '../../src/events/event-log.js';
import { createMetrics } from '../../src/metrics/index.js';
import { createHttpApp, type HttpOptions } from '../../src/http/app.js';
import { createAuthenticator } from '../../src/http/auth.js';
import { probeHealth } from '../../src/http/probe.js';
import { createEventStreams } from '../../src/http/event-stream.js';
import { createRateLimiter } from '../../src/http/rate-limit.js';
import { createMessageRecords } from '../../src/queues/messages.js';
import { createOutboundProducer } from '../../src/queues/outbound.js';
import { createStore, type Store } from '../../src/store/index.js';
import type { WebhookRegistry } from '../../src/webhooks/index.js';
import { createTestDatabase, type TestDatabase } from '../../harness/postgres.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';
import { startTcpProxy, type TcpProxy } from '../../harness/tcp-proxy.js';

// The HTTP API served in the test process on a random port, over a real Redis and a real store.
// It is the same app a server process builds; only the device runtime is absent, so placement
// goes straight to the placement script.

export const INTERNAL_KEY = 'internal-test-key-0123456789abcdef';

export interface CallOptions {
  /** The API key (default: the internal key; null: no Authorization header). */
  key?: string | null;
  body?: unknown;
  /** Sent as is, with no content type unless `headers` gives one. */
  rawBody?: string;
  headers?: Record<string, string>;
  /** Another server's base URL (see twin). */
  base?: string;
}

export interface TestApi {
  url: string;
  redis: TestRedis;
  keys: ClusterKeys;
  leases: LeaseStore;
  /** The devices' event log the API reads (a test appends to it as a device's owner would). */
  events: EventLog;
  store: Store;
  db: TestDatabase;
  /** The proxy between the app and the store (startTestApi's storeProxy), or null. */
  storeProxy: TcpProxy | null;
  /** fetch against the API with the internal key unless `key` says otherwise (null: no header). */
  call(method: string, path: string, options?: CallOptions): Promise<{ status: number; body: any; headers: Headers }>;
  /** Another app on the same Redis and store: a second server behind the load balancer. */
  twin(options?: Partial<HttpOptions['limits']>): Promise<string>;
  close(): Promise<void>;
}

/** What a test builds its webhooks from: the app's own Redis, keys, store and event log. */
export interface WebhookParts {
  redis: TestRedis;
  keys: ClusterKeys;
  store: Store;
  events: EventLog;
}

export interface TestApiOptions {
  storeProxy?: boolean;
  /** The app is wired as with DEVICE_DRIVER=simulated, the simulated WhatsApp's routes included. */
  sim?: boolean;
  /** Device webhooks for the API (ApiDeps.webhooks), made by the test; absent, their routes answer 503. */
  webhooks?: (parts: WebhookParts) => WebhookRegistry;
}

export async function startTestApi(limits: Partial<HttpOptions['limits']> = {}, { storeProxy = false, sim = false, webhooks: makeWebhooks }: TestApiOptions = {}): Promise<TestApi> {
  const redis = await useTestRedis();
  const keys = createClusterKeys(redis.prefix);
  const db = await createTestDatabase();
  const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  // With storeProxy, the app reaches the store through a TCP proxy the test can stop.
  const direct = new URL(db.url);
  const proxy = storeProxy ? await startTcpProxy(direct.hostname, Number(direct.port || 5432)) : null;
  const storeUrl = new URL(db.url);
  if (proxy) storeUrl.port = String(proxy.port);
  const store = await createStore({ kind: 'postgres', databaseUrl: storeUrl.toString(), poolMax: 4 }, { log });
  await store.migrate();
  const leases = createLeaseStore({ redis: redis.redis, keys });
  const events = createEventLog({ redis: redis.redis, keys, metrics: createMetrics({ serverId: 'api-test', processMetrics: false }), dedupMs: 60_000, maxLength: 1000, retentionMs: 3_600_000 });
  const messages = createMessageRecords({ redis: redis.redis, keys, retentionMs: 7 * 86_400_000 });
  const producer = createOutboundProducer({ redis: redis.redis, keys, retentionMs: 7 * 86_400_000 });
  const servers: Server[] = [];
  const streams = createEventStreams({ events, store, pollMs: 100 });
  const webhooks = makeWebhooks?.({ redis, keys, store, events });

  const serve = async (overrides: Partial<HttpOptions['limits']>) => {
    const app = createHttpApp({
      log,
      health: () => ({ status: 'ok', activeConnections: 0, leases: 0, timestamp: new Date().toISOString(), serverId: 'api-test', draining: false }),
      ready: () => true,
      rateLimiter: createRateLimiter({ redis: redis.redis, keys }),
      options: {
        production: false,
        corsOrigins: ['https://dashboard.example'],
        trustProxy: false,
        limits: { perKeyPerMinute: 10_000, perIpPerMinute: 100_000, healthCheckPerMinute: 3, ...limits, ...overrides },
      },
      api: {
        store,
        leases,
        servers: createServerDirectory({ redis: redis.redis, keys }),
        inbox: createInbox({ redis: redis.redis, keys }),
        authenticator: createAuthenticator({ internalApiKey: INTERNAL_KEY, store, cacheMs: 0 }),
        log,
        place: async (deviceId) => leases.place(deviceId, await redis.redis.smembers(keys.servers), 60_000),
        sessions: createDeviceSessions({ redis: redis.redis, keys, store }),
        events,
        eventStreams: streams,
        probeHealth,
        messages,
        defaultRatePerMinute: 20,
        idempotencyMs: 86_400_000,
        enqueueMessage: (messageId, deviceId) => producer.enqueue(messageId, deviceId),
        sim: sim ? createSimulatedWhatsApp({ redis: redis.redis, keys }) : undefined,
        webhooks,
      },
    });
    const server = createServer(app);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };

  const url = await serve({});
  const call = async (method: string, path: string, options: CallOptions = {}) => {
    const base = options.base ?? url;
    const key = options.key === undefined ? INTERNAL_KEY : options.key;
    const headers: Record<string, string> = { ...(key ? { authorization: `Bearer ${key}` } : {}) };
    let body: string | undefined;
    if (options.rawBody !== undefined) body = options.rawBody;
    else if (options.body !== undefined && method !== 'GET' && method !== 'HEAD') {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    const res = await fetch(`${base}${path}`, { method, headers: { ...headers, ...options.headers }, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, body: parsed as any, headers: res.headers };
  };

  return {
    url,
    redis,
    keys,
    leases,
    events,
    store,
    db,
    storeProxy: proxy,
    call,
    twin: (overrides = {}) => serve(overrides),
    async close() {
      streams.close();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
      await producer.close();
      await store.close();
      await proxy?.close();
      await db.drop();
      await redis.cleanup();
    },
  };
}
