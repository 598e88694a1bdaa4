import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { startRedisCluster, startRedisSentinel, type RedisNodeAddress } from '../../harness/redis-topology.js';
import { listenForExpiredKeys, type ExpiredKeyEvents } from '../../src/cluster/expiry-events.js';
import { assertNoEviction } from '../../src/shared/eviction-policy.js';
import { connectRedis, type RedisClient, type RedisTarget } from '../../src/shared/redis.js';
import { waitUntil } from '../../harness/cluster.js';

// Expired-key events come only from the node where the key expired, and only if that node was
// told to send them: on a Cluster every master must be listened to, and a replica promoted by a
// failover must be told again. Real nodes on loopback, their settings left as redis-server starts.

const log = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const nodes = (list: string): RedisNodeAddress[] =>
  list.split(',').map((entry) => ({ host: entry.split(':')[0]!, port: Number(entry.split(':')[1]) }));
const label = (n: RedisNodeAddress) => `${n.host}:${n.port}`;

async function listen(target: RedisTarget): Promise<{ redis: RedisClient; events: ExpiredKeyEvents; expired: Set<string> }> {
  const redis = await connectRedis({ target, log, connectionName: 'expiry-test', extra: { maxRetriesPerRequest: 3 } });
  const expired = new Set<string>();
  const events = await listenForExpiredKeys({ redis, log, onExpired: (key) => expired.add(key) });
  cleanups.push(() => {
    events.close();
    redis.disconnect();
  });
  return { redis, events, expired };
}

/**
 * maxmemory-policy is per node as well: start-up must read it on every master the client writes
 * to, so turning it to allkeys-lru on `master` alone is what makes assertNoEviction refuse.
 */
async function expectEvictionCheckReads(redis: RedisClient, master: RedisNodeAddress): Promise<void> {
  await assertNoEviction(redis, log);
  const direct = await connectRedis({ target: { mode: 'standalone', url: `redis://${label(master)}` }, log, connectionName: 'eviction-probe' });
  try {
    await direct.config('SET', 'maxmemory-policy', 'allkeys-lru');
    await expect(assertNoEviction(redis, log)).rejects.toThrow(`Redis at ${label(master)} has maxmemory-policy allkeys-lru`);
  } finally {
    await direct.config('SET', 'maxmemory-policy', 'noeviction');
    direct.disconnect();
  }
}

/** Sets `key` to expire at once and waits for its event (retrying the write across a failover). */
async function expectExpiredEvent(redis: RedisClient, expired: Set<string>, key: string): Promise<void> {
  await waitUntil(
    async () => {
      if (expired.has(key)) return true;
      await redis.set(key, '1', 'PX', 20).catch(() => undefined);
      return false;
    },
    20_000,
    () => `no expired event for ${key}`,
  );
}

describe('expired-key events', () => {
  it('on a Cluster: from every master, and from a replica promoted by a failover', async () => {
    const cluster = await startRedisCluster();
    cleanups.push(() => cluster.stop());
    const { redis, events, expired } = await listen({ mode: 'cluster', nodes: nodes(cluster.seeds), tls: false });
    expect([...events.listening].sort()).toEqual(nodes(cluster.seeds).map(label).sort());

    // One hash tag per master, so every master has a key expire.
    const tagOn = new Map<string, string>();
    for (let i = 0; tagOn.size < 3 && i < 200; i++) {
      const master = label(await cluster.masterOf(`{t${i}}`));
      if (!tagOn.has(master)) tagOn.set(master, `{t${i}}`);
    }
    expect(tagOn.size).toBe(3);
    await expectEvictionCheckReads(redis, nodes(cluster.seeds).at(-1)!);
    for (const tag of tagOn.values()) await expectExpiredEvent(redis, expired, `${tag}:before`);

    const [oldMaster, tag] = [...tagOn.entries()][0]!;
    const promoted = await cluster.failover(tag, 'kill');
    await waitUntil(
      async () => events.listening.includes(label(promoted)) && !events.listening.includes(oldMaster),
      20_000,
      () => `listening on ${events.listening.join(', ')}; expected ${label(promoted)} instead of ${oldMaster}`,
    );
    await expectExpiredEvent(redis, expired, `${tag}:after-failover`);
  });

  it('under Sentinel: from the master, and from the replica that took its place', async () => {
    const sentinel = await startRedisSentinel();
    cleanups.push(() => sentinel.stop());
    const { redis, events, expired } = await listen({ mode: 'sentinel', sentinels: nodes(sentinel.sentinels), masterName: sentinel.masterName, tls: false });
    expect(events.listening).toEqual(['master']);
    await expectEvictionCheckReads(redis, await sentinel.master());
    await expectExpiredEvent(redis, expired, 'before');

    const promoted = await sentinel.failover('kill');
    // The promoted replica was started without keyspace events: the listener turned them on.
    await expectExpiredEvent(redis, expired, 'after-failover');
    const probe = await connectRedis({ target: { mode: 'standalone', url: `redis://${label(promoted)}` }, log, connectionName: 'expiry-probe' });
    try {
      expect(((await probe.config('GET', 'notify-keyspace-events')) as string[])[1]).toMatch(/E.*x|x.*E/);
    } finally {
      probe.disconnect();
    }
  });
});
