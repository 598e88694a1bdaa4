import pino, { type DestinationStream, type Logger } from 'pino';
import { redactUrlsIn } from './redact.js';

export type { Logger } from 'pino';

// Field names that hold secrets wherever they appear, one level deep or at the top. Fencing
// tokens are not secrets (operators read them with redis-cli), so `token` stays visible. Redaction is
// the safety net; the first line of defence is never passing secrets to a log call at all
// (see describeConfig).
const SECRET_FIELDS = [
  'password',
  'adminPassword',
  'ADMIN_PASSWORD',
  'apiKey',
  'apikey',
  'internalApiKey',
  'INTERNAL_API_KEY',
  'serviceRoleKey',
  'SUPABASE_SERVICE_ROLE_KEY',
  'databaseUrl',
  'DATABASE_URL',
  'redisUrl',
  'REDIS_URL',
  'UPSTASH_REDIS_URL',
  'authorization',
  'cookie',
  // Webhook signing: a device's secret, the operator's, and the key that encrypts the former.
  'secret',
  'WEBHOOK_SECRET',
  'WEBHOOK_SECRET_KEY',
  'encryptionKey',
  // Device linking material: a QR carries the advSecretKey, and creds are the session itself.
  'qr',
  'pairingCode',
  'creds',
  'advSecretKey',
];

export const REDACT_PATHS = [
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((field) => `*.${field}`),
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers.apikey',
];

/**
 * Errors are logged whole (type, message, stack, cause, code) so a warning can be traced, minus
 * what an error can carry that is secret: a Redis command's arguments (an AUTH error carries the
 * password) and credentials inside URLs in its message or stack (a connection error names the URL).
 */
export function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  return scrub(pino.stdSerializers.errWithCause(err), 0);
}

function scrub(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return redactUrlsIn(value);
  if (value === null || typeof value !== 'object') return value;
  // Deeper than any error wafleet meets: cut rather than pass it on unscrubbed.
  if (depth > 4) return '[truncated]';
  if (Array.isArray(value)) return value.map((item) => scrub(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (key === 'command' && item && typeof item === 'object' && 'args' in item) {
      out[key] = { name: (item as { name?: unknown }).name, args: '[redacted]' };
    } else if (key === 'args' || key === 'previousErrors') {
      out[key] = '[redacted]';
    } else {
      out[key] = scrub(item, depth + 1);
    }
  }
  return out;
}

export interface LoggerOptions {
  level: string;
  serverId?: string;
  /** Tests pass a stream to read what was logged; production logs to stdout. */
  destination?: DestinationStream;
}

export function createLogger({ level, serverId, destination }: LoggerOptions): Logger {
  return pino(
    {
      level,
      base: serverId ? { serverId } : {},
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      serializers: { err: serializeError },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
