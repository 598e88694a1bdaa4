import { randomBytes } from 'node:crypto';

// Server identity rules (the design brief's section 6; the README's "Server identity" restates them). The same rules are a CHECK on
// backend_servers.id, so an id that passes here is always storable.

export const SERVER_ID_SOURCES = [
  'SERVER_ID',
  'RAILWAY_STATIC_URL',
  'RAILWAY_SERVICE_NAME',
  'HOSTNAME',
] as const;
export type ServerIdSource = (typeof SERVER_ID_SOURCES)[number] | 'generated';

export interface ServerIdentity {
  id: string;
  source: ServerIdSource;
}

const ALLOWED = /^[A-Za-z0-9_.-]+$/;
const RESERVED = new Set(['null', 'admin', 'root', 'system']);
export const SERVER_ID_MIN_LENGTH = 3;
export const SERVER_ID_MAX_LENGTH = 128;

/** Every rule the id breaks, as sentences; empty when the id is valid. */
export function serverIdProblems(id: string): string[] {
  const problems: string[] = [];
  if (id.length < SERVER_ID_MIN_LENGTH || id.length > SERVER_ID_MAX_LENGTH) {
    problems.push(
      `must be ${SERVER_ID_MIN_LENGTH}-${SERVER_ID_MAX_LENGTH} characters long (got ${id.length})`,
    );
  }
  // The '/' check matters for the message only: '/' is not an allowed character at all, but
  // naming path traversal explicitly tells the operator why '../etc' or 'a//b' was refused.
  if (id.includes('..')) problems.push("must not contain '..'");
  if (id.includes('//')) problems.push("must not contain '//'");
  if (!ALLOWED.test(id)) {
    problems.push('may contain only letters, digits, underscore, hyphen and dot (a-z A-Z 0-9 _ - .)');
  }
  if (RESERVED.has(id.toLowerCase())) {
    problems.push(`'${id}' is reserved (null, admin, root and system are refused, in any case)`);
  }
  return problems;
}

export function generateServerId(now: number = Date.now()): string {
  return `server-${now}-${randomBytes(4).toString('hex')}`;
}

/**
 * The first source that is set wins, and is then validated: falling through to the next source
 * on an invalid value would give a server an identity the operator did not choose.
 */
export function resolveServerIdentity(
  env: Readonly<Record<string, string | undefined>>,
  generate: () => string = generateServerId,
): { identity: ServerIdentity; problems: string[] } {
  for (const source of SERVER_ID_SOURCES) {
    const value = env[source];
    if (value !== undefined && value !== '') {
      const problems = serverIdProblems(value).map(
        (p) => `${source}: server id ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)} ${p}`,
      );
      return { identity: { id: value, source }, problems };
    }
  }
  return { identity: { id: generate(), source: 'generated' }, problems: [] };
}
