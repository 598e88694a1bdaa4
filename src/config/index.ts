import { existsSync } from 'node:fs';
import { ConfigError } from '../shared/errors.js';
import { redactUrl, redactUserUrl } from '../shared/redact.js';
import { describeRedisTarget, type RedisTarget } from '../shared/redis.js';
import type { StoreOptions, ServerType } from '../store/types.js';
import { envSchema, type Env } from './schema.js';
import { resolveServerIdentity, type ServerIdentity } from './identity.js';
import { adminPasswordProblems } from './admin-password.js';

export { serverIdProblems, resolveServerIdentity, generateServerId } from './identity.js';
export { adminPasswordProblems, adminPasswordWeaknesses, ADMIN_PASSWORD_MIN_LENGTH } from './admin-password.js';
export type { ServerIdentity, ServerIdSource } from './identity.js';

export interface Config {
  nodeEnv: Env['NODE_ENV'];
  logLevel: Env['LOG_LEVEL'];
  server: {
    identity: ServerIdentity;
    name: string;
    url: string;
    type: ServerType;
    region: string;
    description: string | null;
    maxCapacity: number;
    priority: number;
    port: number;
  };
  monitoring: {
    port: number;
    adminUsername: string;
    adminPassword: string | undefined;
    /** Wrong basic-auth logins per client IP per minute before the monitoring port answers 429. */
    loginFailuresPerMinute: number;
  };
  internalApiKey: string | undefined;
  messages: {
    ratePerMinute: number;
    delayMs: [number, number];
    attempts: number;
    retentionMs: number;
    idempotencyMs: number;
  };
  /** Inbound events: the per-device log in Redis (src/events/event-log.ts); storeRetentionMs: the store's copy (EVENTS_STORE_RETENTION_DAYS). */
  events: { dedupMs: number; maxLength: number; retentionMs: number; storeRetentionMs: number };
  http: {
    corsOrigins: string[];
    trustProxy: boolean;
    limits: { perKeyPerMinute: number; perIpPerMinute: number; healthCheckPerMinute: number };
  };
  redis: { target: RedisTarget; keyPrefix: string };
  store: StoreOptions;
  lease: {
    ttlMs: number;
    renewIntervalMs: number;
    selfFenceMs: number;
    sweepIntervalMs: number;
    /** How long a placement target has to claim before the device is placed again. */
    placementTimeoutMs: number;
    reconcileIntervalMs: number;
    rebalanceIntervalMs: number;
    /** A device is not moved by rebalance twice within this long. */
    rebalanceMinHoldMs: number;
  };
  devices: {
    /** Which WhatsApp the sockets talk to: Baileys (the real one) or the simulated one. */
    driver: 'baileys' | 'simulated';
    /** What the runtime does when a socket closes (src/devices/reconnect-policy.ts). */
    reconnect: { backoffBaseMs: number; backoffCapMs: number; conflictLimit: number; conflictWindowMs: number; qrMaxRounds: number };
    /** The store's session snapshot trails Redis by at most this long. */
    sessionSnapshotDelayMs: number;
    /** historySync: messages of a chat history WhatsApp syncs to a newly linked device become events too (EVENTS_HISTORY_SYNC). */
    baileys: { waWebSocketUrl: string | undefined; connectTimeoutMs: number; logLevel: Env['BAILEYS_LOG_LEVEL']; historySync: boolean };
    simulated: {
      connectLatencyMs: number;
      keepAliveTimeoutMs: number;
      dropPerMinute: number;
      scanAfterCodes: number;
      qrIntervalMs: number;
    };
  };
  /** Requests to URLs a user gave (media, webhooks): the guarded client's rules (src/shared/guarded-http.ts). */
  outboundHttp: { allowPrivate: boolean; timeoutMs: number; maxBytes: number };
  /** Webhook delivery (src/webhooks/): see webhookSettings. */
  webhooks: ReturnType<typeof webhookSettings>;
  /** How often backend_servers.current_load and last_health_check are refreshed. */
  storeHealthIntervalMs: number;
  shutdownTimeoutMs: number;
}

