import type { LeaseRecorder } from '../cluster/recorder.js';
import type { ConnectionLogEntry, DeviceStatus } from '../store/types.js';
import type { SessionSnapshotWriter } from './auth-state/auth-state.js';

// What the device layer records in the durable store, on top of the lease core's lease events:
// statuses, connection events and session snapshots. The write-behind (queues/recorder.ts)
// implements it.

export interface DeviceRecorder extends Pick<LeaseRecorder, 'leaseEvent'> {
  /** Fenced in SQL like the assignment; applied after the device's earlier records. */
  deviceStatus(deviceId: string, status: DeviceStatus, epoch: number, errorMessage: string | null): void;
  /** A device's connection event (device_connection_logs); after the device's earlier records. */
  connectionEvent(entry: ConnectionLogEntry): void;
  /** The device's session snapshot, written behind like the rest (see SessionSnapshotWriter). */
  readonly snapshots: SessionSnapshotWriter;
}
