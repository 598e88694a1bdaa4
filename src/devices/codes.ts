import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import { defineLuaScripts, loadLuaScript, runLua } from '../shared/lua.js';
import { holderId, leaseValue } from '../cluster/lease-value.js';

// The latest QR code and pairing code of each device, published in Redis for as long as WhatsApp
// honours them, so any server's API can hand them out whichever server holds the socket. Written
// by the lease holder only (fenced); read by anyone.

const LUA = new URL('./lua/', import.meta.url);
const scripts = {
  publish: loadLuaScript(LUA, 'publishDeviceCode-2.lua'),
  clear: loadLuaScript(LUA, 'clearDeviceCodes-3.lua'),
};

export interface PublishedQr {
  qr: string;
  /** Unix ms (Redis clock) after which WhatsApp no longer accepts the code. */
  expiresAt: number;
  /** Codes this device has shown in its current run, this one included. */
  refresh: number;
  /** Sockets in a row that have shown codes without being linked, this one included. */
  round: number;
}

export interface PublishedPairingCode {
  pairingCode: string;
  expiresAt: number;
  refresh: number;
  round: number;
}

export interface DeviceCodes {
  qr: PublishedQr | null;
  pairing: PublishedPairingCode | null;
}

/** Reads a device's latest QR and pairing code (null when none is live). One round trip. */
export async function readDeviceCodes(redis: Redis, keys: ClusterKeys, deviceId: string): Promise<DeviceCodes> {
  const [qr, pairing] = await redis.mget(keys.qrCode(deviceId), keys.pairingCode(deviceId));
  return { qr: parse<PublishedQr>(qr), pairing: parse<PublishedPairingCode>(pairing) };
}

function parse<T>(raw: string | null | undefined): T | null {
  if (!raw) return null;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return null;
  }
}

/** The lease a code is published under: only its holder may show or withdraw codes. */
export interface CodeHolder {
  serverId: string;
  bootId?: string;
  token: number;
}

export interface CodePublisher {
  /** Resolves with the code's expiry (Unix ms), or null when refused (lease not held). */
  publish(
    deviceId: string,
    holder: CodeHolder,
    code: { kind: 'qr' | 'pairing'; value: string; ttlMs: number; refresh: number; round: number },
  ): Promise<number | null>;
  /** Withdraws both codes; false when refused (lease not held). */
  clear(deviceId: string, holder: CodeHolder): Promise<boolean>;
}

export function createCodePublisher({ redis, keys }: { redis: Redis; keys: ClusterKeys }): CodePublisher {
  defineLuaScripts(redis, Object.values(scripts));
  return {
    async publish(deviceId, { serverId, bootId, token }, code) {
      const key = code.kind === 'qr' ? keys.qrCode(deviceId) : keys.pairingCode(deviceId);
      const field = code.kind === 'qr' ? 'qr' : 'pairingCode';
      const expiresAt = await runLua<number>(
        redis,
        scripts.publish,
        [keys.lease(deviceId), key],
        [leaseValue(holderId(serverId, bootId), token), field, code.value, Math.max(1, Math.round(code.ttlMs)), code.refresh, code.round],
      );
      return expiresAt > 0 ? expiresAt : null;
    },
    async clear(deviceId, { serverId, bootId, token }) {
      const cleared = await runLua<number>(
        redis,
        scripts.clear,
        [keys.lease(deviceId), keys.qrCode(deviceId), keys.pairingCode(deviceId)],
        [leaseValue(holderId(serverId, bootId), token)],
      );
      return cleared === 1;
    },
  };
}
