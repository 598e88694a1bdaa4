import { createHmac } from 'node:crypto';

// What a receiver gets: the event as JSON and a signature over the exact bytes sent, so it can
// tell wafleet's deliveries from anyone else's POSTs and refuse an old one replayed (the signed
// time). A redelivery of the same event carries the same id and body, signed at its own time.

export const EVENT_ID_HEADER = 'x-wafleet-event-id';
export const SIGNATURE_HEADER = 'x-wafleet-signature';

/** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` */
export function signatureHeader(secret: string, rawBody: string, unixSeconds: number): string {
  const v1 = createHmac('sha256', secret).update(`${unixSeconds}.${rawBody}`).digest('hex');
  return `t=${unixSeconds},v1=${v1}`;
}

/** The headers of one delivery attempt; without a secret (an older `webhookUrl` and no WEBHOOK_SECRET) it goes unsigned. */
export function deliveryHeaders(eventId: string, rawBody: string, secret: string | null, nowMs: number): Record<string, string> {
  return {
    'content-type': 'application/json',
    [EVENT_ID_HEADER]: eventId,
    ...(secret ? { [SIGNATURE_HEADER]: signatureHeader(secret, rawBody, Math.floor(nowMs / 1000)) } : {}),
  };
}
