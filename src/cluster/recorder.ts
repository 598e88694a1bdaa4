import type { SessionSnapshotWriter } from '../devices/auth-state/auth-state.js';
import type { MessageFinished } from '../queues/messages.js';
import type { NewSyncRecord } from '../queues/store-sync.js';
import type { ConnectionLogEntry, DeviceStatus, LeaseEventEntry, ServerLogEntry } from '../store/types.js';

// The lease core's record in the durable store, written behind: each call hands a record to the
// store-sync queue and returns at once, so failover never waits on the store, and a store outage
// delays records without losing them. Order per device is the queue's (see store-sync.ts).

export interface LeaseRecorder {
  leaseEvent(entry: LeaseEventEntry): void;
  /** Fenced in SQL: refused when the store already has a higher epoch for the device. */
  assignment(deviceId: string, serverId: string | null, epoch: number): void;
  serverLog(entry: ServerLogEntry): void;
  /** Fenced in SQL like assignment; applied after the device's earlier records. */
  deviceStatus(deviceId: string, status: DeviceStatus, epoch: number, errorMessage: string | null): void;
  /** A device's connection event (device_connection_logs); after the device's earlier records. */
  connectionEvent(entry: ConnectionLogEntry): void;
  /** A message's end (sent or failed), so the store stops counting it as pending. */
  messageFinished(finished: MessageFinished): void;
  /** The device's session snapshot, written behind like the rest (see SessionSnapshotWriter). */
  readonly snapshots: SessionSnapshotWriter;
  /** Resolves when every record so far is safely queued (in Redis), e.g. before exiting. */
  flush(): Promise<void>;
}

/** `serverId` names this server in its status records (the store audits who wrote what). */
export function createWriteBehindRecorder(sync: { push(record: NewSyncRecord): void; flush(): Promise<void> }, serverId: string): LeaseRecorder {
  return {
    leaseEvent: (entry) => sync.push({ kind: 'lease_event', ...entry }),
    assignment: (deviceId, serverId, epoch) => sync.push({ kind: 'assignment', deviceId, serverId, epoch }),
    serverLog: (entry) => sync.push({ kind: 'server_log', ...entry }),
    deviceStatus: (deviceId, status, epoch, errorMessage) => sync.push({ kind: 'status', deviceId, serverId, status, epoch, errorMessage }),
    connectionEvent: (entry) => sync.push({ kind: 'connection_event', ...entry }),
    messageFinished: (finished) => sync.push({ kind: 'message', ...finished }),
    snapshots: {
      async save(deviceId, epoch) {
        sync.push({ kind: 'session_snapshot', deviceId, epoch });
        return true;
      },
    },
    flush: () => sync.flush(),
  };
}
