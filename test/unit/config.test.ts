import { describe, expect, it } from 'vitest';
import { describeConfig, loadConfig } from '../../src/config/index.js';
import { ConfigError } from '../../src/shared/errors.js';

const base = { SERVER_ID: 'srv-1' };

function problemsOf(env: Record<string, string | undefined>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected loadConfig to throw');
}

describe('loadConfig', () => {
  it('runs a fresh checkout with defaults only', () => {
    const config = loadConfig({}, () => 'server-1-abcd');
    expect(config.server.identity).toEqual({ id: 'server-1-abcd', source: 'generated' });
    expect(config.server.port).toBe(3000);
    expect(config.monitoring.port).toBe(3001);
    expect(config.redis).toEqual({ target: { mode: 'standalone', url: 'redis://127.0.0.1:6379' }, keyPrefix: 'wa' });
    expect(config.store).toEqual({ kind: 'pglite', dataDir: './data/pglite', host: '127.0.0.1', port: 5433, poolMax: 4, hostMode: 'auto' });
    expect(config.lease).toEqual({
      ttlMs: 10_000,
      renewIntervalMs: 3333,
      selfFenceMs: 6666,
      sweepIntervalMs: 1000,
      placementTimeoutMs: 3000,
      reconcileIntervalMs: 5000,
      rebalanceIntervalMs: 10_000,
      rebalanceMinHoldMs: 60_000,
    });
    expect(config.devices).toEqual({
      driver: 'baileys',
      reconnect: { backoffBaseMs: 1000, backoffCapMs: 60_000, conflictLimit: 3, conflictWindowMs: 600_000, qrMaxRounds: 3 },
      sessionSnapshotDelayMs: 5000,
      baileys: { waWebSocketUrl: undefined, connectTimeoutMs: 20_000, logLevel: 'warn', historySync: false },
      simulated: { connectLatencyMs: 50, keepAliveTimeoutMs: 6666, dropPerMinute: 0, scanAfterCodes: 1, qrIntervalMs: 1000 },
    });
    expect(config.outboundHttp).toEqual({ allowPrivate: false, timeoutMs: 10_000, maxBytes: 16_777_216 });
    expect(config.nodeEnv).toBe('development');
  });

  it('lists every invalid variable in one error', () => {
    const problems = problemsOf({
      SERVER_ID: 'ab',
      LOG_LEVEL: 'loud',
      PORT: 'eighty',
      STORE: 'mysql',
      REDIS_URL: 'http://x',
      SERVER_TYPE: 'mainframe',
    });
    const names = problems.map((p) => p.split(':')[0]);
    expect(names).toEqual(expect.arrayContaining(['SERVER_ID', 'LOG_LEVEL', 'PORT', 'STORE', 'REDIS_URL', 'SERVER_TYPE']));
    expect(problems.find((p) => p.startsWith('LOG_LEVEL'))).toMatch(/fatal, error, warn, info, debug, trace, silent/);
    const message = new ConfigError(problems).message;
    expect(message.split('\n').length).toBe(problems.length + 1);
  });

  it('prefers REDIS_URL, then UPSTASH_REDIS_URL', () => {
    expect(loadConfig({ ...base, UPSTASH_REDIS_URL: 'rediss://u:p@up.example:6379' }).redis.target).toEqual({ mode: 'standalone', url: 'rediss://u:p@up.example:6379' });
    expect(loadConfig({ ...base, UPSTASH_REDIS_URL: 'rediss://up:1', REDIS_URL: 'redis://r:2' }).redis.target).toEqual({ mode: 'standalone', url: 'redis://r:2' });
  });

  it('reaches Redis through Sentinel or Cluster, with credentials and TLS', () => {
    const sentinel = loadConfig({
      ...base,
      REDIS_SENTINELS: '10.0.0.1:26379, 10.0.0.2:26379,[::1]:26380',
      REDIS_SENTINEL_MASTER: 'wafleet',
      REDIS_PASSWORD: 'data-secret',
      REDIS_SENTINEL_PASSWORD: 'sentinel-secret',
      REDIS_TLS: 'true',
    });
    expect(sentinel.redis.target).toEqual({
      mode: 'sentinel',
      sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '10.0.0.2', port: 26379 }, { host: '::1', port: 26380 }],
      masterName: 'wafleet',
      password: 'data-secret',
      sentinelPassword: 'sentinel-secret',
      tls: true,
    });
    const cluster = loadConfig({ ...base, REDIS_CLUSTER_NODES: 'r1:7000,r2:7001', REDIS_USERNAME: 'app', REDIS_PASSWORD: 'pw' });
    expect(cluster.redis.target).toEqual({ mode: 'cluster', nodes: [{ host: 'r1', port: 7000 }, { host: 'r2', port: 7001 }], username: 'app', password: 'pw', tls: false });
    // What start-up logs names the deployment and hides the passwords.
    const described = JSON.stringify([describeConfig(sentinel), describeConfig(cluster)]);
    expect(described).toContain('sentinel master \\"wafleet\\" via 10.0.0.1:26379,10.0.0.2:26379,[::1]:26380 (TLS)');
    expect(described).toContain('cluster via r1:7000,r2:7001');
    expect(described).not.toMatch(/secret|"pw"/);
  });

  it('refuses Redis settings that contradict each other or do not parse', () => {
    expect(problemsOf({ ...base, REDIS_URL: 'redis://a:1', REDIS_CLUSTER_NODES: 'b:2' })).toEqual([
      'REDIS_CLUSTER_NODES: set only one of REDIS_URL/UPSTASH_REDIS_URL, REDIS_CLUSTER_NODES (one Redis deployment)',
    ]);
    expect(problemsOf({ ...base, REDIS_SENTINELS: 'a:1' })).toEqual(['REDIS_SENTINEL_MASTER: is required with REDIS_SENTINELS (the master name the sentinels monitor)']);
    expect(problemsOf({ ...base, REDIS_SENTINEL_MASTER: 'm' })).toEqual(['REDIS_SENTINELS: is required with REDIS_SENTINEL_MASTER (host:port of each sentinel)']);
    expect(problemsOf({ ...base, REDIS_CLUSTER_NODES: 'r1:7000,r2' })).toEqual(['REDIS_CLUSTER_NODES: "r2" is not host:port (a comma-separated list of host:port)']);
    expect(problemsOf({ ...base, REDIS_CLUSTER_NODES: 'r1:70000' })[0]).toContain('"r1:70000" is not host:port');
    expect(problemsOf({ ...base, REDIS_CLUSTER_NODES: ' , ' })).toEqual(['REDIS_CLUSTER_NODES: must list at least one host:port']);
    expect(problemsOf({ ...base, REDIS_PASSWORD: 'x', REDIS_TLS: 'true' }).map((p) => p.split(':')[0])).toEqual(['REDIS_PASSWORD', 'REDIS_TLS']);
    expect(problemsOf({ ...base, REDIS_TLS: 'yes' })).toEqual(['REDIS_TLS: must be true or false']);
  });

  it('requires DATABASE_URL for STORE=postgres and the Supabase pair for STORE=supabase', () => {
    expect(problemsOf({ ...base, STORE: 'postgres' })).toEqual(['DATABASE_URL: is required when STORE=postgres']);
    expect(problemsOf({ ...base, STORE: 'supabase' }).sort()).toEqual([
      'SUPABASE_SERVICE_ROLE_KEY: is required when STORE=supabase',
      'SUPABASE_URL: is required when STORE=supabase',
    ]);
    const pg = loadConfig({ ...base, STORE: 'postgres', DATABASE_URL: 'postgres://u@h/db', STORE_POOL_MAX: '7' });
    expect(pg.store).toEqual({ kind: 'postgres', databaseUrl: 'postgres://u@h/db', poolMax: 7 });
  });

  it('demands an INTERNAL_API_KEY of at least 32 characters in production', () => {
    expect(problemsOf({ ...base, NODE_ENV: 'production' })).toEqual([
      'INTERNAL_API_KEY: must be set and at least 32 characters long in production',
    ]);
    expect(problemsOf({ ...base, NODE_ENV: 'production', INTERNAL_API_KEY: 'k'.repeat(31) })).toHaveLength(1);
    expect(loadConfig({ ...base, NODE_ENV: 'production', INTERNAL_API_KEY: 'k'.repeat(32) }).internalApiKey).toHaveLength(32);
    // Outside production a shorter key is accepted so a laptop can run with a memorable one.
    expect(loadConfig({ ...base, INTERNAL_API_KEY: 'k'.repeat(16) }).internalApiKey).toHaveLength(16);
  });

  it('keeps lease timings ordered: renew < self-fence < TTL', () => {
    expect(loadConfig({ ...base, LEASE_TTL_MS: '3000' }).lease).toMatchObject({ renewIntervalMs: 1000, selfFenceMs: 2000 });
    expect(problemsOf({ ...base, LEASE_TTL_MS: '3000', LEASE_SELF_FENCE_MS: '3000' })[0]).toMatch(
      /renew \(1000 ms\) < self-fence \(3000 ms\) < TTL \(3000 ms\)/,
    );
    expect(problemsOf({ ...base, LEASE_RENEW_INTERVAL_MS: '9000' })).toHaveLength(1);
    expect(problemsOf({ ...base, LEASE_TTL_MS: '500' })[0]).toMatch(/^LEASE_TTL_MS: must be at least 1000 ms/);
    expect(problemsOf({ ...base, LEASE_TTL_MS: '3000', SIM_KEEPALIVE_TIMEOUT_MS: '3000' })).toEqual([
      'SIM_KEEPALIVE_TIMEOUT_MS: must be below LEASE_TTL_MS (3000 ms)',
    ]);
  });

  it('chooses the device driver and validates the device settings', () => {
    const config = loadConfig({
      ...base,
      DEVICE_DRIVER: 'simulated',
      BAILEYS_WS_URL: 'ws://127.0.0.1:9999/ws/chat',
      DEVICE_RECONNECT_BASE_MS: '250',
      SIM_DROP_PER_MINUTE: '0.5',
      SIM_SCAN_AFTER_CODES: '0',
    });
    expect(config.devices).toMatchObject({
      driver: 'simulated',
      baileys: { waWebSocketUrl: 'ws://127.0.0.1:9999/ws/chat' },
      reconnect: { backoffBaseMs: 250 },
      simulated: { dropPerMinute: 0.5, scanAfterCodes: 0 },
    });
    const problems = problemsOf({
      ...base,
      DEVICE_DRIVER: 'whatsmeow',
      BAILEYS_WS_URL: 'https://web.whatsapp.com',
      SIM_DROP_PER_MINUTE: '2',
      DEVICE_QR_MAX_ROUNDS: '0',
    });
    expect(problems.map((p) => p.split(':')[0]).sort()).toEqual(['BAILEYS_WS_URL', 'DEVICE_DRIVER', 'DEVICE_QR_MAX_ROUNDS', 'SIM_DROP_PER_MINUTE']);
    expect(problems.find((p) => p.startsWith('DEVICE_DRIVER'))).toBe('DEVICE_DRIVER: must be baileys or simulated');
    expect(problemsOf({ ...base, DEVICE_RECONNECT_BASE_MS: '5000', DEVICE_RECONNECT_CAP_MS: '1000' })).toEqual([
      'DEVICE_RECONNECT_BASE_MS: must not exceed DEVICE_RECONNECT_CAP_MS (1000 ms)',
    ]);
  });

  it('reads the rules of requests to user-given URLs, and says them at start-up', () => {
    const config = loadConfig({ ...base, OUTBOUND_ALLOW_PRIVATE: 'true', OUTBOUND_TIMEOUT_MS: '2500', OUTBOUND_MAX_BYTES: '104857600' });
    expect(config.outboundHttp).toEqual({ allowPrivate: true, timeoutMs: 2500, maxBytes: 104_857_600 });
    expect(describeConfig(config).outboundHttp).toEqual({ allowPrivate: true, timeoutMs: 2500, maxBytes: 104_857_600 });
    expect(problemsOf({ ...base, OUTBOUND_ALLOW_PRIVATE: 'yes', OUTBOUND_TIMEOUT_MS: '50', OUTBOUND_MAX_BYTES: '104857601' })).toEqual([
      'OUTBOUND_ALLOW_PRIVATE: must be true or false',
      'OUTBOUND_TIMEOUT_MS: must be at least 100 ms',
      'OUTBOUND_MAX_BYTES: must be at most 104857600 bytes (100 MiB)',
    ]);
  });

  it('reads the webhook settings: the operator receiver needs its secret, and the secrets key falls back to INTERNAL_API_KEY', () => {
    expect(loadConfig(base).webhooks).toEqual({ operator: null, sharedSecret: undefined, encryptionKey: null, retryMs: 86_400_000, timeoutMs: 10_000, concurrency: 32 });
    const internal = loadConfig({ ...base, INTERNAL_API_KEY: 'i'.repeat(32), WEBHOOK_RETRY_HOURS: '0.001', WEBHOOK_TIMEOUT_MS: '500', WEBHOOK_CONCURRENCY: '4' });
    expect(internal.webhooks).toMatchObject({ encryptionKey: { source: 'INTERNAL_API_KEY', material: 'i'.repeat(32) }, retryMs: 3600, timeoutMs: 500, concurrency: 4 });
    const own = loadConfig({ ...base, INTERNAL_API_KEY: 'i'.repeat(32), WEBHOOK_SECRET_KEY: 'w'.repeat(32), WEBHOOK_URL: 'https://ops.example/hook?token=t0p', WEBHOOK_SECRET: 's'.repeat(16) });
    expect(own.webhooks).toMatchObject({ operator: { url: 'https://ops.example/hook?token=t0p', secret: 's'.repeat(16) }, encryptionKey: { source: 'WEBHOOK_SECRET_KEY' } });
    // Said at start-up without a secret: the operator URL without its query, the key by its source.
    const said = JSON.stringify(describeConfig(own));
    for (const secret of ['t0p', 's'.repeat(16), 'w'.repeat(32), 'i'.repeat(32)]) expect(said).not.toContain(secret);
    expect(describeConfig(own).webhooks).toMatchObject({ operatorUrl: 'https://ops.example/hook', encryptionKeyFrom: 'WEBHOOK_SECRET_KEY' });
    expect(problemsOf({ ...base, WEBHOOK_URL: 'ftp://x', WEBHOOK_SECRET: 's'.repeat(16), WEBHOOK_SECRET_KEY: 'short', WEBHOOK_RETRY_HOURS: '0', WEBHOOK_CONCURRENCY: '0' })).toEqual([
      'WEBHOOK_URL: must be an http:// or https:// URL',
      'WEBHOOK_SECRET_KEY: must be at least 32 characters',
      'WEBHOOK_RETRY_HOURS: must be above 0',
      'WEBHOOK_CONCURRENCY: must be 1-1000',
    ]);
    expect(problemsOf({ ...base, WEBHOOK_URL: 'https://ops.example/hook' })).toEqual(['WEBHOOK_SECRET: is required with WEBHOOK_URL (its deliveries are signed with it)']);
  });

  it('takes a synced chat history as events only when asked to', () => {
    expect(loadConfig({ ...base, EVENTS_HISTORY_SYNC: 'true' }).devices.baileys.historySync).toBe(true);
    expect(problemsOf({ ...base, EVENTS_HISTORY_SYNC: 'yes' })).toEqual(['EVENTS_HISTORY_SYNC: must be true or false']);
  });

  it('reads the event log windows and caps; a dedup window longer than the retention is refused', () => {
    expect(loadConfig(base).events).toEqual({ dedupMs: 86_400_000, maxLength: 10_000, retentionMs: 259_200_000, storeRetentionMs: 30 * 86_400_000 });
    expect(loadConfig({ ...base, EVENTS_DEDUP_HOURS: '48', EVENTS_RETENTION_HOURS: '48', EVENTS_STREAM_MAX_LENGTH: '500', EVENTS_STORE_RETENTION_DAYS: '90' }).events).toEqual({
      dedupMs: 172_800_000,
      maxLength: 500,
      retentionMs: 172_800_000,
      storeRetentionMs: 90 * 86_400_000,
    });
    expect(problemsOf({ ...base, EVENTS_STORE_RETENTION_DAYS: '0' })).toEqual(['EVENTS_STORE_RETENTION_DAYS: must be at least 1 day']);
    expect(problemsOf({ ...base, EVENTS_RETENTION_HOURS: '12' })).toEqual([
      'EVENTS_RETENTION_HOURS: must be at least EVENTS_DEDUP_HOURS (24): an event id is remembered no longer than its event is kept',
    ]);
    expect(problemsOf({ ...base, EVENTS_DEDUP_HOURS: '0.5', EVENTS_STREAM_MAX_LENGTH: '10' })).toEqual([
      'EVENTS_DEDUP_HOURS: must be a whole number of hours',
      'EVENTS_STREAM_MAX_LENGTH: must be at least 100',
    ]);
  });

  it('treats blank values as unset', () => {
    expect(loadConfig({ ...base, PORT: '', LOG_LEVEL: '  ' }).server.port).toBe(3000);
  });

  it('refuses a key prefix that would break the {hash tag}', () => {
    expect(problemsOf({ ...base, WAFLEET_KEY_PREFIX: 'a}b' })[0]).toMatch(/^WAFLEET_KEY_PREFIX:/);
  });

  it('refuses PORT equal to MONITORING_PORT', () => {
    expect(problemsOf({ ...base, PORT: '4000', MONITORING_PORT: '4000' })).toEqual(['MONITORING_PORT: must differ from PORT (4000)']);
  });

  it('describes itself without any secret', () => {
    const config = loadConfig({
      ...base,
      STORE: 'supabase',
      SUPABASE_URL: 'https://proj.supabase.co',
      SUPABASE_SERVICE_ROLE_KEY: 'service-role-secret',
      DATABASE_URL: 'postgres://postgres:db-secret@db.proj.supabase.co:5432/postgres',
      REDIS_URL: 'redis://default:redis-secret@cache:6379',
      INTERNAL_API_KEY: 'internal-key-secret-0123456789',
      ADMIN_PASSWORD: 'admin-secret',
    });
    const text = JSON.stringify(describeConfig(config));
    for (const secret of ['service-role-secret', 'db-secret', 'redis-secret', 'internal-key-secret', 'admin-secret']) {
      expect(text).not.toContain(secret);
    }
    expect(text).toContain('redis://default:***@cache:6379');
  });

  it('.env.example is a valid configuration as it stands, and names every variable the schema reads', async () => {
    const { readFileSync } = await import('node:fs');
    const { parseEnv } = await import('node:util');
    const { envSchema } = await import('../../src/config/schema.js');
    const example = parseEnv(readFileSync(new URL('../../.env.example', import.meta.url), 'utf8')) as Record<string, string>;
    expect(() => loadConfig(example)).not.toThrow();
    const documented = new Set(Object.keys(example));
    const read = Object.keys(envSchema.shape);
    expect(read.filter((name) => !documented.has(name))).toEqual([]);
  });
});
