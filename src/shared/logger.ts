import pino, { type DestinationStream, type Logger } from 'pino';

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
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