type RawEnv = Readonly<Record<string, string | undefined>>;

/**
 * Which process reads the configuration. Both read the same environment (pm2 gives every app the
 * same one): a `server` validates its identity and INTERNAL_API_KEY and ignores the admin password;
 * the `monitor` (src/monitor.ts) is no server, so neither of those matters to it, but it needs
 * the password.
 */
export type ConfigRole = 'server' | 'monitor';

/**
 * Parses and validates the whole environment at once, so an operator sees every problem in one
 * message instead of fixing them one restart at a time. Throws ConfigError.
 */
export function loadConfig(rawEnv: RawEnv, generateId?: () => string, role: ConfigRole = 'server'): Config {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(rawEnv)) {
    if (value !== undefined && value.trim() !== '') env[key] = value;
  }

  const problems: string[] = [];
  const { identity, problems: identityProblems } = resolveServerIdentity(env, generateId);
  if (role === 'server') problems.push(...identityProblems);

  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const name = issue.path.join('.') || '(environment)';
      problems.push(`${name}: ${issue.message}`);
    }
  }
  // Each role's own rules read the raw values, so they are reported together with any other problem.
  if (role === 'server' && env.NODE_ENV === 'production' && (env.INTERNAL_API_KEY ?? '').length < 32) {
    problems.push('INTERNAL_API_KEY: must be set and at least 32 characters long in production');
  }
  if (role === 'monitor') {
    problems.push(
      ...adminPasswordProblems({ username: env.ADMIN_USERNAME ?? 'admin', password: env.ADMIN_PASSWORD, production: env.NODE_ENV === 'production' }),
    );
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);

  const e = parsed.data;
  const ttlMs = e.LEASE_TTL_MS;
  const selfFenceMs = e.LEASE_SELF_FENCE_MS ?? Math.floor((ttlMs * 2) / 3);
  return {
    nodeEnv: e.NODE_ENV,
    logLevel: e.LOG_LEVEL,
    server: {
      identity,
      name: e.SERVER_NAME ?? identity.id,
      url: e.SERVER_URL ?? `http://127.0.0.1:${e.PORT}`,
      type: e.SERVER_TYPE,
      region: e.REGION,
      description: e.SERVER_DESCRIPTION ?? null,
      maxCapacity: e.SERVER_MAX_CAPACITY,
      priority: e.SERVER_PRIORITY,
      port: e.PORT,
    },
    monitoring: {
      port: e.MONITORING_PORT,
      adminUsername: e.ADMIN_USERNAME,
      adminPassword: e.ADMIN_PASSWORD,
      loginFailuresPerMinute: e.ADMIN_LOGIN_FAILURES_PER_MINUTE,
    },
    internalApiKey: e.INTERNAL_API_KEY,
    messages: {
      ratePerMinute: e.MESSAGE_RATE_PER_MINUTE,
      delayMs: [e.MESSAGE_DELAY_MIN_MS, e.MESSAGE_DELAY_MAX_MS],
      attempts: e.MESSAGE_ATTEMPTS,
      retentionMs: e.MESSAGE_RETENTION_DAYS * 86_400_000,
      idempotencyMs: e.IDEMPOTENCY_WINDOW_HOURS * 3_600_000,
    },
    events: {
      dedupMs: e.EVENTS_DEDUP_HOURS * 3_600_000,
      maxLength: e.EVENTS_STREAM_MAX_LENGTH,
      retentionMs: e.EVENTS_RETENTION_HOURS * 3_600_000,
      storeRetentionMs: e.EVENTS_STORE_RETENTION_DAYS * 86_400_000,
    },
    http: {
      corsOrigins: e.CORS_ORIGINS,
      trustProxy: e.TRUST_PROXY === 'true',
      limits: {
        perKeyPerMinute: e.RATE_LIMIT_PER_MINUTE,
        perIpPerMinute: e.RATE_LIMIT_IP_PER_MINUTE,
        healthCheckPerMinute: e.RATE_LIMIT_HEALTH_CHECK_PER_MINUTE,
      },
    },
    redis: {
      target: redisTarget(e),
      keyPrefix: e.WAFLEET_KEY_PREFIX,
    },
    store: storeOptions(e),
    lease: {
      ttlMs,
      renewIntervalMs: e.LEASE_RENEW_INTERVAL_MS ?? Math.floor(ttlMs / 3),
      selfFenceMs,
      sweepIntervalMs: e.SWEEP_INTERVAL_MS,
      placementTimeoutMs: e.PLACEMENT_TIMEOUT_MS ?? Math.min(3000, Math.floor(ttlMs / 2)),
      reconcileIntervalMs: e.RECONCILE_INTERVAL_MS,
      rebalanceIntervalMs: e.REBALANCE_INTERVAL_MS,
      rebalanceMinHoldMs: e.REBALANCE_MIN_HOLD_MS,
    },
    devices: {
      driver: e.DEVICE_DRIVER,
      reconnect: {
        backoffBaseMs: e.DEVICE_RECONNECT_BASE_MS,
        backoffCapMs: e.DEVICE_RECONNECT_CAP_MS,
        conflictLimit: e.DEVICE_CONFLICT_LIMIT,
        conflictWindowMs: e.DEVICE_CONFLICT_WINDOW_MS,
        qrMaxRounds: e.DEVICE_QR_MAX_ROUNDS,
      },
      sessionSnapshotDelayMs: e.SESSION_SNAPSHOT_DELAY_MS,
      baileys: { waWebSocketUrl: e.BAILEYS_WS_URL, connectTimeoutMs: e.BAILEYS_CONNECT_TIMEOUT_MS, logLevel: e.BAILEYS_LOG_LEVEL, historySync: e.EVENTS_HISTORY_SYNC === 'true' },
      simulated: {
        connectLatencyMs: e.SIM_CONNECT_LATENCY_MS,
        keepAliveTimeoutMs: e.SIM_KEEPALIVE_TIMEOUT_MS ?? selfFenceMs,
        dropPerMinute: e.SIM_DROP_PER_MINUTE,
        scanAfterCodes: e.SIM_SCAN_AFTER_CODES,
        qrIntervalMs: e.SIM_QR_INTERVAL_MS,
      },
    },
    outboundHttp: { allowPrivate: e.OUTBOUND_ALLOW_PRIVATE === 'true', timeoutMs: e.OUTBOUND_TIMEOUT_MS, maxBytes: e.OUTBOUND_MAX_BYTES },
    webhooks: webhookSettings(e),
    storeHealthIntervalMs: e.STORE_HEALTH_INTERVAL_MS,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
  };
}

