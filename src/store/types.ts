// The durable store's contract. Every adapter (pglite, postgres, supabase) implements it by
// calling the same SQL functions from migrations/, so atomic logic is written once, in SQL.

export const SERVER_TYPES = ['railway', 'vps', 'cloud', 'dedicated'] as const;
export type ServerType = (typeof SERVER_TYPES)[number];

export const DEVICE_STATUSES = [
  'disconnected',
  'connecting',
  'qr',
  'pairing',
  'connected',
  'conflict',
  'logged_out',
  'error',
] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

export const LEASE_EVENT_TYPES = ['claim', 'release', 'expire', 'drain', 'rebalance', 'lost'] as const;
export type LeaseEventType = (typeof LEASE_EVENT_TYPES)[number];

export interface ServerRegistration {
  id: string;
  serverName: string;
  serverUrl: string;
  serverType: ServerType;
  region: string;
  maxCapacity: number;
  priority: number;
  description?: string | null;
  metadata?: Record<string, unknown>;
}

export interface BackendServer {
  id: string;
  serverName: string;
  serverUrl: string;
  serverType: ServerType;
  region: string;
  maxCapacity: number;
  currentLoad: number;
  isActive: boolean;
  isHealthy: boolean;
  priority: number;
  lastHealthCheck: Date | null;
  healthCheckFailures: number;
  responseTime: number | null;
  metadata: Record<string, unknown>;
  draining: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface NewDevice {
  userId: string;
  deviceName: string;
  connectionMethod: 'qr' | 'pairing';
  phoneForPairing?: string | null;
  webhookUrl?: string | null;
}

export interface Device {
  id: string;
  userId: string;
  deviceName: string;
  phoneNumber: string | null;
  status: DeviceStatus;
  desiredState: 'running' | 'stopped';
  connectionMethod: 'qr' | 'pairing';
  phoneForPairing: string | null;
  assignedServerId: string | null;
  leaseEpoch: number;
  webhookUrl: string | null;
  errorMessage: string | null;
  lastConnectedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface ServerLogEntry {
  serverId: string;
  level: 'debug' | 'info' | 'warn' | 'error';
  event: string;
  message: string;
  details?: Record<string, unknown>;
}

export interface LeaseEventEntry {
  deviceId: string;
  serverId: string | null;
  eventType: LeaseEventType;
  epoch: number;
  details?: Record<string, unknown>;
}

export interface ConnectionLogEntry {
  deviceId: string;
  serverId: string | null;
  eventType: string;
  details?: Record<string, unknown>;
}

/**
 * One write-behind record (see migrations/005_write_behind.sql). `at` is when it happened (ISO
 * time); `id` makes applying an appended record twice a no-op.
 */
export type StoreRecord =
  | ({ kind: 'lease_event'; id: string; at: string } & LeaseEventEntry)
  | ({ kind: 'connection_event'; id: string; at: string } & ConnectionLogEntry)
  | ({ kind: 'server_log'; id: string; at: string } & ServerLogEntry)
  | { kind: 'assignment'; at: string; deviceId: string; serverId: string | null; epoch: number }
  | { kind: 'status'; at: string; deviceId: string; serverId: string; status: DeviceStatus; epoch: number; errorMessage: string | null }
  | { kind: 'message'; at: string; deviceId: string; messageId: string; status: 'sent' | 'failed'; waMessageId: string | null; error: string | null }
  /** An event the device's log accepted: (deviceId, sequence) is its identity in the store. */
  | { kind: 'inbound_event'; at: string; deviceId: string; sequence: number; eventId: string; type: string; data: unknown; createdAt: string }
  /** WhatsApp's receipt of a sent message; the first time of each (delivered, read) stays. */
  | { kind: 'message_receipt'; at: string; deviceId: string; messageId: string; status: MessageReceiptStatus; receivedAt: string }
  /** The last sequence the device's webhook handed on; only goes up. */
  | { kind: 'webhook_progress'; at: string; deviceId: string; sequence: number };

export const MESSAGE_RECEIPT_STATUSES = ['delivered', 'read', 'played'] as const;
export type MessageReceiptStatus = (typeof MESSAGE_RECEIPT_STATUSES)[number];

export interface ApplyRecordsReport {
  applied: number;
  /** Appended records already in the store (the batch ran before). */
  duplicate: number;
  /** Assignments and status refused: the device has a newer epoch, or this one from another server. */
  fenced: number;
  /** Records the database refused (a device deleted meanwhile, a value out of range). */
  rejected: number;
  errors: Array<{ index: number; message: string }>;
}

/**
 * A device's Baileys auth state as stored: `creds` and `keys` are JSON values as produced by
 * `JSON.parse(JSON.stringify(x, BufferJSON.replacer))`; the store never looks inside.
 */
export interface SessionSnapshot {
  deviceId: string;
  creds: unknown;
  /** Signal keys by type, then id. */
  keys: Record<string, Record<string, unknown>>;
  epoch: number;
  /** True once the session was cleared (logged out): the row is a tombstone holding the epoch. */
  cleared: boolean;
  updatedAt: Date;
}

export interface ApiKey {
  id: string;
  userId: string;
  name: string | null;
  createdAt: Date;
}

/** Configuration fields of a server an admin may set; undefined leaves a field as it is. */
export interface ServerConfiguration {
  serverName?: string;
  serverUrl?: string;
  serverType?: ServerType;
  region?: string;
  maxCapacity?: number;
  priority?: number;
}

export interface LeaseEvent {
  id: number;
  deviceId: string;
  serverId: string | null;
  eventType: LeaseEventType;
  epoch: number;
  details: Record<string, unknown>;
  createdAt: Date;
}

export const OUTBOUND_MESSAGE_TYPES = ['text', 'image', 'video', 'document'] as const;

/** A message to accept (see migrations/007_outbound_messages.sql). */
export interface NewOutboundMessage {
  /** Chosen by the caller, so the Redis record and job can carry it too. */
  id: string;
  deviceId: string;
  /** Null: none; otherwise a repeat within `idempotencyMs` returns the first message. */
  idempotencyKey: string | null;
  idempotencyMs: number;
  to: string;
  type: (typeof OUTBOUND_MESSAGE_TYPES)[number];
  text?: string | undefined;
  mediaUrl?: string | undefined;
  caption?: string | undefined;
  fileName?: string | undefined;
}

export interface AcceptedMessage {
  /** The new message's id, or the first one's for a repeated idempotency key. */
  id: string;
  created: boolean;
  status: StoredMessage['status'];
  acceptedAt: Date;
}

/** A message as the store keeps it: pending (`queued`) until its end arrives written behind. */
export interface StoredMessage {
  id: string;
  /** Accept order (store-wide; per device it is the send order). */
  seq: number;
  deviceId: string;
  idempotencyKey: string | null;
  to: string;
  type: (typeof OUTBOUND_MESSAGE_TYPES)[number];
  text: string | null;
  mediaUrl: string | null;
  caption: string | null;
  fileName: string | null;
  status: 'queued' | 'sent' | 'failed';
  acceptedAt: Date;
  finishedAt: Date | null;
  waMessageId: string | null;
  error: string | null;
  /** The first delivered receipt's time (or the first read one's, when that came first). */
  deliveredAt: Date | null;
  /** The first read (or played) receipt's time. */
  readAt: Date | null;
}

/** An inbound event as the store keeps it (see migrations/009_inbound_events.sql). */
export interface StoredEvent {
  deviceId: string;
  sequence: number;
  id: string;
  type: string;
  data: unknown;
  /** When the device's event log accepted it. */
  createdAt: Date;
}

/** Where a device's events stand in the store, for the restore after Redis lost its data. */
export interface EventCursor {
  deviceId: string;
  /** The last stored sequence (0: none). */
  lastSequence: number;
  /** The last sequence the webhook handed on (0: none). */
  webhookSequence: number;
}

/** A device's own webhook (see migrations/010_device_webhooks.sql); the secret only encrypted. */
export interface StoredWebhook {
  deviceId: string;
  url: string;
  /** Null: every event type. */
  events: string[] | null;
  secretCiphertext: string;
  updatedAt: Date;
}

export interface MigrationReport {
  applied: string[];
  alreadyApplied: string[];
}

export interface Store {
  readonly kind: 'pglite' | 'postgres' | 'supabase';
  /** Applies pending migrations under a PostgreSQL advisory lock, so concurrent starts never race. */
  migrate(): Promise<MigrationReport>;
  registerServer(server: ServerRegistration): Promise<BackendServer>;
  /** Heartbeat into the record; the lease core calls it at most every few seconds. */
  recordServerHealth(serverId: string, currentLoad: number, responseTimeMs?: number | null): Promise<void>;
  markServerInactive(serverId: string): Promise<void>;
  getServer(serverId: string): Promise<BackendServer | null>;
  listServers(): Promise<BackendServer[]>;
  /** The seed's order: priority, then load/capacity, then response time; active, healthy, fresh only. */
  getBestAvailableServer(): Promise<string | null>;
  createDevice(device: NewDevice): Promise<Device>;
  getDevice(deviceId: string): Promise<Device | null>;
  /**
   * Fenced: false when the stored lease_epoch is higher than `epoch`, or equal and recorded by
   * another server.
   */
  recordAssignment(deviceId: string, serverId: string | null, epoch: number): Promise<boolean>;
  /** Fenced on lease_epoch alone (no sender to compare): false when the store has a newer epoch for the device. */
  updateDeviceStatus(deviceId: string, status: DeviceStatus, epoch: number, errorMessage?: string | null): Promise<boolean>;
  /** The wanted state; reconcile places every `running` device that runs nowhere. Null: no such device. */
  setDesiredState(deviceId: string, desiredState: 'running' | 'stopped'): Promise<Device | null>;
  /** Devices whose desired state is `running`, by id, `limit` after `after` (null: from the start). */
  listWantedDevices(after: string | null, limit: number): Promise<string[]>;
  /** Devices with a lease epoch above 0, by id, to re-seed Redis's fences after it lost its data. */
  listLeaseEpochs(after: string | null, limit: number): Promise<Array<{ deviceId: string; leaseEpoch: number }>>;
  /**
   * A new Redis incarnation epoch, higher than every one before (from any server), for the re-seed
   * after Redis lost its data: tokens handed out afterwards start above `epoch * 2^32`, so no token
   * of an earlier incarnation is ever handed out again. Each call takes one; recorded with the
   * Redis run id (null: unknown) and the asking server.
   */
  nextTokenEpoch(redisRunId: string | null, serverId: string): Promise<number>;
  /** Fenced: false when the stored snapshot has a higher epoch, or the device does not exist. */
  saveSession(deviceId: string, creds: unknown, keys: Record<string, Record<string, unknown>>, epoch: number): Promise<boolean>;
  getSession(deviceId: string): Promise<SessionSnapshot | null>;
  /** Fenced like saveSession; leaves a tombstone so a stale save cannot revive the session. */
  clearSession(deviceId: string, epoch: number): Promise<boolean>;
  /** Stores only the hash; the key itself never reaches the store. */
  createApiKey(userId: string, name: string | null, keyHash: string): Promise<ApiKey>;
  /** The live (not revoked) key with this hash, or null. */
  findApiKey(keyHash: string): Promise<ApiKey | null>;
  revokeApiKey(id: string): Promise<boolean>;
  /** One user's devices, or everyone's for null, oldest first. */
  listDevices(userId: string | null, limit: number): Promise<Device[]>;
  deleteDevice(deviceId: string): Promise<boolean>;
  /** Creates the server (inactive) or updates the given fields. */
  configureServer(serverId: string, configuration: ServerConfiguration): Promise<BackendServer>;
  deleteServer(serverId: string): Promise<boolean>;
  recordHealthCheck(serverId: string, healthy: boolean, responseTimeMs: number | null): Promise<BackendServer | null>;
  deviceStatusCounts(): Promise<Partial<Record<DeviceStatus, number>>>;
  recentLeaseEvents(limit: number): Promise<LeaseEvent[]>;
  /** Records an accepted message once per idempotency key (see NewOutboundMessage). */
  acceptMessage(message: NewOutboundMessage): Promise<AcceptedMessage>;
  getMessage(messageId: string): Promise<StoredMessage | null>;
  /** Pending messages by device, then accept order: `limit` after `after` (null: from the start). */
  listPendingMessages(after: { deviceId: string; seq: number } | null, limit: number): Promise<StoredMessage[]>;
  /**
   * Up to `limit` of the device's events above `afterSequence`, in sequence order; with `since`,
   * only those created at or after it.
   */
  listEvents(deviceId: string, afterSequence: number, limit: number, since?: Date): Promise<StoredEvent[]>;
  /**
   * For each device, up to `perDevice` of its events created at or after `since`, in sequence
   * order; by device id, then sequence. One call for many devices (the restore after Redis lost
   * its data); a device with `perDevice` of them may have more (page on with listEvents).
   */
  listRecentEvents(deviceIds: readonly string[], since: Date, perDevice: number): Promise<StoredEvent[]>;
  /** Devices with stored events or a webhook cursor, by id, `limit` after `after` (null: from the start). */
  listEventCursors(after: string | null, limit: number): Promise<EventCursor[]>;
  /**
   * Deletes up to `limit` events created before `olderThan`, oldest first, keeping each device's
   * newest; resolves with how many went. Call again while it returns `limit`.
   */
  pruneEvents(olderThan: Date, limit: number): Promise<number>;
  /** Registers or replaces the device's webhook (and clears its older webhookUrl); null: no such device. */
  putWebhook(webhook: Omit<StoredWebhook, 'updatedAt'>): Promise<StoredWebhook | null>;
  getWebhook(deviceId: string): Promise<StoredWebhook | null>;
  /** Removes the device's webhook and its older webhookUrl; false when it had neither. */
  deleteWebhook(deviceId: string): Promise<boolean>;
  /** Applies write-behind records in order, in one round trip; never fails on a single record. */
  applyRecords(records: StoreRecord[]): Promise<ApplyRecordsReport>;
  appendServerLog(entry: ServerLogEntry): Promise<void>;
  appendLeaseEvent(entry: LeaseEventEntry): Promise<void>;
  appendConnectionLog(entry: ConnectionLogEntry): Promise<void>;
  /** Cheap round trip for health checks. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** How to reach the store; built by the config module from STORE and friends. */
export type StoreOptions =
  | {
      kind: 'pglite';
      /** PGlite data directory, or `memory://` for an in-memory database. */
      dataDir: string;
      /** The embedded store host serves PGlite here over the PostgreSQL wire protocol. */
      host: string;
      port: number;
      poolMax: number;
      /**
       * `auto`: host the store in this process when nobody answers (a lone `npm run server`), and
       * take over when the host dies. `client`: only connect, waiting for the host (pm2 runs a
       * dedicated host, wafleet-store, which must not lose the race to a server).
       */
      hostMode: 'auto' | 'client';
    }
  | { kind: 'postgres'; databaseUrl: string; poolMax: number }
  | {
      kind: 'supabase';
      url: string;
      serviceRoleKey: string;
      /** Supabase's direct connection; only migrations need it. */
      databaseUrl?: string | undefined;
    };
