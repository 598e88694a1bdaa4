import { Cluster, type Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import type { RedisClient } from '../shared/redis.js';

// Keyspace `expired` events wake the sweep the moment a lease runs out instead of at its next
// poll. Redis sends them only to clients of the node where the key expired, and only when that
// node's `notify-keyspace-events` asks for them, so: under Sentinel the one subscriber follows the
// master and the setting is applied again whenever it reconnects (a promoted replica may not
// have it); under Cluster there is one subscriber per master, kept in step with the cluster's
// masters as they fail over or change. Without permission to CONFIG SET (managed Redis), the
// events are whatever the provider configured, and the sweep polls regardless.

/** Redis Cluster keeps keyspace events in database 0. */
const EXPIRED_CHANNEL = (db: number) => `__keyevent@${db}__:expired`;
/** How often the Cluster's masters are read again and compared with the subscribers, besides on node events. */
const MASTER_CHECK_MS = 5000;

export interface ExpiredKeyEvents {
  /** Masters listened to: `host:port`, or `master` for a standalone/Sentinel connection. */
  readonly listening: readonly string[];
  close(): void;
}

export interface ExpiredKeyOptions {
  redis: RedisClient;
  log: Logger;
  onExpired(key: string): void;
}

/** Makes `node` send expired-key events, keeping whatever else it was told to send. */
async function enableExpiredEvents(node: Redis | Cluster, log: Logger, where: string): Promise<boolean> {
  try {
    const [, flags = ''] = (await node.config('GET', 'notify-keyspace-events')) as [string, string];
    const hasExpired = flags.includes('E') && (flags.includes('x') || flags.includes('A'));
    if (!hasExpired) await node.config('SET', 'notify-keyspace-events', `${flags}Ex`);
    return true;
  } catch (err) {
    log.info({ node: where, reason: (err as Error).message }, 'keyspace notifications not available; the sweep polls');
    return false;
  }
}

export async function listenForExpiredKeys(options: ExpiredKeyOptions): Promise<ExpiredKeyEvents> {
  return options.redis instanceof Cluster ? listenOnClusterMasters(options.redis, options) : listenOnMaster(options.redis, options);
}

async function listenOnMaster(redis: Redis, { log, onExpired }: ExpiredKeyOptions): Promise<ExpiredKeyEvents> {
  const channel = EXPIRED_CHANNEL(redis.options.db ?? 0);
  const subscriber = redis.duplicate({ connectionName: `${redis.options.connectionName ?? 'wafleet'}:expired` });
  subscriber.on('error', () => undefined);
  subscriber.on('message', (from: string, key: string) => {
    if (from === channel) onExpired(key);
  });
  // After a reconnect (a Sentinel failover lands on another node) the setting may be missing.
  let first = true;
  subscriber.on('ready', () => {
    if (first) return;
    void enableExpiredEvents(redis, log, 'master');
  });
  await enableExpiredEvents(redis, log, 'master');
  await subscriber.subscribe(channel);
  first = false;
  return {
    listening: ['master'],
    close: () => subscriber.disconnect(),
  };
}

async function listenOnClusterMasters(cluster: Cluster, { log, onExpired }: ExpiredKeyOptions): Promise<ExpiredKeyEvents> {
  const channel = EXPIRED_CHANNEL(0);
  const subscribers = new Map<string, Redis>();
  // Every node event retries a dead master; say so once per outage, not once per retry.
  const warned = new Set<string>();
  let closed = false;

  const subscribe = async (master: Redis): Promise<void> => {
    const address = `${master.options.host}:${master.options.port}`;
    if (subscribers.has(address)) return;
    const subscriber = master.duplicate({ connectionName: `${cluster.options.redisOptions?.connectionName ?? 'wafleet'}:expired`, lazyConnect: true });
    subscribers.set(address, subscriber);
    subscriber.on('error', () => undefined);
    subscriber.on('message', (from: string, key: string) => {
      if (from === channel) onExpired(key);
    });
    subscriber.on('ready', () => void enableExpiredEvents(master, log, address));
    try {
      await subscriber.connect();
      await subscriber.subscribe(channel);
      if (warned.delete(address)) log.info({ node: address }, 'subscribed to expired keys on the master again');
    } catch (err) {
      if (!warned.has(address)) log.warn({ node: address, err }, 'cannot subscribe to expired keys on a master; retrying at the next check');
      warned.add(address);
      subscribers.delete(address);
      subscriber.disconnect();
    }
  };

  // Masters come and go with failovers: subscribe to new ones, drop nodes that are masters no more
  // (a demoted master sends nothing for the slots it lost).
  const sync = async (): Promise<void> => {
    if (closed || cluster.status !== 'ready') return;
    const masters = cluster.nodes('master');
    const current = new Set(masters.map((m) => `${m.options.host}:${m.options.port}`));
    for (const [address, subscriber] of subscribers) {
      if (!current.has(address)) {
        subscribers.delete(address);
        subscriber.disconnect();
      }
    }
    await Promise.all(masters.map((m) => subscribe(m)));
  };
  const resync = () => void sync().catch((err) => log.warn({ err }, 'expired-key subscribers not updated'));

  cluster.on('+node', resync);
  cluster.on('-node', resync);
  cluster.on('refresh', resync);
  // A replica promoted to master raises no node event, and ioredis learns of it only when a command
  // is redirected or its slots cache is refreshed: refresh it here (the 'refresh' event resyncs).
  const timer = setInterval(() => {
    if (!closed && cluster.status === 'ready') cluster.refreshSlotsCache();
  }, MASTER_CHECK_MS);
  timer.unref();
  await sync();
  return {
    get listening() {
      return [...subscribers.keys()];
    },
    close() {
      closed = true;
      clearInterval(timer);
      cluster.off('+node', resync);
      cluster.off('-node', resync);
      cluster.off('refresh', resync);
      for (const subscriber of subscribers.values()) subscriber.disconnect();
      subscribers.clear();
    },
  };
}
