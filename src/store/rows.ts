import type { ApiKey, BackendServer, Device, DeviceStatus, LeaseEvent, LeaseEventType, ServerType, SessionSnapshot, StoredEvent, StoredMessage, StoredWebhook } from './types.js';

// Rows arrive in two dialects: node-postgres/PGlite (timestamps as Date, bigint as string or
// bigint) and PostgREST JSON (timestamps as ISO strings, bigint as number). One mapper reads both.

export type Row = Record<string, unknown>;

export function toNumber(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint' || typeof value === 'string') {
    const n = Number(value);
    if (Number.isFinite(n)) return n;
  }
  throw new TypeError(`expected a number from the store, got ${typeof value}`);
}

export function toNullableNumber(value: unknown): number | null {
  return value === null || value === undefined ? null : toNumber(value);
}

export function toDate(value: unknown): Date {
  const date = value instanceof Date ? value : typeof value === 'string' ? new Date(value) : null;
  if (!date || Number.isNaN(date.getTime())) throw new TypeError('expected a timestamp from the store');
  return date;
}

export function toNullableDate(value: unknown): Date | null {
  return value === null || value === undefined ? null : toDate(value);
}

function toNullableString(value: unknown): string | null {
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- a SQL row's scalar (text, number, bigint as text)
  return value === null || value === undefined ? null : String(value);
}

function toObject(value: unknown): Record<string, unknown> {
  if (typeof value === 'string') return JSON.parse(value) as Record<string, unknown>;
  return value && typeof value === 'object' ? (value as Record<string, unknown>) : {};
}

export function mapServer(row: Row): BackendServer {
  return {
    id: String(row.id),
    serverName: String(row.server_name),
    serverUrl: String(row.server_url),
    serverType: row.server_type as ServerType,
    region: String(row.region),
    maxCapacity: toNumber(row.max_capacity),
    currentLoad: toNumber(row.current_load),
    isActive: Boolean(row.is_active),
    isHealthy: Boolean(row.is_healthy),
    priority: toNumber(row.priority),
    lastHealthCheck: toNullableDate(row.last_health_check),
    healthCheckFailures: toNumber(row.health_check_failures),
    responseTime: toNullableNumber(row.response_time),
    metadata: toObject(row.metadata),
    draining: Boolean(row.draining),
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
  };
}

export function mapDevice(row: Row): Device {
  return {
    id: String(row.id),
    userId: String(row.user_id),
    deviceName: String(row.device_name),
    phoneNumber: toNullableString(row.phone_number),
    status: row.status as DeviceStatus,
    desiredState: row.desired_state as Device['desiredState'],
    connectionMethod: row.connection_method as Device['connectionMethod'],
    phoneForPairing: toNullableString(row.phone_for_pairing),
    assignedServerId: toNullableString(row.assigned_server_id),
    leaseEpoch: toNumber(row.lease_epoch),
    webhookUrl: toNullableString(row.webhook_url),
    errorMessage: toNullableString(row.error_message),
    lastConnectedAt: toNullableDate(row.last_connected_at),
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
  };
}

export function mapSession(row: Row): SessionSnapshot {
  return {
    deviceId: String(row.device_id),
    creds: typeof row.creds === 'string' ? JSON.parse(row.creds) : row.creds,
    keys: toObject(row.keys) as SessionSnapshot['keys'],
    epoch: toNumber(row.epoch),
    cleared: row.cleared === true,
    updatedAt: toDate(row.updated_at),
  };
}

export function mapMessage(row: Row): StoredMessage {
  return {
    id: String(row.id),
    seq: toNumber(row.seq),
    deviceId: String(row.device_id),
    idempotencyKey: toNullableString(row.idempotency_key),
    to: String(row.recipient),
    type: row.type as StoredMessage['type'],
    text: toNullableString(row.body_text),
    mediaUrl: toNullableString(row.media_url),
    caption: toNullableString(row.caption),
    fileName: toNullableString(row.file_name),
    status: row.status as StoredMessage['status'],
    acceptedAt: toDate(row.accepted_at),
    finishedAt: toNullableDate(row.finished_at),
    waMessageId: toNullableString(row.wa_message_id),
    error: toNullableString(row.error),
    deliveredAt: toNullableDate(row.delivered_at),
    readAt: toNullableDate(row.read_at),
  };
}

export function mapEvent(row: Row): StoredEvent {
  return {
    deviceId: String(row.device_id),
    sequence: toNumber(row.sequence),
    id: String(row.id),
    type: String(row.type),
    // jsonb: parsed by node-postgres and PostgREST; PGlite too, but a string is read as JSON.
    data: typeof row.data === 'string' ? JSON.parse(row.data) : (row.data ?? null),
    createdAt: toDate(row.created_at),
  };
}

export function mapApiKey(row: Row): ApiKey {
  return { id: String(row.id), userId: String(row.user_id), name: toNullableString(row.name), createdAt: toDate(row.created_at) };
}

export function mapLeaseEvent(row: Row): LeaseEvent {
  return {
    id: toNumber(row.id),
    deviceId: String(row.device_id),
    serverId: toNullableString(row.server_id),
    eventType: row.event_type as LeaseEventType,
    epoch: toNumber(row.epoch),
    details: toObject(row.details),
    createdAt: toDate(row.created_at),
  };
}

export function asRows(result: unknown): Row[] {
  if (!Array.isArray(result)) throw new TypeError('expected rows from the store');
  return result as Row[];
}

export function mapWebhook(row: Row): StoredWebhook {
  const events = row.events;
  return {
    deviceId: String(row.device_id),
    url: String(row.url),
    events: Array.isArray(events) ? events.map(String) : null,
    secretCiphertext: String(row.secret_ciphertext),
    updatedAt: toDate(row.updated_at),
  };
}
