import type { Logger } from '../shared/logger.js';
import type { ConnectionLogEntry, DeviceStatus, LeaseEventEntry, ServerLogEntry, Store } from '../store/types.js';

// The lease core's record in the durable store. Failover never waits on the store: every write
// is queued and the caller moves on. Writes for one device stay in order (one chain per device);
// a failed write is logged, not retried here (the write-behind queue of issue 5 takes over that).

export interface LeaseRecorder {
  leaseEvent(entry: LeaseEventEntry): void;
  /** Fenced in SQL: refused when the store already has a higher epoch for the device. */
  assignment(deviceId: string, serverId: string | null, epoch: number): void;
  serverLog(entry: ServerLogEntry): void;
  /** Fenced in SQL like assignment; runs after the device's earlier writes. */
  deviceStatus(deviceId: string, status: DeviceStatus, epoch: number, errorMessage: string | null): void;
  /** Resolves when every queued write has settled (shutdown, tests). */
  flush(): Promise<void>;
  /** A device's connection event (device_connection_logs); after the device's earlier writes. */
  connectionEvent(entry: ConnectionLogEntry): void;
}

export function createStoreRecorder({ store, log }: { store: Store; log: Logger }): LeaseRecorder {
  const chains = new Map<string, Promise<void>>();

  const enqueue = (key: string, what: string, write: () => Promise<unknown>) => {
    const previous = chains.get(key) ?? Promise.resolve();
    const next = previous
      .then(write)
      .then(
        () => undefined,
        (err) => log.warn({ err: { message: (err as Error).message }, key, what }, 'store write failed'),
      );
    chains.set(key, next);
    void next.then(() => {
      if (chains.get(key) === next) chains.delete(key);
    });
  };

  return {
    leaseEvent(entry) {
      enqueue(entry.deviceId, `lease event ${entry.eventType}`, () => store.appendLeaseEvent(entry));
    },
    assignment(deviceId, serverId, epoch) {
      enqueue(deviceId, 'assignment', async () => {
        const accepted = await store.recordAssignment(deviceId, serverId, epoch);
        if (!accepted) log.info({ deviceId, serverId, epoch }, 'fenced assignment refused: the store has a newer epoch');
      });
    },
    deviceStatus(deviceId, status, epoch, errorMessage) {
      enqueue(deviceId, `status ${status}`, async () => {
        const accepted = await store.updateDeviceStatus(deviceId, status, epoch, errorMessage);
        if (!accepted) log.info({ deviceId, status, epoch }, 'fenced status write refused: the store has a newer epoch');
      });
    },
    serverLog(entry) {
      enqueue(`server:${entry.serverId}`, `server log ${entry.event}`, () => store.appendServerLog(entry));
    },
    async flush() {
      while (chains.size > 0) await Promise.all([...chains.values()]);
    },
    connectionEvent(entry) {
      enqueue(entry.deviceId, `connection event ${entry.eventType}`, () => store.appendConnectionLog(entry));
    },
  };
}
