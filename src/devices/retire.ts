import type { LeaseGuard } from '../cluster/lease-guard.js';
import type { LeaseStore } from '../cluster/lease-store.js';
import type { Logger } from '../shared/logger.js';
import type { Store } from '../store/types.js';
import type { DeviceRecorder } from './recorder.js';
import type { Retirement } from './runtime.js';

// What happens to a device the runtime stopped for good (logged out, refused by WhatsApp,
// replaced again and again, never linked): nobody should start it again until someone asks, so
// its desired state becomes `stopped`, and then its lease is released.

export interface DeviceRetirerOptions {
  store: Pick<Store, 'setDesiredState'>;
  leases: Pick<LeaseStore, 'release' | 'setWanted'>;
  guard: LeaseGuard;
  recorder: Pick<DeviceRecorder, 'leaseEvent'>;
  serverId: string;
  /** The lease values' holder (holderId: the server id with this process's boot id); default serverId. */
  holder?: string;
  log: Logger;
  /** Pause between attempts while the store cannot be written. */
  retryMs?: number;
}

export type DeviceRetirer = (deviceId: string, token: number, retirement: Retirement) => Promise<void>;

export function createDeviceRetirer({ store, leases, guard, recorder, serverId, holder = serverId, log, retryMs = 2000 }: DeviceRetirerOptions): DeviceRetirer {
  return async (deviceId, token, retirement) => {
    // The desired state first: a lease released while the device is still wanted would be placed
    // again by reconcile, and a logged-out device would be showing QR codes on another server.
    // Until the store takes it, the lease stays held (renewed) and the socket stays closed.
    for (;;) {
      try {
        await store.setDesiredState(deviceId, 'stopped');
        break;
      } catch (err) {
        if (guard.tokenOf(deviceId) !== token) return; // lost or handed over meanwhile
        log.warn({ err, deviceId }, 'desired state not written; retrying before releasing the lease');
        await new Promise((r) => setTimeout(r, retryMs).unref());
      }
    }
    await leases.setWanted([deviceId], false);
    guard.drop(deviceId, token);
    const released = await leases.release(deviceId, holder, token);
    if (released) {
      recorder.leaseEvent({ deviceId, serverId, eventType: 'release', epoch: token, details: { reason: retirement.reason, status: retirement.status } });
    }
    log.info({ deviceId, token, status: retirement.status, released }, 'device retired: desired state stopped, lease released');
  };
}
