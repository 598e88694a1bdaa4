import { BufferJSON, proto, type AuthenticationCreds, type SignalDataTypeMap } from '@whiskeysockets/baileys';

// How a Baileys auth state is written down, in Redis and in the store's snapshot: Baileys' own
// BufferJSON (buffers become {type:'Buffer', data:<base64>}), the format every Baileys auth store
// uses, so a session can move between wafleet and Baileys' own tools.

/** Every Signal key type Baileys 7 keeps. The check below fails to compile if Baileys adds one. */
export const SIGNAL_KEY_TYPES = [
  'pre-key',
  'session',
  'sender-key',
  'sender-key-memory',
  'app-state-sync-key',
  'app-state-sync-version',
  'lid-mapping',
  'device-list',
  'tctoken',
  'identity-key',
] as const satisfies ReadonlyArray<keyof SignalDataTypeMap>;

export type SignalKeyType = (typeof SIGNAL_KEY_TYPES)[number];
type Unlisted = Exclude<keyof SignalDataTypeMap, SignalKeyType>;
const everyTypeListed: [Unlisted] extends [never] ? true : never = true;
void everyTypeListed;

/** The hash field of the creds; key fields are `<type>:<id>` (no type contains a colon). */
export const CREDS_FIELD = 'creds';

export const keyField = (type: SignalKeyType, id: string): string => `${type}:${id}`;

/**
 * The type and id of a key field, or null for `creds`. A type this list does not know yet (a
 * newer Baileys) is kept all the same: dropping it from a snapshot would lose part of a session.
 */
export function parseKeyField(field: string): { type: SignalKeyType; id: string } | null {
  const at = field.indexOf(':');
  if (at <= 0) return null;
  return { type: field.slice(0, at) as SignalKeyType, id: field.slice(at + 1) };
}

export const encodeValue = (value: unknown): string => JSON.stringify(value, BufferJSON.replacer);

export const decodeCreds = (raw: string): AuthenticationCreds => JSON.parse(raw, BufferJSON.reviver) as AuthenticationCreds;

export function decodeKey<T extends SignalKeyType>(type: T, raw: string): SignalDataTypeMap[T] {
  const value: unknown = JSON.parse(raw, BufferJSON.reviver);
  // Baileys reads app-state-sync keys as protobuf messages (it calls their methods), not plain objects.
  if (type === 'app-state-sync-key') {
    return proto.Message.AppStateSyncKeyData.fromObject(value as Record<string, unknown>) as unknown as SignalDataTypeMap[T];
  }
  return value as SignalDataTypeMap[T];
}

/**
 * A session as the store keeps it: JSON values in BufferJSON's form, so the store never needs to
 * understand them. `JSON.parse` without the reviver keeps that form.
 */
export interface PlainSession {
  creds: unknown;
  keys: Record<string, Record<string, unknown>>;
}

/** The hash's fields (as HGETALL returns them) as a store snapshot. */
export function hashToSession(hash: Record<string, string>): PlainSession | null {
  const rawCreds = hash[CREDS_FIELD];
  if (rawCreds === undefined) return null;
  const keys: Record<string, Record<string, unknown>> = {};
  for (const [field, raw] of Object.entries(hash)) {
    const parsed = parseKeyField(field);
    if (!parsed) continue;
    (keys[parsed.type] ??= {})[parsed.id] = JSON.parse(raw) as unknown;
  }
  return { creds: JSON.parse(rawCreds) as unknown, keys };
}

/** A store snapshot as hash field/value pairs, ready for HSET. */
export function sessionToPairs(session: PlainSession): string[] {
  const pairs = [CREDS_FIELD, JSON.stringify(session.creds)];
  for (const [type, entries] of Object.entries(session.keys)) {
    if (type.includes(':')) continue;
    for (const [id, value] of Object.entries(entries)) {
      if (value !== null && value !== undefined) pairs.push(keyField(type as SignalKeyType, id), JSON.stringify(value));
    }
  }
  return pairs;
}

/**
 * Whether the creds belong to a linked device: WhatsApp accepted a QR scan or pairing code
 * (`account` is set on pair-success). `me` alone is not enough: asking for a pairing code sets it
 * before any phone confirmed anything.
 */
export const isLinked = (creds: AuthenticationCreds): boolean => Boolean(creds.me?.id && (creds.account || creds.registered));
