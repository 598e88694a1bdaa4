import type { ClusterKeys } from '../cluster/keys.js';
import { markEventsStored } from '../events/event-log.js';
import type { RedisClient as Redis } from '../shared/redis.js';
import type { SyncRecord } from './store-sync.js';

// The write-behind applied a batch: the store now has each of its devices' events up to the last
// one in it. Webhooks deliver no further than that mark (so a number a receiver saw survives Redis
// losing its data), and are woken here to go on.

export function createStoredEventsListener(redis: Redis, keys: ClusterKeys, wake: (deviceId: string) => void) {
  return async (records: readonly SyncRecord[]): Promise<void> => {
    const last = new Map<string, number>();
    for (const record of records) {
      if (record.kind === 'inbound_event') last.set(record.deviceId, Math.max(last.get(record.deviceId) ?? 0, record.sequence));
    }
    await Promise.all(
      [...last].map(async ([deviceId, sequence]) => {
        await markEventsStored(redis, keys, deviceId, sequence);
        wake(deviceId);
      }),
    );
  };
}
