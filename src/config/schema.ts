import { z } from 'zod';
import { SERVER_TYPES } from '../store/types.js';

// Every environment variable wafleet reads, in one schema. Values arrive as strings; empty
// strings count as unset so a blank line in .env falls back to the default instead of failing.

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const port = z.coerce
  .number({ error: 'must be a number' })
  .int('must be a whole number')
  .min(1, 'must be a TCP port (1-65535)')
  .max(65535, 'must be a TCP port (1-65535)');

const positiveMs = (min: number) =>
  z.coerce
    .number({ error: 'must be a number of milliseconds' })
    .int('must be a whole number of milliseconds')
    .min(min, `must be at least ${min} ms`);

const hours = z.coerce
  .number({ error: 'must be a number of hours' })
  .int('must be a whole number of hours')
  .min(1, 'must be at least 1 hour')
  .max(720, 'must be at most 720 hours (30 days)');

const urlWith = (protocols: string[], message: string) =>
  z.string().refine((value) => {
    try {
      return protocols.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, message);

const redisUrl = urlWith(['redis:', 'rediss:'], 'must be a redis:// or rediss:// URL');

/** `host:port,host:port` (IPv6 as `[::1]:26379`): Sentinel or Cluster seed addresses. */
const hostPortList = z.string().transform((value, ctx) => {
  const nodes: Array<{ host: string; port: number }> = [];
  for (const item of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const match = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(item);
    const port = match ? Number(match[2]) : 0;
    if (!match || port < 1 || port > 65535) {
      ctx.addIssue({ code: 'custom', message: `"${item}" is not host:port (a comma-separated list of host:port)` });
      return z.NEVER;
    }
    nodes.push({ host: match[1]!.replace(/^\[(.*)\]$/, '$1'), port });
  }
  if (nodes.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'must list at least one host:port' });
    return z.NEVER;
  }
  return nodes;
});
const postgresUrl = urlWith(['postgres:', 'postgresql:'], 'must be a postgres:// or postgresql:// URL');
const httpUrl = urlWith(['http:', 'https:'], 'must be an http:// or https:// URL');

