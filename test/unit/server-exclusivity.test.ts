import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEphemeralRedis, type LocalRedis } from '../../harness/local-redis.js';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { assertSoleServer, createBootId, isBootAlive, ServerIdInUseError, type SoleServer } from '../../src/cluster/server-exclusivity.js';
import { createLogger, type Logger } from '../../src/shared/logger.js';
import { connectRedis, type RedisClient } from '../../src/shared/redis.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// Against the shared Redis, except where Redis must refuse CLIENT LIST or CLIENT SETNAME: users
// that cannot, as managed services set them up, live on a Redis of this file's own (the shared
// one's users are not ours to change while other files run on it).

const silent = pino({ level: 'silent' });
const URL_A = 'http://10.0.0.1:3000';
let shared: TestRedis;
let keys: ClusterKeys;
let restricted: LocalRedis;
const clients: RedisClient[] = [];

beforeAll(async () => {
  shared = await useTestRedis();
  keys = createClusterKeys(shared.prefix);
  restricted = await startEphemeralRedis(await freePort());
  const admin = await connect(`redis://127.0.0.1:${restricted.port}`, 'admin');
  await admin.call('ACL', ['SETUSER', 'no-list', 'on', '>pw', '~*', '&*', '+@all', '-client|list']);
  await admin.call('ACL', ['SETUSER', 'no-names', 'on', '>pw', '~*', '&*', '+@all', '-client|setname']);
});
afterAll(async () => {
  for (const client of clients) client.disconnect();
  await shared?.cleanup();
  await restricted?.stop();
});

async function connect(url: string, connectionName: string): Promise<RedisClient> {
  const client = await connectRedis({ target: { mode: 'standalone', url }, log: silent, connectionName, extra: { maxRetriesPerRequest: 1 } });
  clients.push(client);
  return client;
}

/** A process's main connection: named for its server id and boot, as main.ts names it. */
const processConnection = (serverId: string, bootId: string, url = shared.url) => connect(url, `wafleet:${serverId}:${bootId}`);

/** The server key as the heartbeat of boot `bootId` writes it, `ageMs` after its last beat. */
async function advertise(redis: RedisClient, serverId: string, bootId: string, ageMs = 0, ttlMs = 10_000): Promise<void> {
  await redis.hset(keys.server(serverId), { bootId, url: URL_A, heartbeatAt: Date.now() - ageMs });
  await redis.pexpire(keys.server(serverId), ttlMs - ageMs);
}

async function until(check: () => Promise<boolean>, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function capturedLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of chunk.toString().trim().split('\n')) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, log: createLogger({ level: 'info', destination }) };
}

async function sole(redis: RedisClient, serverId: string, bootId: string, extra: { ttlMs?: number; log?: Logger } = {}): Promise<SoleServer> {
  return assertSoleServer({ redis, keys, serverId, bootId, url: 'http://10.0.0.2:3000', ttlMs: extra.ttlMs ?? 10_000, log: extra.log ?? silent });
}

describe('isBootAlive', () => {
  it('is true while a connection named for the boot is open, false once it closed', async () => {
    const bootId = createBootId();
    expect(bootId).toMatch(/^[0-9a-f]{12}$/);
    const other = await connect(shared.url, `wafleet:srv-alive:${bootId}:inbox`);
    expect(await isBootAlive(shared.redis, bootId)).toBe(true);
    await other.quit();
    await until(async () => (await isBootAlive(shared.redis, bootId)) === false);
  });

  it('is false for a boot that never connected, and unknown for an id in another format', async () => {
    expect(await isBootAlive(shared.redis, createBootId())).toBe(false);
    expect(await isBootAlive(shared.redis, '4242-m3x9k2')).toBe('unknown');
  });

  it('is unknown where Redis refuses CLIENT LIST, or does not apply connection names', async () => {
    const bootId = createBootId();
    await connect(`redis://127.0.0.1:${restricted.port}`, `wafleet:srv-x:${bootId}`);
    const noList = await connect(`redis://no-list:pw@127.0.0.1:${restricted.port}`, 'probe-no-list');
    expect(await isBootAlive(noList, createBootId())).toBe('unknown');
    // Names refused: every boot would look dead, so it must not say false.
    const noNames = await connect(`redis://no-names:pw@127.0.0.1:${restricted.port}`, 'probe-no-names');
    expect(await isBootAlive(noNames, createBootId())).toBe('unknown');
  });
});

