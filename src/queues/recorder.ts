import type { LeaseRecorder } from '../cluster/recorder.js';
import type { DeviceRecorder } from '../devices/recorder.js';
import type { LoggedEvent } from '../events/event-log.js';
import type { MessageReceiptStatus, StoreRecord } from '../store/types.js';
import type { MessageFinished } from './messages.js';
import type { NewSyncRecord } from './store-sync.js';

// Every record of the lease core, the devices, the messages and the inbound events, written behind: each call hands
// a record to the store-sync queue and returns at once, so failover never waits on the store, and
// a store outage delays records without losing them. Order per device is the queue's (see
// store-sync.ts). `flush` resolves once every record so far is queued in Redis.

export interface WriteBehindRecorder extends LeaseRecorder, DeviceRecorder {
  /** A message's end (sent or failed), so the store stops counting it as pending. */
  messageFinished(finished: MessageFinished): void;
  /** An event the device's log accepted (its onAppended), kept in the store with its id and sequence. */
  inboundEvent(deviceId: string, event: LoggedEvent): void;
  /** WhatsApp's receipt of a message this wafleet sent (`messageId`: ours), for its deliveredAt / readAt. */
  messageReceipt(deviceId: string, messageId: string, status: MessageReceiptStatus, receivedAt: Date): void;
  /** The last sequence the device's webhook handed on; where delivery resumes after Redis lost its data. */
  webhookProgress(deviceId: string, sequence: number): void;
}

/** The store's record of an accepted event (without `at`, which whoever sends it adds). */
export function inboundEventRecord(deviceId: string, { id, type, data, sequence, at }: LoggedEvent): Omit<Extract<StoreRecord, { kind: 'inbound_event' }>, 'at'> {
  return { kind: 'inbound_event', deviceId, sequence, eventId: id, type, data, createdAt: new Date(at).toISOString() };
}

/** `serverId` names this server in its status records (the store audits who wrote what). */
export function createWriteBehindRecorder(sync: { push(record: NewSyncRecord): void; flush(): Promise<void> }, serverId: string): WriteBehindRecorder {
  return {
    leaseEvent: (entry) => sync.push({ kind: 'lease_event', ...entry }),
    assignment: (deviceId, serverId, epoch) => sync.push({ kind: 'assignment', deviceId, serverId, epoch }),
    serverLog: (entry) => sync.push({ kind: 'server_log', ...entry }),
    deviceStatus: (deviceId, status, epoch, errorMessage) => sync.push({ kind: 'status', deviceId, serverId, status, epoch, errorMessage }),
    connectionEvent: (entry) => sync.push({ kind: 'connection_event', ...entry }),
    messageFinished: (finished) => sync.push({ kind: 'message', ...finished }),
    inboundEvent: (deviceId, event) => sync.push(inboundEventRecord(deviceId, event)),
    messageReceipt: (deviceId, messageId, status, receivedAt) =>
      sync.push({ kind: 'message_receipt', deviceId, messageId, status, receivedAt: receivedAt.toISOString() }),
    webhookProgress: (deviceId, sequence) => sync.push({ kind: 'webhook_progress', deviceId, sequence }),
    snapshots: {
      async save(deviceId, epoch) {
        sync.push({ kind: 'session_snapshot', deviceId, epoch });
        return true;
      },
    },
    flush: () => sync.flush(),
  };
}
