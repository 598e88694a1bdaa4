import type { Inbox } from '../../cluster/inbox.js';
import type { LeaseStore, PlaceResult } from '../../cluster/lease-store.js';
import type { ServerDirectory } from '../../cluster/server-directory.js';
import type { EventLog } from '../../events/event-log.js';
import type { EventStreams } from '../event-stream.js';
import type { DeviceSessions } from '../../devices/session-access.js';
import type { SimulatedWhatsApp } from '../../devices/simulated/inbound.js';
import type { MessageRecords } from '../../queues/messages.js';
import type { Logger } from '../../shared/logger.js';
import type { BackendServer, Device, Store } from '../../store/types.js';
import type { WebhookRegistry } from '../../webhooks/index.js';
import type { Authenticator, Caller } from '../auth.js';
import { HttpError } from '../errors.js';

// What the API handlers need, and the views they answer with (the contract's Device and Server: GET /openapi.json).
// Any server answers any call: the state comes from Redis and the store, and work for a device
// held elsewhere goes to its owner's inbox stream.

export interface ApiDeps {
  store: Store;
  leases: LeaseStore;
  servers: ServerDirectory;
  /** Asks a server to act: the owner of a device (stop, logout), or a server as a whole (drain). */
  inbox: Inbox;
  authenticator: Authenticator;
  log: Logger;
  /** Places a device that should run now (connect). */
  place(deviceId: string): Promise<PlaceResult>;
  /** Link codes and sessions of devices, whichever server holds them. */
  sessions: DeviceSessions;
  /** Each device's inbound events, read from any server. */
  events: Pick<EventLog, 'read' | 'lastSequence' | 'forget'>;
  /** The open Server-Sent Event streams of this server (GET /api/events/stream). */
  eventStreams: EventStreams;
  /** GET <url>/health with a timeout. */
  probeHealth(url: string): Promise<{ healthy: boolean; responseTimeMs: number | null }>;
  messages: MessageRecords;
  /** MESSAGE_RATE_PER_MINUTE: the send rate of a device without its own. */
  defaultRatePerMinute: number;
  /** How long a repeated Idempotency-Key returns the first message (IDEMPOTENCY_WINDOW_HOURS). */
  idempotencyMs: number;
  /** Queues an accepted message on its device's queue (idempotent by message id). */
  enqueueMessage(messageId: string, deviceId: string): Promise<void>;
  /** Device webhooks (src/webhooks/); absent, their routes answer 503 webhooks_unavailable. */
  webhooks?: WebhookRegistry | undefined;
  /** DEVICE_DRIVER=simulated only: the simulated WhatsApp, whose routes exist only then. */
  sim?: SimulatedWhatsApp | undefined;
}

export interface DeviceView {
  id: string;
  userId: string;
  name: string;
  status: string;
  desiredState: 'running' | 'stopped';
  connectionMethod: 'qr' | 'pairing';
  phoneNumber: string | null;
  assignedServerId: string | null;
  lease: { serverId: string; token: number; ttlMs: number } | null;
  lastConnectedAt: string | null;
  createdAt: string;
  updatedAt: string;
}

/** Devices as clients see them: the store's record, with the live lease and status from Redis. */
export async function deviceViews(deps: ApiDeps, devices: readonly Device[]): Promise<DeviceView[]> {
  if (devices.length === 0) return [];
  const readings = await deps.leases.readMany(devices.map((d) => d.id));
  return devices.map((d, i) => {
    const { lease: holder, status: liveStatus } = readings[i]!;
    return {
      id: d.id,
      userId: d.userId,
      name: d.deviceName,
      // The owner's fenced live status is fresher than the store's, which is written behind.
      status: holder && liveStatus ? liveStatus.status : d.status,
      desiredState: d.desiredState,
      connectionMethod: d.connectionMethod,
      phoneNumber: d.phoneNumber,
      assignedServerId: holder?.serverId ?? d.assignedServerId,
      lease: holder && holder.ttlMs > 0 ? { serverId: holder.serverId, token: holder.token, ttlMs: holder.ttlMs } : null,
      lastConnectedAt: d.lastConnectedAt?.toISOString() ?? null,
      createdAt: d.createdAt.toISOString(),
      updatedAt: d.updatedAt.toISOString(),
    };
  });
}

export async function deviceView(deps: ApiDeps, device: Device): Promise<DeviceView> {
  return (await deviceViews(deps, [device]))[0]!;
}

/** The device, if it exists and the caller may act on it. */
export async function loadDevice(deps: ApiDeps, caller: Caller, deviceId: string): Promise<Device> {
  const device = await deps.store.getDevice(deviceId);
  if (!device) throw new HttpError(404, 'device_not_found', `No device ${deviceId}`);
  if (caller.kind === 'user' && caller.userId !== device.userId) {
    throw new HttpError(403, 'forbidden', 'This API key cannot act on this device');
  }
  return device;
}

/** Tells the device's owner, if any, to stop it (or log it out); nothing is placed afterwards. */
export async function tellOwner(deps: ApiDeps, deviceId: string, type: 'stop' | 'logout'): Promise<string | null> {
  const holder = await deps.leases.read(deviceId);
  if (!holder) return null;
  await deps.inbox.send(holder.serverId, { type, deviceId });
  return holder.serverId;
}

export interface ServerView {
  id: string;
  name: string;
  url: string;
  type: string;
  region: string;
  maxCapacity: number;
  priority: number;
  load: number;
  live: boolean;
  healthy: boolean;
  draining: boolean;
  leases: number;
  lastHeartbeatAt: string | null;
  responseTimeMs: number | null;
}

/** Servers with their live state: a server key in Redis means live; its owned set counts leases. */
export async function serverViews(deps: ApiDeps, servers: readonly BackendServer[]): Promise<ServerView[]> {
  if (servers.length === 0) return [];
  const states = await deps.servers.read(servers.map((s) => s.id));
  return servers.map((s, i) => {
    const { advert, leases } = states[i]!;
    const live = advert !== null;
    return {
      id: s.id,
      name: s.serverName,
      url: s.serverUrl,
      type: s.serverType,
      region: s.region,
      maxCapacity: s.maxCapacity,
      priority: s.priority,
      load: live ? leases : s.currentLoad,
      live,
      healthy: live && s.isHealthy,
      draining: advert ? advert.draining : s.draining,
      leases,
      lastHeartbeatAt: advert ? new Date(advert.heartbeatAt).toISOString() : (s.lastHealthCheck?.toISOString() ?? null),
      responseTimeMs: s.responseTime ?? advert?.responseTimeMs ?? null,
    };
  });
}
