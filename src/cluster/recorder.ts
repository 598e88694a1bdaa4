import type { LeaseEventEntry, ServerLogEntry } from '../store/types.js';

// The lease core's record in the durable store: what it hands over to be written. The write-behind
// (queues/recorder.ts) implements it, so failover never waits on the store.

export interface LeaseRecorder {
  leaseEvent(entry: LeaseEventEntry): void;
  /** Fenced in SQL: refused when the store already has a higher epoch for the device. */
  assignment(deviceId: string, serverId: string | null, epoch: number): void;
  serverLog(entry: ServerLogEntry): void;
  /** Resolves when every record so far is safely handed over, e.g. before exiting. */
  flush(): Promise<void>;
}
