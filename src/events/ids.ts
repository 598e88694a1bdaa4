import { createHash } from 'node:crypto';
import type { EventType } from './event-log.js';

// An event's id names what happened, not when it was seen or by whom: whichever server observes
// the same thing (WhatsApp delivering a message again to a device's new owner after a failover,
// or one owner retrying an append) derives the same id, and the log drops the repeat.

/**
 * What tells one event of a type from another on the same device, in a fixed order:
 * - `message.received`: the WhatsApp message id.
 * - `message.ack`: the WhatsApp message id and the status it reached (`delivered`, `read`, ...);
 *   each status is one event.
 * - `device.status`: the lease token the change happened under, the change's ordinal under that
 *   lease (1 for the first change after the claim, ...) and the status it went to. The token
 *   alone would merge a device's second reconnect under one lease with its first.
 * - `device.qr`: the QR code's text; `device.pairing_code`: the pairing code.
 */
export interface EventDiscriminators {
  'message.received': readonly [waMessageId: string];
  'message.ack': readonly [waMessageId: string, status: string];
  'device.status': readonly [token: number, change: number, status: string];
  'device.qr': readonly [qr: string];
  'device.pairing_code': readonly [pairingCode: string];
}

/** 32 hex characters (128 bits of sha256): far from colliding among any device's events. */
export function eventIdFor<T extends EventType>(deviceId: string, type: T, discriminator: EventDiscriminators[T]): string {
  // A JSON array is an unambiguous join: no choice of separator can make two inputs meet.
  const canonical = JSON.stringify([deviceId, type, ...discriminator]);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 32);
}
