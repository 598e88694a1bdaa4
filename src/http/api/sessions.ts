import type { RedisClient as Redis } from '../../shared/redis.js';
import type { ClusterKeys } from '../../cluster/keys.js';
import { readDeviceCodes } from '../../devices/codes.js';
import type { Store } from '../../store/types.js';
import type { ApiDeps } from './context.js';

/** The Redis keys that make up a device's session as the API sees it: auth state and link codes. */
export function deviceSessionKeys(keys: ClusterKeys, deviceId: string): string[] {
  return [keys.authState(deviceId), keys.qrCode(deviceId), keys.pairingCode(deviceId)];
}

/** The API's access to device sessions, over the device layer's own keys and reader. */
export function createSessionAccess({ redis, keys, store }: { redis: Redis; keys: ClusterKeys; store: Store }): Pick<ApiDeps, 'readLinkCode' | 'clearSession'> {
  return {
    async readLinkCode(deviceId, kind) {
      const codes = await readDeviceCodes(redis, keys, deviceId);
      const code = kind === 'qr' ? codes.qr && { code: codes.qr.qr, at: codes.qr.expiresAt } : codes.pairing && { code: codes.pairing.pairingCode, at: codes.pairing.expiresAt };
      return code ? { code: code.code, expiresAt: new Date(code.at).toISOString() } : null;
    },
    // Only called when nobody holds the device and it is no longer wanted, so nobody can claim it:
    // the Redis copy may go, and the store keeps a tombstone at `epoch` no older owner can overwrite.
    async clearSession(deviceId, epoch) {
      await redis.del(...deviceSessionKeys(keys, deviceId));
      await store.clearSession(deviceId, epoch);
    },
  };
}
