import type { Logger } from '../shared/logger.js';
import { connectRedis, duplicateRedis, type RedisClient, type RedisTarget } from '../shared/redis.js';

// The Redis connections one server process opens. Each is named `wafleet:<serverId>:<bootId>`
// (plus its role), which is more than a label: a restarted process proves its predecessor dead by
// finding no connection named for the old boot id (server-exclusivity.ts isBootAlive).

export interface ServerConnections {
  /** Commands: leases, heartbeat, records, the API. */
  redis: RedisClient;
  /** Blocking inbox reads (the coordinator's alone). */
  inboxReader: RedisClient;
  /** Subscriber mode (device events). */
  subscriber: RedisClient;
  /** BullMQ's blocking reads need a connection without retry limits (outbound and write-behind). */
  bull: RedisClient;
  close(): Promise<void>;
}

export async function openServerConnections(options: { target: RedisTarget; log: Logger; serverId: string; bootId: string; ttlMs: number }): Promise<ServerConnections> {
  const name = `wafleet:${options.serverId}:${options.bootId}`;
  // A command that hangs (a partition) must fail rather than hold the heartbeat forever; past
  // one TTL its answer could not matter any more.
  const redis = await connectRedis({ target: options.target, log: options.log, connectionName: name, extra: { commandTimeout: options.ttlMs } });
  const inboxReader = duplicateRedis(redis, { connectionName: `${name}:inbox`, commandTimeout: options.ttlMs + 5000 });
  const subscriber = duplicateRedis(redis, { connectionName: `${name}:events` });
  const bull = duplicateRedis(redis, { connectionName: `${name}:bullmq`, maxRetriesPerRequest: null, commandTimeout: undefined });
  return {
    redis,
    inboxReader,
    subscriber,
    bull,
    async close() {
      for (const connection of [bull, inboxReader, subscriber]) connection.disconnect();
      await redis.quit();
    },
  };
}