export function storeOptions(e: Env): StoreOptions {
  switch (e.STORE) {
    case 'postgres':
      // The schema guarantees DATABASE_URL for STORE=postgres.
      return { kind: 'postgres', databaseUrl: e.DATABASE_URL!, poolMax: e.STORE_POOL_MAX };
    case 'supabase':
      return {
        kind: 'supabase',
        url: e.SUPABASE_URL!,
        serviceRoleKey: e.SUPABASE_SERVICE_ROLE_KEY!,
        databaseUrl: e.DATABASE_URL,
      };
    case 'pglite':
      return {
        kind: 'pglite',
        dataDir: e.PGLITE_DIR,
        host: e.PGLITE_HOST,
        port: e.PGLITE_PORT,
        poolMax: e.STORE_POOL_MAX,
        hostMode: e.PGLITE_HOST_MODE,
      };
  }
}

/**
 * Webhooks: the operator's receiver (WEBHOOK_URL, signed with WEBHOOK_SECRET, which also signs a
 * device's older `webhookUrl`), the key that encrypts device webhook secrets in the store
 * (WEBHOOK_SECRET_KEY, else derived from INTERNAL_API_KEY, else none: device webhooks cannot be
 * registered), and the delivery's retry window, timeout and concurrency.
 */
export function webhookSettings(e: Env) {
  const encryptionKey = e.WEBHOOK_SECRET_KEY
    ? { source: 'WEBHOOK_SECRET_KEY' as const, material: e.WEBHOOK_SECRET_KEY }
    : e.INTERNAL_API_KEY
      ? { source: 'INTERNAL_API_KEY' as const, material: e.INTERNAL_API_KEY }
      : null;
  return {
    operator: e.WEBHOOK_URL && e.WEBHOOK_SECRET ? { url: e.WEBHOOK_URL, secret: e.WEBHOOK_SECRET } : null,
    sharedSecret: e.WEBHOOK_SECRET,
    encryptionKey,
    retryMs: Math.round(e.WEBHOOK_RETRY_HOURS * 3_600_000),
    timeoutMs: e.WEBHOOK_TIMEOUT_MS,
    concurrency: e.WEBHOOK_CONCURRENCY,
  };
}

