import type { LeaseRecorder } from '../cluster/recorder.js';
import type { DeviceRecorder } from '../devices/recorder.js';
import type { MessageFinished } from './messages.js';
import type { NewSyncRecord } from './store-sync.js';

// Every record of the lease core, the devices and the messages, written behind: each call hands
// a record to the store-sync queue and returns at once, so failover never waits on the store, and
// a store outage delays records without losing them. Order per device is the queue's (see
// store-sync.ts). `flush` resolves once every record so far is queued in Redis.

export interface WriteBehindRecorder extends LeaseRecorder, DeviceRecorder {
  /** A message's end (sent or failed), so the store stops counting it as pending. */
  messageFinished(finished: MessageFinished): void;
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
    snapshots: {
      async save(deviceId, epoch) {
        sync.push({ kind: 'session_snapshot', deviceId, epoch });
        return true;
      },
    },
    flush: () => sync.flush(),
  };
}
