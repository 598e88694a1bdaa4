import type { RedisClient as Redis } from '../shared/redis.js';
import { holderId, leaseValue } from '../cluster/lease-value.js';
import type { ClusterKeys } from '../cluster/keys.js';
import type { LeaseGuard } from '../cluster/lease-guard.js';
import type { LeaseStore } from '../cluster/lease-store.js';
import type { Config } from '../config/index.js';
import { createEventLog, type EventLog, type EventLogMetrics, type EventLogOptions } from '../events/event-log.js';
import { createGuardedHttpClient } from '../shared/guarded-http.js';
import type { Logger } from '../shared/logger.js';
import type { Store } from '../store/types.js';
import { createAuthStateStore } from './auth-state/auth-state.js';
import { createBaileysConnector } from './baileys/connector.js';
import { createCodePublisher } from './codes.js';
import type { DeviceConnector } from './connector.js';
import { createMediaDownloader } from './media.js';
import type { DeviceRecorder } from './recorder.js';
import { createDeviceRetirer } from './retire.js';
import { createDeviceRuntime, type DeviceRuntime } from './runtime.js';
import { createSimulatedConnector } from './simulated/connector.js';
import { createSimulatedWhatsApp, type SimulatedWhatsApp } from './simulated/inbound.js';

// Wires the device layer from the server's parts: the connector DEVICE_DRIVER names, the shared
// auth state, the code publisher, the guarded media download, and the runtime with its sinks
// into Redis and the store. The
// composition root (main.ts) calls it; tests call it too, so they run the same wiring.

export interface DevicesOptions {
  settings: Config['devices'];
  /** The rules of the guarded client that downloads media (src/shared/guarded-http.ts). */
  outboundHttp: Config['outboundHttp'];
  /** Each device's inbound event log (src/events/): its caps, and the counter of refused appends. */
  events: Config['events'];
  metrics: EventLogMetrics;
  redis: Redis;
  /** A connection the simulated connector may put into subscriber mode. */
  subscriber: Redis;
  keys: ClusterKeys;
  store: Store;
  leases: LeaseStore;
  guard: LeaseGuard;
  recorder: DeviceRecorder;
  serverId: string;
  /** This process's boot id, named in the lease values it holds (absent: the bare server id). */
  bootId?: string;
  log: Logger;
  /** Told of each event the log accepted (see EventLogOptions.onAppended). */
  onEventAppended?: EventLogOptions['onAppended'];
  /** A connector made elsewhere (tests: Baileys with a socket hook); default: the driver's. */
  connector?: DeviceConnector;
}

export interface Devices {
  connector: DeviceConnector;
  runtime: DeviceRuntime;
  /** The devices' event log the runtime appends to (any server reads it). */
  events: EventLog;
  /** With the simulated driver only: makes the simulated WhatsApp send devices messages and receipts. */
  sim: SimulatedWhatsApp | undefined;
}

export async function createDevices(options: DevicesOptions): Promise<Devices> {
  const { settings, redis, subscriber, keys, store, leases, guard, recorder, serverId, bootId, log } = options;
  const holder = holderId(serverId, bootId);
  const eventLog = createEventLog({ redis, keys, metrics: options.metrics, ...options.events, ...(options.onEventAppended ? { onAppended: options.onEventAppended } : {}) });
  const connector =
    options.connector ??
    (settings.driver === 'simulated'
      ? await createSimulatedConnector({ redis, subscriber, keys, log: log.child({ module: 'simulated-whatsapp' }), ...settings.simulated, ...(bootId ? { bootId } : {}) })
      : createBaileysConnector({ log: log.child({ module: 'baileys' }), ...settings.baileys }));
  const runtime = createDeviceRuntime({
    connector,
    guard,
    serverId,
    ...(bootId ? { bootId } : {}),
    log: log.child({ module: 'devices' }),
    policy: settings.reconnect,
    authStates: createAuthStateStore({ redis, keys, store, snapshots: recorder.snapshots, log: log.child({ module: 'auth-state' }), snapshotDelayMs: settings.sessionSnapshotDelayMs }),
    codes: createCodePublisher({ redis, keys }),
    async recordStatus(deviceId, token, status, detail) {
      const written = await leases.setStatus(deviceId, holder, token, status, detail);
      if (written) recorder.deviceStatus(deviceId, status, token, typeof detail?.reason === 'string' ? detail.reason : null);
      return written;
    },
    recordEvent: (deviceId, token, eventType, details) => recorder.connectionEvent({ deviceId, serverId, eventType, details: { token, ...details } }),
    // Only a device that is not linked yet needs its record: the failover of a linked device
    // never waits on the store.
    async linkMethod(deviceId) {
      const device = await store.getDevice(deviceId);
      return device ? { method: device.connectionMethod, phone: device.phoneForPairing } : null;
    },
    async leaseHolder(deviceId) {
      const lease = await leases.read(deviceId);
      return lease && { serverId: lease.serverId, ...(lease.bootId ? { bootId: lease.bootId } : {}), token: lease.token };
    },
    retire: createDeviceRetirer({ store, leases, guard, recorder, serverId, holder, log: log.child({ module: 'devices' }) }),
    downloadMedia: createMediaDownloader(createGuardedHttpClient(options.outboundHttp)),
    // The key queues/messages.ts sets when a send begins.
    sentMessageId: (deviceId, waMessageId) => redis.get(keys.sentMessage(deviceId, waMessageId)),
    appendEvent: async (deviceId, token, event) => (await eventLog.append(deviceId, leaseValue(holder, token), event)).outcome,
  });
  const sim = settings.driver === 'simulated' ? createSimulatedWhatsApp({ redis, keys }) : undefined;
  return { connector, runtime, events: eventLog, sim };
}
