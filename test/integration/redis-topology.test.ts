import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Cluster, Redis } from 'ioredis';
import { redisAnswers } from '../../harness/local-redis.js';
import {
  startRedisCluster,
  startRedisSentinel,
  type LocalRedisCluster,
  type LocalRedisSentinel,
  type RedisNodeAddress,
} from '../../harness/redis-topology.js';

// Proves the harness itself: later suites rely on its failovers being real (the data moved, the old master is
// gone or demoted) and on stop() leaving nothing behind.

function addresses(list: string): RedisNodeAddress[] {
  return list.split(',').map((entry) => {
    const [host, port] = entry.split(':');
    return { host: host ?? '', port: Number(port) };
  });
}

/** Asks one node directly, bypassing any client's routing, so the answer is about that node. */
async function onNode(node: RedisNodeAddress, command: string, ...args: string[]): Promise<unknown> {
  const client = new Redis({ host: node.host, port: node.port, lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    return await client.call(command, args);
  } finally {
    client.disconnect();
  }
}

async function expectAllStopped(nodes: readonly RedisNodeAddress[]): Promise<void> {
  const answering = await Promise.all(nodes.map((node) => redisAnswers(node.host, node.port, 500)));
  expect(answering).toEqual(nodes.map(() => false));
}

describe('startRedisCluster', () => {
  const key = '{wa}:x';
  let cluster: LocalRedisCluster | undefined;
  let client: Cluster | undefined;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = new Cluster(addresses(cluster.seeds));
    // Connection errors while a master is down are expected; the assertions check that the client recovers.
    client.on('error', () => {});
  });
  afterAll(async () => {
    client?.disconnect();
    await cluster?.stop();
  });

  it('starts 3 masters with one replica each, the seeds being the masters', async () => {
    expect(cluster!.nodes).toHaveLength(6);
    const seeds = addresses(cluster!.seeds);
    expect(seeds).toHaveLength(3);
    for (const seed of seeds) expect((await onNode(seed, 'ROLE')) as unknown[]).toContain('master');
    expect(seeds).toContainEqual(await cluster!.masterOf(key));
  });

  it('manual failover hands the slot to a replica that has the data', async () => {
    await client!.set(key, 'before-manual');
    const old = await cluster!.masterOf(key);

    const next = await cluster!.failover(key, 'manual');

    expect(next).not.toEqual(old);
    expect(await cluster!.masterOf(key)).toEqual(next);
    expect(await onNode(next, 'GET', key)).toBe('before-manual');
    expect(((await onNode(old, 'ROLE')) as unknown[])[0]).toBe('slave');
    expect(await client!.get(key)).toBe('before-manual');
  });

  it('kill failover promotes a replica that kept the WAIT-acknowledged write; the killed node rejoins as a replica', async () => {
    // A pipeline keeps WAIT on the connection that did the write (it has no key to route by).
    const replies = await client!.pipeline().set(key, 'before-kill').call('WAIT', '1', '1000').exec();
    expect(replies).toEqual([[null, 'OK'], [null, 1]]);
    const old = await cluster!.masterOf(key);

    const next = await cluster!.failover(key, 'kill');

    expect(next).not.toEqual(old);
    expect(await redisAnswers(old.host, old.port, 500)).toBe(false);
    expect(await onNode(next, 'GET', key)).toBe('before-kill');
    expect(await client!.get(key)).toBe('before-kill');

    await cluster!.restartNode(old);
    expect(((await onNode(old, 'ROLE')) as unknown[]).slice(0, 3)).toEqual(['slave', next.host, next.port]);
    expect(await cluster!.masterOf(key)).toEqual(next);
  });

  it('stop() ends every node and may be called twice', async () => {
    client!.disconnect();
    await cluster!.stop();
    await cluster!.stop();
    await expectAllStopped(cluster!.nodes);
  });
});

describe('startRedisSentinel', () => {
  const key = 'topology:sentinel';
  let sentinel: LocalRedisSentinel | undefined;
  let client: Redis | undefined;

  /** Which node the sentinel-aware client is really talking to, and whether it takes writes there. */
  async function clientReachesMaster(expected: RedisNodeAddress): Promise<void> {
    expect(await client!.set(`${key}:probe`, String(Date.now()))).toBe('OK');
    const server = await client!.info('server');
    expect(Number(/tcp_port:(\d+)/.exec(server)?.[1])).toBe(expected.port);
  }

  beforeAll(async () => {
    sentinel = await startRedisSentinel();
    client = new Redis({ sentinels: addresses(sentinel.sentinels), name: sentinel.masterName });
    // Connection errors while the master is down are expected; the assertions check that the client recovers.
    client.on('error', () => {});
  });
  afterAll(async () => {
    client?.disconnect();
    await sentinel?.stop();
  });

  it('starts a master and a replica watched by 3 sentinels', async () => {
    expect(addresses(sentinel!.sentinels)).toHaveLength(3);
    expect(sentinel!.dataNodes).toHaveLength(2);
    const master = await sentinel!.master();
    expect(sentinel!.dataNodes).toContainEqual(master);
    await clientReachesMaster(master);
  });

  it('manual failover: the client follows to the new master and reads the key', async () => {
    await client!.set(key, 'before-manual');
    expect(await client!.call('WAIT', ['1', '1000'])).toBe(1);
    const old = await sentinel!.master();

    const next = await sentinel!.failover('manual');

    expect(next).not.toEqual(old);
    expect(await sentinel!.master()).toEqual(next);
    expect(((await onNode(old, 'ROLE')) as unknown[]).slice(0, 3)).toEqual(['slave', next.host, next.port]);
    await clientReachesMaster(next);
    expect(await client!.get(key)).toBe('before-manual');
  });

  it('kill failover: the WAIT-acknowledged write survives and the client follows; the killed node comes back as a replica', async () => {
    await client!.set(key, 'before-kill');
    expect(await client!.call('WAIT', ['1', '1000'])).toBe(1);
    const old = await sentinel!.master();

    const next = await sentinel!.failover('kill');

    expect(next).not.toEqual(old);
    expect(await redisAnswers(old.host, old.port, 500)).toBe(false);
    expect(await onNode(next, 'GET', key)).toBe('before-kill');
    await clientReachesMaster(next);
    expect(await client!.get(key)).toBe('before-kill');

    await sentinel!.restartNode(old);
    expect(((await onNode(old, 'ROLE')) as unknown[]).slice(0, 3)).toEqual(['slave', next.host, next.port]);
  });

  it('stop() ends every data node and sentinel and may be called twice', async () => {
    client!.disconnect();
    await sentinel!.stop();
    await sentinel!.stop();
    await expectAllStopped([...sentinel!.dataNodes, ...addresses(sentinel!.sentinels)]);
  });
});
