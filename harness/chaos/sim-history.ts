import type { RedisClient as Redis } from '../../src/shared/redis.js';
import type { ClusterKeys } from '../../src/cluster/keys.js';
import type { HistoryEvent } from './history.js';

// Reads the simulated WhatsApp's history stream (`{p}:sim:history`, written by its Lua scripts)
// into history events, and trims what it has read so the stream stays short. The stream id is
// Redis's clock in ms, so it is the event's time.

export interface SimHistoryReader {
  /**
   * Everything written since the last read, oldest first. `trim: false` leaves the stream as it
   * is: a read under CLIENT PAUSE WRITE (just before Redis is stopped) must not write.
   */
  read(options?: { trim?: boolean }): Promise<HistoryEvent[]>;
}

/** `<serverId>#<token>#<random>`: the simulated connector's socket ids. */
export function parseSocketId(socketId: string): { serverId: string; token: number } {
  const [serverId = '', token = ''] = socketId.split('#');
  return { serverId, token: Number(token) };
}

export function createSimHistoryReader(options: {
  redis: Redis;
  keys: ClusterKeys;
  /** The message id a WhatsApp message id stands for (the runner knows what it accepted). */
  messageOf: (waMessageId: string) => string | undefined;
  batch?: number;
}): SimHistoryReader {
  const { redis, keys, messageOf } = options;
  const batch = options.batch ?? 5000;
  let after = '0-0';

  const toEvent = (id: string, raw: string[]): HistoryEvent | null => {
    const f = new Map<string, string>();
    for (let i = 0; i + 1 < raw.length; i += 2) f.set(raw[i]!, raw[i + 1]!);
    const t = Number(id.slice(0, id.indexOf('-')));
    const deviceId = f.get('d') ?? '';
    const socketId = f.get('s') ?? '';
    const { serverId, token } = parseSocketId(socketId);
    switch (f.get('k')) {
      case 'open':
        return { t, kind: 'socket_open', deviceId, serverId, token, socketId, kicked: f.get('x') ?? '' };
      case 'close':
        return { t, kind: 'socket_close', deviceId, socketId, reason: f.get('r') ?? '' };
      case 'send':
      case 'dup': {
        const waMessageId = f.get('m') ?? '';
        return { t, kind: 'send', deviceId, messageId: messageOf(waMessageId) ?? `wa:${waMessageId}`, serverId, token, duplicate: f.get('k') === 'dup' };
      }
      case 'inbound':
        // Handed to a socket: from here on the message is wafleet's to log, whatever befalls Redis.
        return { t, kind: 'sim_inbound', deviceId, waMessageId: f.get('m') ?? '', serverId, token, socketId };
      // `inject` is the runner's own record (with the 202 it got), and receipts are not checked.
      default:
        return null;
    }
  };

  return {
    async read({ trim = true } = {}) {
      const events: HistoryEvent[] = [];
      for (;;) {
        const entries = (await redis.xrange(keys.simHistory, `(${after}`, '+', 'COUNT', batch)) as Array<[string, string[]]>;
        if (entries.length === 0) break;
        for (const [id, fields] of entries) {
          const event = toEvent(id, fields);
          if (event) events.push(event);
        }
        after = entries[entries.length - 1]![0];
        // Only this reader consumes the stream: what it has read is no longer needed.
        // A trim that fails (the connection cut by a fault) loses nothing: the entries are read,
        // and the cursor has moved past them.
        if (trim) await redis.xtrim(keys.simHistory, 'MINID', after).catch(() => undefined);
        if (entries.length < batch) break;
      }
      return events;
    },
  };
}
