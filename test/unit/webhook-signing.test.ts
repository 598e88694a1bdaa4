import { describe, expect, it } from 'vitest';
import { createSecretBox, newWebhookSecret, WebhookSecretUnreadableError } from '../../src/webhooks/secrets.js';
import { deliveryHeaders, signatureHeader } from '../../src/webhooks/signing.js';
import { importReadmeSnippet } from '../helpers/readme-snippet.js';

// The signature a delivery carries, checked by the very code the README tells receivers to use
// (read from README.md between its webhook-verify markers), and the encryption of the secrets.

type Verify = (rawBody: Buffer | string, header: string | undefined, secret: string, toleranceSeconds?: number) => boolean;
const { verifyWafleetSignature: verify } = await importReadmeSnippet<{ verifyWafleetSignature: Verify }>('webhook-verify');

const SECRET = 'whsec_test-secret-0123456789';
const body = JSON.stringify({ id: 'e1', type: 'message.received', deviceId: 'd1', sequence: 1, createdAt: new Date(0).toISOString(), data: { text: 'héllo' } });
const now = () => Math.floor(Date.now() / 1000);

describe("the README's verification snippet", () => {
  it('accepts what wafleet signs, as a string or as the raw bytes', () => {
    const header = signatureHeader(SECRET, body, now());
    expect(verify(body, header, SECRET)).toBe(true);
    expect(verify(Buffer.from(body), header, SECRET)).toBe(true);
    expect(verify(Buffer.from(body), deliveryHeaders('e1', body, SECRET, Date.now())['x-wafleet-signature'], SECRET)).toBe(true);
  });

  it('refuses another body, another secret, an old or future time, and malformed headers', () => {
    const header = signatureHeader(SECRET, body, now());
    expect(verify(body.replace('héllo', 'hello'), header, SECRET)).toBe(false);
    expect(verify(body, header, `${SECRET}x`)).toBe(false);
    expect(verify(body, signatureHeader(SECRET, body, now() - 301), SECRET)).toBe(false);
    expect(verify(body, signatureHeader(SECRET, body, now() + 301), SECRET)).toBe(false);
    expect(verify(body, signatureHeader(SECRET, body, now() - 200), SECRET)).toBe(true);
    for (const bad of [undefined, '', 't=abc,v1=00', `t=${now()}`, `t=${now()},v1=zz`, header.slice(0, -2)]) expect(verify(body, bad, SECRET)).toBe(false);
  });

  it('is the format of the contract: t=<unix seconds>,v1=<64 hex>', () => {
    expect(signatureHeader(SECRET, body, 1_700_000_000)).toMatch(/^t=1700000000,v1=[0-9a-f]{64}$/);
    // Unsigned only when there is no secret at all (an older webhookUrl without WEBHOOK_SECRET).
    expect(deliveryHeaders('e1', body, null, Date.now())).toEqual({ 'content-type': 'application/json', 'x-wafleet-event-id': 'e1' });
  });
});

describe('webhook secrets', () => {
  it('are whsec_ and 32 random bytes', () => {
    const a = newWebhookSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(newWebhookSecret()).not.toBe(a);
  });

  it('are sealed so that only the same key and the same device open them', () => {
    const box = createSecretBox({ source: 'WEBHOOK_SECRET_KEY', material: 'k'.repeat(32) });
    const secret = newWebhookSecret();
    const sealed = box.seal('device-a', secret);
    expect(sealed).not.toContain(secret.slice(6));
    expect(box.seal('device-a', secret)).not.toBe(sealed); // a fresh IV each time
    expect(box.open('device-a', sealed)).toBe(secret);
    expect(() => box.open('device-b', sealed)).toThrow(WebhookSecretUnreadableError);
    expect(() => createSecretBox({ source: 'WEBHOOK_SECRET_KEY', material: 'j'.repeat(32) }).open('device-a', sealed)).toThrow(WebhookSecretUnreadableError);
    // The same text as INTERNAL_API_KEY derives another key.
    expect(() => createSecretBox({ source: 'INTERNAL_API_KEY', material: 'k'.repeat(32) }).open('device-a', sealed)).toThrow(WebhookSecretUnreadableError);
    expect(() => box.open('device-a', `${sealed.slice(0, -2)}AA`)).toThrow(WebhookSecretUnreadableError);
    expect(() => box.open('device-a', 'garbage')).toThrow(WebhookSecretUnreadableError);
  });
});
