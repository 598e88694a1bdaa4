import type { AuthenticationState } from '@whiskeysockets/baileys';
import type { Logger } from '../shared/logger.js';
import type { DeviceStatus } from '../store/types.js';
import type { InboundMessage, MessageAck } from './inbound.js';

// The seam between the lease core and WhatsApp. A connector is asked to open a device only by
// the device's lease holder, and every socket is closed the moment the lease is lost or the
// server self-fences. Implementations: `baileys` (baileys/) and `simulated` (simulated/).

/** Baileys' DisconnectReason codes the runtime acts on (what the runtime does on each: reconnect-policy.ts). */
export const DisconnectCode = {
  loggedOut: 401,
  forbidden: 403,
  connectionLost: 408,
  timedOut: 408,
  multideviceMismatch: 411,
  /** Baileys counts it among its UNAUTHORIZED_CODES; it has no DisconnectReason name. */
  unauthorized: 419,
  connectionClosed: 428,
  connectionReplaced: 440,
  badSession: 500,
  unavailableService: 503,
  restartRequired: 515,
  /** Closed by us: lease lost, drain, self-fence or stop. */
  stopped: 0,
} as const;

export interface DeviceSocketEvents {
  status(status: DeviceStatus, detail?: Record<string, unknown>): void;
  /** WhatsApp issued a QR code for linking; valid for ttlMs. */
  qr(qr: string, ttlMs: number): void;
  /** WhatsApp accepted a pairing-code request; the code is valid for ttlMs. */
  pairingCode(code: string, ttlMs: number): void;
  /** The socket ended on its own (kicked, lost, logged out), not because close() was called. */
  closed(code: number, reason: string): void;
  /**
   * WhatsApp delivered messages to the device, in the order it delivered them. Resolves once
   * they are in the device's event log and the store (or given up on), never rejects: a socket
   * that can hold its acknowledgement until then (the simulated one) loses nothing when the
   * server dies or Redis loses its data meanwhile. Baileys acknowledges before it reports.
   */
  inbound(messages: readonly InboundMessage[]): Promise<void>;
  /** WhatsApp reported what became of messages this device sent; resolves as inbound's does. */
  acks(acks: readonly MessageAck[]): Promise<void>;
}

/** How a device that is not linked yet gets linked (devices.connection_method). */
export interface LinkMethod {
  method: 'qr' | 'pairing';
  /** Digits only, with the country code; required for `pairing`. */
  phone: string | null;
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
  /** The device's shared auth state (fenced writes); `saveCreds` persists `state.creds`. */
  auth: { state: AuthenticationState; saveCreds(): Promise<void> };
  /** How to link the device; null when the creds are already linked. */
  link: LinkMethod | null;
}

export interface DeviceSocket {
  readonly deviceId: string;
  readonly token: number;
  /** Closes the socket; idempotent. Never logs the device out or clears its session. */
  close(): Promise<void>;
  /**
   * Tells WhatsApp to unlink this device (the phone's "linked devices" list forgets it), then
   * closes. Best effort: a socket that is not connected just closes. Never reported as a close.
   */
  logout?(): Promise<void>;
  /**
   * Sends a message through the connected socket, with WhatsApp's message id fixed by the caller
   * (a resend after a crash carries the same id, and WhatsApp drops ids it has seen). Absent on a
   * socket that cannot send (still linking).
   */
  send?(message: SocketMessage, waMessageId: string): Promise<void>;
}

/** What the runtime is asked to send: a text, or a media message by URL (image, video, document). */
export interface SendableMessage {
  /** A phone number (digits, optional +) or a JID. */
  to: string;
  type: 'text' | 'image' | 'video' | 'document';
  text?: string | undefined;
  mediaUrl?: string | undefined;
  caption?: string | undefined;
  fileName?: string | undefined;
}

/** What a socket sends: the media as bytes the runtime downloaded (src/devices/media.ts), never a URL. */
export type SocketMessage = Omit<SendableMessage, 'mediaUrl'> & { media?: Buffer | undefined };

/** A phone number becomes a user JID; a JID stays as it is. */
export function toJid(to: string): string {
  return to.includes('@') ? to : `${to.replace(/^\+/, '')}@s.whatsapp.net`;
}

export interface DeviceConnector {
  readonly kind: 'simulated' | 'baileys';
  open(options: OpenDeviceOptions): Promise<DeviceSocket>;
  /** Closes every socket and the connector's own connections. */
  close(): Promise<void>;
}