describe('assertSoleServer', () => {
  it('claims a free server id for one TTL; confirm() claims it again, or is a no-op once the heartbeat names this boot', async () => {
    const bootId = createBootId();
    const claim = await sole(shared.redis, 'srv-free', bootId, { ttlMs: 300 });
    expect(claim.predecessor).toBeNull();
    expect(await shared.redis.hget(keys.serverClaim('srv-free'), 'bootId')).toBe(bootId);
    expect(await shared.redis.pttl(keys.serverClaim('srv-free'))).toBeGreaterThan(200);
    await until(async () => (await shared.redis.exists(keys.serverClaim('srv-free'))) === 0);
    await claim.confirm();
    expect(await shared.redis.hget(keys.serverClaim('srv-free'), 'bootId')).toBe(bootId);
    await advertise(shared.redis, 'srv-free', bootId, 0, 5000);
    await shared.redis.del(keys.serverClaim('srv-free'));
    await claim.confirm();
    expect(await shared.redis.exists(keys.serverClaim('srv-free'))).toBe(0);
  });

  it('confirm() refuses when a live process claimed the id after this one\'s claim lapsed (a start longer than the TTL)', async () => {
    const slow = await sole(shared.redis, 'srv-slow', createBootId(), { ttlMs: 200 });
    await until(async () => (await shared.redis.exists(keys.serverClaim('srv-slow'))) === 0);
    const other = createBootId();
    await sole(await processConnection('srv-slow', other), 'srv-slow', other);
    await expect(slow.confirm()).rejects.toThrow(`in use by a server starting at http://10.0.0.2:3000 (boot ${other}, no heartbeat yet)`);
  });

  it('refuses while a live boot heartbeats under the id, naming its URL and heartbeat age', async () => {
    const other = createBootId();
    await processConnection('srv-twin', other);
    await advertise(shared.redis, 'srv-twin', other, 1200);
    const refusal = sole(shared.redis, 'srv-twin', createBootId());
    await expect(refusal).rejects.toBeInstanceOf(ServerIdInUseError);
    await expect(refusal).rejects.toThrow(
      new RegExp(`SERVER_ID "srv-twin" is already in use by a live server at ${URL_A} \\(boot ${other}, last heartbeat 1\\.[2-4] s ago\\)\\. .*give this one its own SERVER_ID`),
    );
    expect(await shared.redis.exists(keys.serverClaim('srv-twin'))).toBe(0);
  });

  it('takes a boot with a fresh heartbeat but no connection as dead within half a second, and reports it', async () => {
    const crashed = createBootId();
    await advertise(shared.redis, 'srv-restarted', crashed, 500);
    const { lines, log } = capturedLogger();
    const started = Date.now();
    const claim = await sole(shared.redis, 'srv-restarted', createBootId(), { log });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(claim.predecessor).toMatchObject({ bootId: crashed, url: URL_A });
    expect(claim.predecessor!.heartbeatAgeMs).toBeGreaterThanOrEqual(500);
    expect(lines.some((l) => l.level === 30 && String(l.msg).includes(`previous boot ${crashed}`) && String(l.msg).includes('taken as dead'))).toBe(true);
  });

  it('does not take a live boot whose connection dropped for a moment as dead: ioredis reconnects it, named again', async () => {
    const other = createBootId();
    const connection = await processConnection('srv-blip', other);
    await advertise(shared.redis, 'srv-blip', other, 100);
    await shared.redis.client('KILL', 'ID', String(await connection.client('ID')));
    await expect(sole(shared.redis, 'srv-blip', createBootId())).rejects.toThrow(`in use by a live server at ${URL_A} (boot ${other}`);
  });

  it('of two processes starting at once with one id, exactly one gets it; the other is told it is starting', async () => {
    const boots = [createBootId(), createBootId()];
    const connections = await Promise.all(boots.map((b) => processConnection('srv-race', b)));
    const results = await Promise.allSettled(boots.map((b, i) => sole(connections[i]!, 'srv-race', b)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    expect(refused.reason).toBeInstanceOf(ServerIdInUseError);
    expect(String(refused.reason.message)).toMatch(/in use by a server starting at http:\/\/10\.0\.0\.2:3000 \(boot [0-9a-f]{12}, no heartbeat yet\)/);
  });

  describe('where Redis cannot list its clients', () => {
    let noList: RedisClient;
    beforeAll(async () => {
      noList = await connect(`redis://no-list:pw@127.0.0.1:${restricted.port}`, 'wafleet:srv-nolist:probe');
    });

    it('waits out the other boot heartbeat TTL, saying so once, then claims', async () => {
      const ttlMs = 600;
      await noList.hset(keys.server('srv-gone'), { bootId: createBootId(), url: URL_A, heartbeatAt: Date.now() });
      await noList.pexpire(keys.server('srv-gone'), ttlMs);
      const { lines, log } = capturedLogger();
      const started = Date.now();
      await assertSoleServer({ redis: noList, keys, serverId: 'srv-gone', bootId: createBootId(), url: 'http://10.0.0.2:3000', ttlMs, log });
      expect(Date.now() - started).toBeGreaterThanOrEqual(ttlMs - 100);
      const warnings = lines.filter((l) => l.level === 40);
      expect(warnings).toHaveLength(1);
      expect(String(warnings[0]!.msg)).toMatch(/cannot tell whether the other boot .* is alive; falling back to its heartbeat TTL/);
    });

    it('refuses when the other boot keeps heartbeating', async () => {
      const ttlMs = 600;
      const other = createBootId();
      const beat = () => noList.pipeline().hset(keys.server('srv-busy'), { bootId: other, url: URL_A, heartbeatAt: Date.now() }).pexpire(keys.server('srv-busy'), ttlMs).exec();
      await beat();
      const beats = setInterval(() => void beat(), ttlMs / 3);
      try {
        const refusal = assertSoleServer({ redis: noList, keys, serverId: 'srv-busy', bootId: createBootId(), url: 'http://10.0.0.2:3000', ttlMs, log: silent });
        await expect(refusal).rejects.toThrow(`already in use by a live server at ${URL_A} (boot ${other}, last heartbeat`);
      } finally {
        clearInterval(beats);
      }
    });
  });
});
