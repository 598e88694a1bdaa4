import type { Logger } from '../shared/logger.js';
import type { DeviceStatus } from '../store/types.js';

// The seam between the lease core and WhatsApp. A connector is asked to open a device only by
// the device's lease holder, and every socket is closed the moment the lease is lost or the
// server self-fences. Implementations: `simulated` (here) and `baileys` (issue 4).

/** Baileys' DisconnectReason codes the runtime acts on (DESIGN.md section 4). */
export const DisconnectCode = {
  connectionClosed: 428,
  connectionLost: 408,
  connectionReplaced: 440,
  loggedOut: 401,
  badSession: 500,
  restartRequired: 515,
  /** Closed by us: lease lost, drain, self-fence or stop. */
  stopped: 0,
} as const;

export interface DeviceSocketEvents {
  status(status: DeviceStatus, detail?: Record<string, unknown>): void;
  /** The socket ended on its own (kicked, lost, logged out), not because close() was called. */
  closed(code: number, reason: string): void;
}

export interface OpenDeviceOptions {
  deviceId: string;
  /** The fencing token of the lease under which the socket runs. */
  token: number;
  serverId: string;
  log: Logger;
  events: DeviceSocketEvents;
  /** Throws unless the server may still act for this device with this token. */
  guard(): void;
}

export interface DeviceSocket {
  readonly deviceId: string;
  readonly token: number;
  /** Closes the socket; idempotent. Never logs the device out or clears its session. */
  close(): Promise<void>;
}

export interface DeviceConnector {
  readonly kind: 'simulated' | 'baileys';
  open(options: OpenDeviceOptions): Promise<DeviceSocket>;
  /** Closes every socket and the connector's own connections. */
  close(): Promise<void>;
}
