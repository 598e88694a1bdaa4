import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { WafleetError } from '../shared/errors.js';

// A device's webhook secret is shown to its user once and must be used again by every server on
// every delivery, so the store keeps it encrypted (AES-256-GCM), never in the clear and not
// hashed. The key is derived (HKDF-SHA256) from WEBHOOK_SECRET_KEY, or from INTERNAL_API_KEY when
// that is all there is: either way the database alone reveals no secret. The device id is bound in
// as associated data, so a ciphertext copied onto another device's row does not decrypt.

/** Registration is refused: there is no key to encrypt secrets with. */
export class WebhooksUnavailableError extends WafleetError {
  constructor() {
    super('webhooks_unavailable', 'Device webhooks need a key to encrypt their secrets: set WEBHOOK_SECRET_KEY (at least 32 characters) or INTERNAL_API_KEY on the servers');
  }
}

/** A stored secret that the configured key does not open (the key changed since it was put). */
export class WebhookSecretUnreadableError extends WafleetError {
  constructor(deviceId: string) {
    super('webhook_secret_unreadable', `the webhook secret of device ${deviceId} cannot be decrypted with the configured key (WEBHOOK_SECRET_KEY or INTERNAL_API_KEY changed?); PUT the webhook again`);
  }
}

export interface SecretBox {
  seal(deviceId: string, secret: string): string;
  /** Throws WebhookSecretUnreadableError. */
  open(deviceId: string, sealed: string): string;
}

const VERSION = 'v1';
// A distinct info per source, so the same string given as both never yields the same key.
const INFO = { WEBHOOK_SECRET_KEY: 'wafleet webhook secrets v1', INTERNAL_API_KEY: 'wafleet webhook secrets v1 from the internal API key' } as const;

/** `whsec_` and 32 random bytes, base64url. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

export function createSecretBox(key: { source: keyof typeof INFO; material: string }): SecretBox {
  const aesKey = Buffer.from(hkdfSync('sha256', key.material, Buffer.alloc(0), INFO[key.source], 32));
  return {
    seal(deviceId, secret) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', aesKey, iv);
      cipher.setAAD(Buffer.from(deviceId));
      const ciphertext = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
      return [VERSION, iv, cipher.getAuthTag(), ciphertext].map((part) => (typeof part === 'string' ? part : part.toString('base64url'))).join('.');
    },
    open(deviceId, sealed) {
      const [version, iv, tag, ciphertext] = sealed.split('.');
      if (version !== VERSION || !iv || !tag || ciphertext === undefined) throw new WebhookSecretUnreadableError(deviceId);
      try {
        const decipher = createDecipheriv('aes-256-gcm', aesKey, Buffer.from(iv, 'base64url'));
        decipher.setAAD(Buffer.from(deviceId));
        decipher.setAuthTag(Buffer.from(tag, 'base64url'));
        return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8');
      } catch {
        throw new WebhookSecretUnreadableError(deviceId);
      }
    },
  };
}
