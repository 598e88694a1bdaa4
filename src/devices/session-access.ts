import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import type { Store } from '../store/types.js';
import { readDeviceCodes } from './codes.js';

// A device's session as callers outside the device layer (the API) reach it: the link codes its
// holder published, and the session itself, from any server.

export interface LinkCode {
  code: string;
  expiresAt: string;
}

export interface DeviceSessions {
  /** The latest QR code or pairing code published for the device, from any server. */
  readLinkCode(deviceId: string, kind: 'qr' | 'pairing'): Promise<LinkCode | null>;
  /** Clears a device's session when nobody holds it (logout of a stopped device), fenced by `epoch`. */
  clearSession(deviceId: string, epoch: number): Promise<void>;
  /** Removes what Redis keeps of a deleted device: its session, link codes and live status. */
  forget(deviceId: string): Promise<void>;
}

/** The Redis keys that make up a device's session: auth state and link codes. */
function sessionKeys(keys: ClusterKeys, deviceId: string): string[] {
  return [keys.authState(deviceId), keys.qrCode(deviceId), keys.pairingCode(deviceId)];
}

export function createDeviceSessions({ redis, keys, store }: { redis: Redis; keys: ClusterKeys; store: Store }): DeviceSessions {
  return {
    async readLinkCode(deviceId, kind) {
      const codes = await readDeviceCodes(redis, keys, deviceId);
      const code = kind === 'qr' ? codes.qr && { code: codes.qr.qr, at: codes.qr.expiresAt } : codes.pairing && { code: codes.pairing.pairingCode, at: codes.pairing.expiresAt };
      return code ? { code: code.code, expiresAt: new Date(code.at).toISOString() } : null;
    },
    // Only called when nobody holds the device and it is no longer wanted, so nobody can claim it:
    // the Redis copy may go, and the store keeps a tombstone at `epoch` no older owner can overwrite.
    async clearSession(deviceId, epoch) {
      await redis.del(...sessionKeys(keys, deviceId));
      await store.clearSession(deviceId, epoch);
    },
    // The store's session goes with the device's row (it cascades).
    async forget(deviceId) {
      await redis.del(keys.deviceStatus(deviceId), ...sessionKeys(keys, deviceId));
    },
  };
}
