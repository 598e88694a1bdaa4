import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from './keys.js';

// A server's inbox: the stream through which any server (or any API call) asks the owner of a
// device, or a server as a whole, to act. Every message is one of the kinds below; this module
// is the only place their fields are written or read, so a new kind cannot be half-understood.

/** The messages a server's inbox carries. */
export type InboxMessage =
  /** A placement reserved capacity here: claim the device. Written by placeDevice.lua. */
  | { type: 'place'; deviceId: string }
  /** The device is no longer wanted (disconnect, delete): stop it and release its lease. */
  | { type: 'stop'; deviceId: string }
  /** As stop, with the device's session cleared under the still-held token. */
  | { type: 'logout'; deviceId: string }
  /** An operator asked this server to drain (POST /api/servers/:id/drain). */
  | { type: 'drain' }
  /** The rebalance planner asked this server to hand `count` devices to the others. */
  | { type: 'rebalance'; count: number };

/**
 * The approximate cap on an inbox's length (XADD MAXLEN ~). A reader acknowledges and deletes what
 * it handles, so only the inbox of a server that died keeps growing, until its key is reused.
 * placeDevice.lua writes its `place` messages with the same cap (test/unit/inbox.test.ts checks).
 */
export const INBOX_MAX_LENGTH = 100_000;

/** The consumer group every server reads its own inbox with. */
export const INBOX_GROUP = 'owner';

/** The stream fields of a message, in the order placeDevice.lua writes them. */
export function inboxFields(message: InboxMessage): string[] {
  switch (message.type) {
    case 'place':
    case 'stop':
    case 'logout':
      return ['type', message.type, 'deviceId', message.deviceId];
    case 'drain':
      return ['type', 'drain'];
    case 'rebalance':
      return ['type', 'rebalance', 'count', String(message.count)];
  }
}

/**
 * The message a stream entry's fields hold, or null for one no reader understands (written by a
 * newer version, or by hand with redis-cli): it is acknowledged and dropped, never retried.
 */
export function parseInboxMessage(fields: readonly string[]): InboxMessage | null {
  const field: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) field[fields[i]!] = fields[i + 1]!;
  const { type, deviceId } = field;
  switch (type) {
    case 'place':
    case 'stop':
    case 'logout':
      return deviceId ? { type, deviceId } : null;
    case 'drain':
      return { type };
    case 'rebalance': {
      const count = Number(field.count);
      return Number.isInteger(count) && count > 0 ? { type, count } : null;
    }
    default:
      return null;
  }
}

export interface Inbox {
  /** Appends a message to a server's inbox; it acts on it when it next reads (within a second). */
  send(serverId: string, message: InboxMessage): Promise<void>;
  /** Makes the server's inbox and its consumer group if they are missing (at start, after Redis lost its data). */
  open(serverId: string): Promise<void>;
}

export function createInbox({ redis, keys }: { redis: Redis; keys: ClusterKeys }): Inbox {
  return {
    async send(serverId, message) {
      await redis.xadd(keys.inbox(serverId), 'MAXLEN', '~', INBOX_MAX_LENGTH, '*', ...inboxFields(message));
    },
    async open(serverId) {
      try {
        await redis.xgroup('CREATE', keys.inbox(serverId), INBOX_GROUP, '$', 'MKSTREAM');
      } catch (err) {
        if (!(err as Error).message.startsWith('BUSYGROUP')) throw err;
      }
    },
  };
}
