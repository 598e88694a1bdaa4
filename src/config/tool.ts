import { existsSync } from 'node:fs';
import { ConfigError } from '../shared/errors.js';
import type { StoreOptions } from '../store/types.js';
import type { RedisTarget } from '../shared/redis.js';
import { redisTarget, storeOptions } from './index.js';
import { envSchema } from './schema.js';

// Configuration of the operator's tools (`npm run status`, `npm run demo`): only what reaches
// Redis and the store, read from the same variables as the servers, so a tool works wherever a
// server's environment is, and also where none of the server-only variables (SERVER_ID,
// INTERNAL_API_KEY in production, ports) are set.

export interface ToolConfig {
  logLevel: string;
  redis: { target: RedisTarget; keyPrefix: string };
  /** The store, as a client only: a tool never hosts the embedded store. */
  store: StoreOptions;
  lease: { ttlMs: number; sweepIntervalMs: number };
}

/** The variables a tool reads; every other one is ignored, whatever its value. */
export const TOOL_VARIABLES = [
  'LOG_LEVEL',
  'REDIS_URL',
  'UPSTASH_REDIS_URL',
  'REDIS_SENTINELS',
  'REDIS_SENTINEL_MASTER',
  'REDIS_SENTINEL_PASSWORD',
  'REDIS_CLUSTER_NODES',
  'REDIS_USERNAME',
  'REDIS_PASSWORD',
  'REDIS_TLS',
  'WAFLEET_KEY_PREFIX',
  'STORE',
  'DATABASE_URL',
  'SUPABASE_URL',
  'SUPABASE_SERVICE_ROLE_KEY',
  'PGLITE_DIR',
  'PGLITE_HOST',
  'PGLITE_PORT',
  'LEASE_TTL_MS',
  'LEASE_RENEW_INTERVAL_MS',
  'LEASE_SELF_FENCE_MS',
  'SWEEP_INTERVAL_MS',
] as const;

/** Validates the tool's variables with the servers' own schema. Throws ConfigError. */
export function loadToolConfig(rawEnv: Readonly<Record<string, string | undefined>>): ToolConfig {
  const env: Record<string, string> = {};
  for (const name of TOOL_VARIABLES) {
    const value = rawEnv[name];
    if (value !== undefined && value.trim() !== '') env[name] = value;
  }
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((issue) => `${issue.path.join('.') || '(environment)'}: ${issue.message}`));
  }
  const e = parsed.data;
  const store = storeOptions(e);
  return {
    logLevel: e.LOG_LEVEL,
    redis: { target: redisTarget(e), keyPrefix: e.WAFLEET_KEY_PREFIX },
    store: store.kind === 'pglite' ? { ...store, hostMode: 'client', poolMax: 1 } : store.kind === 'postgres' ? { ...store, poolMax: 1 } : store,
    lease: { ttlMs: e.LEASE_TTL_MS, sweepIntervalMs: e.SWEEP_INTERVAL_MS },
  };
}

/** Like loadConfigFromProcess: a `.env` file fills in what the environment leaves unset. */
export function loadToolConfigFromProcess(envFile = '.env'): ToolConfig {
  if (existsSync(envFile)) process.loadEnvFile(envFile);
  return loadToolConfig(process.env);
}