/** How to reach Redis, from the variables the schema has checked (one way at most is set). */
export function redisTarget(e: Env): RedisTarget {
  const credentials = { ...(e.REDIS_USERNAME ? { username: e.REDIS_USERNAME } : {}), ...(e.REDIS_PASSWORD ? { password: e.REDIS_PASSWORD } : {}) };
  const tls = e.REDIS_TLS === 'true';
  if (e.REDIS_SENTINELS && e.REDIS_SENTINEL_MASTER) {
    return {
      mode: 'sentinel',
      sentinels: e.REDIS_SENTINELS,
      masterName: e.REDIS_SENTINEL_MASTER,
      ...credentials,
      ...(e.REDIS_SENTINEL_PASSWORD ? { sentinelPassword: e.REDIS_SENTINEL_PASSWORD } : {}),
      tls,
    };
  }
  if (e.REDIS_CLUSTER_NODES) return { mode: 'cluster', nodes: e.REDIS_CLUSTER_NODES, ...credentials, tls };
  return { mode: 'standalone', url: e.REDIS_URL ?? e.UPSTASH_REDIS_URL ?? 'redis://127.0.0.1:6379' };
}

/** A view of the config that is safe to log: no secret values, URLs with passwords hidden. */
export function describeConfig(config: Config): Record<string, unknown> {
  const store =
    config.store.kind === 'postgres'
      ? { kind: 'postgres', databaseUrl: redactUrl(config.store.databaseUrl) }
      : config.store.kind === 'supabase'
        ? { kind: 'supabase', url: config.store.url, migrationsVia: config.store.databaseUrl ? 'DATABASE_URL' : 'none' }
        : { kind: 'pglite', dataDir: config.store.dataDir, host: config.store.host, port: config.store.port };
  return {
    nodeEnv: config.nodeEnv,
    serverId: config.server.identity.id,
    port: config.server.port,
    monitoringPort: config.monitoring.port,
    redis: describeRedisTarget(config.redis.target),
    keyPrefix: config.redis.keyPrefix,
    store,
    lease: config.lease,
    devices: { driver: config.devices.driver, reconnect: config.devices.reconnect },
    outboundHttp: config.outboundHttp,
    internalApiKey: config.internalApiKey ? 'set' : 'unset',
    webhooks: {
      operatorUrl: config.webhooks.operator ? redactUserUrl(config.webhooks.operator.url) : null,
      signing: config.webhooks.sharedSecret ? 'WEBHOOK_SECRET' : 'unset',
      encryptionKeyFrom: config.webhooks.encryptionKey?.source ?? 'unset',
      retryMs: config.webhooks.retryMs,
      timeoutMs: config.webhooks.timeoutMs,
      concurrency: config.webhooks.concurrency,
    },
    adminPassword: config.monitoring.adminPassword ? 'set' : 'unset',
  };
}

/**
 * The one place in wafleet that reads process.env. A `.env` file in the working directory fills
 * in what the environment leaves unset; the environment always wins.
 */
export function loadConfigFromProcess(envFile = '.env', role: ConfigRole = 'server'): Config {
  if (existsSync(envFile)) process.loadEnvFile(envFile);
  return loadConfig(process.env, undefined, role);
}