export const envSchema = z
  .object({
    NODE_ENV: z
      .enum(['development', 'production', 'test'], { error: 'must be development, production or test' })
      .default('development'),
    LOG_LEVEL: z
      .enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` })
      .default('info'),

    // Identity and the server's own record in backend_servers. SERVER_ID and its fallbacks are
    // validated by identity.ts, which owns those rules.
    SERVER_NAME: z.string().min(1).max(200).optional(),
    SERVER_URL: httpUrl.optional(),
    SERVER_TYPE: z
      .enum(SERVER_TYPES, { error: `must be one of ${SERVER_TYPES.join(', ')}` })
      .default('vps'),
    SERVER_MAX_CAPACITY: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(1, 'must be at least 1')
      .max(100_000, 'must be at most 100000')
      .default(500),
    SERVER_PRIORITY: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(0, 'must be 0-1000')
      .max(1000, 'must be 0-1000')
      .default(100),
    REGION: z.string().min(1).max(64).default('local'),
    SERVER_DESCRIPTION: z.string().max(500).optional(),

    PORT: port.default(3000),
    MONITORING_PORT: port.default(3001),
    ADMIN_USERNAME: z
      .string()
      .max(64, 'must be at most 64 characters')
      // eslint-disable-next-line no-control-regex -- refusing control characters is the point
      .regex(/^[^:\x00-\x1f\x7f]+$/, "must not contain ':' or control characters (HTTP basic auth splits on ':')")
      .default('admin'),
    ADMIN_PASSWORD: z.string().min(1).max(256, 'must be at most 256 characters').optional(),
    ADMIN_LOGIN_FAILURES_PER_MINUTE: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(1, 'must be 1-1000')
      .max(1000, 'must be 1-1000')
      .default(10),
    INTERNAL_API_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
    CORS_ORIGINS: z
      .string()
      .transform((value) => value.split(',').map((origin) => origin.trim()).filter(Boolean))
      .pipe(z.array(z.url({ protocol: /^https?$/, error: 'must list http(s) origins, comma-separated' })))
      .default([]),
    TRUST_PROXY: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
    RATE_LIMIT_PER_MINUTE: z.coerce.number({ error: 'must be a number' }).int().min(1).default(600),
    RATE_LIMIT_IP_PER_MINUTE: z.coerce.number({ error: 'must be a number' }).int().min(1).default(1200),
    RATE_LIMIT_HEALTH_CHECK_PER_MINUTE: z.coerce.number({ error: 'must be a number' }).int().min(1).default(6),
    MESSAGE_RATE_PER_MINUTE: z.coerce.number({ error: 'must be a number' }).int().min(1).max(6000).default(20),
    MESSAGE_DELAY_MIN_MS: z.coerce.number({ error: 'must be a number' }).int().min(0).max(600_000).default(0),
    MESSAGE_DELAY_MAX_MS: z.coerce.number({ error: 'must be a number' }).int().min(0).max(600_000).default(0),
    MESSAGE_ATTEMPTS: z.coerce.number({ error: 'must be a number' }).int().min(1).max(100).default(5),
    MESSAGE_RETENTION_DAYS: z.coerce.number({ error: 'must be a number' }).int().min(1).max(90).default(7),
    IDEMPOTENCY_WINDOW_HOURS: z.coerce.number({ error: 'must be a number' }).int().min(1).max(720).default(24),

    // Inbound events (src/events/): each device's stream in Redis, capped by length and by age.
    EVENTS_DEDUP_HOURS: hours.default(24),
    EVENTS_STREAM_MAX_LENGTH: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(100, 'must be at least 100')
      .max(1_000_000, 'must be at most 1000000')
      .default(10_000),
    EVENTS_RETENTION_HOURS: hours.default(72),
    // The store keeps them longer than Redis (the pull API reads them there); pruned past this.
    EVENTS_STORE_RETENTION_DAYS: z.coerce
      .number({ error: 'must be a number of days' })
      .int('must be a whole number of days')
      .min(1, 'must be at least 1 day')
      .max(3650, 'must be at most 3650 days')
      .default(30),
    // Off by default: a newly linked phone syncs its chat history, which would arrive as a flood
    // of old messages no webhook receiver expects.
    EVENTS_HISTORY_SYNC: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),

    // Requests to URLs a user gave (media to send, later webhooks): src/shared/guarded-http.ts.
    OUTBOUND_ALLOW_PRIVATE: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
    OUTBOUND_TIMEOUT_MS: positiveMs(100).max(600_000, 'must be at most 600000 ms').default(10_000),
    // 16 MiB covers WhatsApp's limit for images and videos; documents (up to 100 MB on WhatsApp)
    // need more. The whole body is held in memory while it is sent, hence the ceiling.
    OUTBOUND_MAX_BYTES: z.coerce
      .number({ error: 'must be a number of bytes' })
      .int('must be a whole number of bytes')
      .min(1024, 'must be at least 1024 bytes')
      .max(104_857_600, 'must be at most 104857600 bytes (100 MiB)')
      .default(16_777_216),

    // Webhooks (src/webhooks/): each device's own (PUT /api/devices/:id/webhook) and the operator's.
    WEBHOOK_URL: httpUrl.optional(),
    WEBHOOK_SECRET: z.string().min(16, 'must be at least 16 characters').max(256, 'must be at most 256 characters').optional(),
    WEBHOOK_SECRET_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
    // Decimals allowed, so a test or a staging setup can use a window of seconds.
    WEBHOOK_RETRY_HOURS: z.coerce
      .number({ error: 'must be a number of hours' })
      .positive('must be above 0')
      .max(168, 'must be at most 168 hours (a week)')
      .default(24),
    WEBHOOK_TIMEOUT_MS: positiveMs(100).max(120_000, 'must be at most 120000 ms').default(10_000),
    WEBHOOK_CONCURRENCY: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(1, 'must be 1-1000')
      .max(1000, 'must be 1-1000')
      .default(32),

    REDIS_URL: redisUrl.optional(),
    UPSTASH_REDIS_URL: redisUrl.optional(),
    REDIS_SENTINELS: hostPortList.optional(),
    REDIS_SENTINEL_MASTER: z.string().min(1).max(200).optional(),
    REDIS_SENTINEL_PASSWORD: z.string().min(1).optional(),
    REDIS_CLUSTER_NODES: hostPortList.optional(),
    REDIS_USERNAME: z.string().min(1).optional(),
    REDIS_PASSWORD: z.string().min(1).optional(),
    REDIS_TLS: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
    WAFLEET_KEY_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,32}$/, 'must be 1-32 characters of a-z A-Z 0-9 _ - . (it becomes the {hash tag})')
      .default('wa'),

    STORE: z
      .enum(['pglite', 'postgres', 'supabase'], { error: 'must be pglite, postgres or supabase' })
      .default('pglite'),
    DATABASE_URL: postgresUrl.optional(),
    SUPABASE_URL: httpUrl.optional(),
    SUPABASE_SERVICE_ROLE_KEY: z.string().min(1).optional(),
    PGLITE_DIR: z.string().min(1).default('./data/pglite'),
    PGLITE_HOST: z.string().min(1).default('127.0.0.1'),
    PGLITE_PORT: port.default(5433),
    PGLITE_HOST_MODE: z
      .enum(['auto', 'client'], { error: 'must be auto (host when nobody does) or client (only connect)' })
      .default('auto'),
    STORE_POOL_MAX: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(1, 'must be 1-100')
      .max(100, 'must be 1-100')
      .default(4),

    LEASE_TTL_MS: positiveMs(1000).default(10_000),
    LEASE_RENEW_INTERVAL_MS: positiveMs(100).optional(),
    LEASE_SELF_FENCE_MS: positiveMs(100).optional(),
    SWEEP_INTERVAL_MS: positiveMs(50).max(1000, 'must be at most 1000 ms (the sweep runs at least once a second)').default(1000),
    PLACEMENT_TIMEOUT_MS: positiveMs(100).optional(),
    RECONCILE_INTERVAL_MS: positiveMs(500).default(5000),
    REBALANCE_INTERVAL_MS: positiveMs(500).default(10_000),
    REBALANCE_MIN_HOLD_MS: z.coerce
      .number({ error: 'must be a number of milliseconds' })
      .int('must be a whole number of milliseconds')
      .min(0, 'must be 0 or more')
      .default(60_000),
    STORE_HEALTH_INTERVAL_MS: positiveMs(1000).default(5000),
    SHUTDOWN_TIMEOUT_MS: positiveMs(1000).default(15_000),

    // Devices: which WhatsApp the sockets talk to, and what the runtime does when one closes.
    DEVICE_DRIVER: z.enum(['baileys', 'simulated'], { error: 'must be baileys or simulated' }).default('baileys'),
    DEVICE_RECONNECT_BASE_MS: positiveMs(10).default(1000),
    DEVICE_RECONNECT_CAP_MS: positiveMs(100).default(60_000),
    DEVICE_CONFLICT_LIMIT: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(1, 'must be at least 1')
      .max(100, 'must be at most 100')
      .default(3),
    DEVICE_CONFLICT_WINDOW_MS: positiveMs(1000).default(600_000),
    DEVICE_QR_MAX_ROUNDS: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(1, 'must be at least 1')
      .max(100, 'must be at most 100')
      .default(3),
    SESSION_SNAPSHOT_DELAY_MS: z.coerce
      .number({ error: 'must be a number of milliseconds' })
      .int('must be a whole number of milliseconds')
      .min(0, 'must be 0 or more')
      .max(600_000, 'must be at most 600000')
      .default(5000),
    BAILEYS_WS_URL: urlWith(['ws:', 'wss:'], 'must be a ws:// or wss:// URL').optional(),
    BAILEYS_CONNECT_TIMEOUT_MS: positiveMs(1000).default(20_000),
    BAILEYS_LOG_LEVEL: z
      .enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` })
      .default('warn'),
    SIM_CONNECT_LATENCY_MS: z.coerce
      .number({ error: 'must be a number of milliseconds' })
      .int('must be a whole number of milliseconds')
      .min(0, 'must be 0 or more')
      .max(60_000, 'must be at most 60000')
      .default(50),
    SIM_KEEPALIVE_TIMEOUT_MS: positiveMs(60).optional(),
    SIM_DROP_PER_MINUTE: z.coerce
      .number({ error: 'must be a number' })
      .min(0, 'must be a probability, 0-1')
      .max(1, 'must be a probability, 0-1')
      .default(0),
    SIM_SCAN_AFTER_CODES: z.coerce
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(0, 'must be 0 (never) or more')
      .max(100, 'must be at most 100')
      .default(1),
    SIM_QR_INTERVAL_MS: positiveMs(10).default(1000),
  })
  .superRefine((env, ctx) => {
    const ttl = env.LEASE_TTL_MS;
    const renew = env.LEASE_RENEW_INTERVAL_MS ?? Math.floor(ttl / 3);
    const fence = env.LEASE_SELF_FENCE_MS ?? Math.floor((ttl * 2) / 3);
    if (!(renew < fence && fence < ttl)) {
      ctx.addIssue({
        code: 'custom',
        path: ['LEASE_RENEW_INTERVAL_MS'],
        message: `lease timings must satisfy renew (${renew} ms) < self-fence (${fence} ms) < TTL (${ttl} ms)`,
      });
    }
    // A dead holder's simulated socket must be gone before its lease can be claimed elsewhere,
    // as WhatsApp drops a socket that stops answering pings before a new owner connects.
    if (env.SIM_KEEPALIVE_TIMEOUT_MS !== undefined && env.SIM_KEEPALIVE_TIMEOUT_MS >= ttl) {
      ctx.addIssue({ code: 'custom', path: ['SIM_KEEPALIVE_TIMEOUT_MS'], message: `must be below LEASE_TTL_MS (${ttl} ms)` });
    }
    if (env.DEVICE_RECONNECT_BASE_MS > env.DEVICE_RECONNECT_CAP_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['DEVICE_RECONNECT_BASE_MS'],
        message: `must not exceed DEVICE_RECONNECT_CAP_MS (${env.DEVICE_RECONNECT_CAP_MS} ms)`,
      });
    }
    // A dedup marker answers with its event's sequence: the event it names should still be in
    // the stream while the marker lives.
    if (env.EVENTS_RETENTION_HOURS < env.EVENTS_DEDUP_HOURS) {
      ctx.addIssue({
        code: 'custom',
        path: ['EVENTS_RETENTION_HOURS'],
        message: `must be at least EVENTS_DEDUP_HOURS (${env.EVENTS_DEDUP_HOURS}): an event id is remembered no longer than its event is kept`,
      });
    }
    // The operator's receiver gets every device's events: never unsigned.
    if (env.WEBHOOK_URL && !env.WEBHOOK_SECRET) {
      ctx.addIssue({ code: 'custom', path: ['WEBHOOK_SECRET'], message: 'is required with WEBHOOK_URL (its deliveries are signed with it)' });
    }
    if (env.MESSAGE_DELAY_MIN_MS > env.MESSAGE_DELAY_MAX_MS) {
      ctx.addIssue({ code: 'custom', path: ['MESSAGE_DELAY_MIN_MS'], message: `must not exceed MESSAGE_DELAY_MAX_MS (${env.MESSAGE_DELAY_MAX_MS})` });
    }
    // One way to reach Redis: a URL, Sentinel, or Cluster.
    const redisWays = [
      env.REDIS_URL || env.UPSTASH_REDIS_URL ? 'REDIS_URL/UPSTASH_REDIS_URL' : null,
      env.REDIS_SENTINELS ? 'REDIS_SENTINELS' : null,
      env.REDIS_CLUSTER_NODES ? 'REDIS_CLUSTER_NODES' : null,
    ].filter((way): way is string => way !== null);
    if (redisWays.length > 1) {
      ctx.addIssue({ code: 'custom', path: [redisWays[1]!.split('/')[0]!], message: `set only one of ${redisWays.join(', ')} (one Redis deployment)` });
    }
    if (env.REDIS_SENTINELS && !env.REDIS_SENTINEL_MASTER) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_SENTINEL_MASTER'], message: 'is required with REDIS_SENTINELS (the master name the sentinels monitor)' });
    }
    if (env.REDIS_SENTINEL_MASTER && !env.REDIS_SENTINELS) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_SENTINELS'], message: 'is required with REDIS_SENTINEL_MASTER (host:port of each sentinel)' });
    }
    if (env.REDIS_SENTINEL_PASSWORD && !env.REDIS_SENTINELS) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_SENTINEL_PASSWORD'], message: 'only applies with REDIS_SENTINELS' });
    }
    if (!env.REDIS_SENTINELS && !env.REDIS_CLUSTER_NODES) {
      for (const name of ['REDIS_USERNAME', 'REDIS_PASSWORD'] as const) {
        if (env[name]) ctx.addIssue({ code: 'custom', path: [name], message: 'only applies with REDIS_SENTINELS or REDIS_CLUSTER_NODES (put credentials in REDIS_URL)' });
      }
      if (env.REDIS_TLS === 'true') {
        ctx.addIssue({ code: 'custom', path: ['REDIS_TLS'], message: 'only applies with REDIS_SENTINELS or REDIS_CLUSTER_NODES (use a rediss:// REDIS_URL)' });
      }
    }
    if (env.STORE === 'postgres' && !env.DATABASE_URL) {
      ctx.addIssue({ code: 'custom', path: ['DATABASE_URL'], message: 'is required when STORE=postgres' });
    }
    if (env.STORE === 'supabase') {
      for (const name of ['SUPABASE_URL', 'SUPABASE_SERVICE_ROLE_KEY'] as const) {
        if (!env[name]) ctx.addIssue({ code: 'custom', path: [name], message: 'is required when STORE=supabase' });
      }
    }
    // INTERNAL_API_KEY's production rule is the server's alone (the monitor never uses the key),
    // so loadConfig applies it by role, like the monitor's ADMIN_PASSWORD rules.
    if (env.PORT === env.MONITORING_PORT) {
      ctx.addIssue({ code: 'custom', path: ['MONITORING_PORT'], message: `must differ from PORT (${env.PORT})` });
    }
  });

export type Env = z.infer<typeof envSchema>;
