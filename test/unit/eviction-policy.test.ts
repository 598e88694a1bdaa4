import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEphemeralRedis, type LocalRedis } from '../../harness/local-redis.js';
import { assertNoEviction, EvictionPolicyError } from '../../src/shared/eviction-policy.js';
import { createLogger } from '../../src/shared/logger.js';
import { connectRedis, type RedisClient } from '../../src/shared/redis.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The shared Redis runs with the default noeviction. The refusals need a Redis of this file's own
// (the shared one's config is not ours to change while other files run on it), with users that
// cannot run INFO or CONFIG, as managed services set them up.

const silent = pino({ level: 'silent' });
let shared: TestRedis;
let lru: LocalRedis;
const clients: RedisClient[] = [];

beforeAll(async () => {
  shared = await useTestRedis();
  lru = await startEphemeralRedis(await freePort(), ['--maxmemory-policy', 'allkeys-lru']);
  const admin = await connectTo('default');
  await admin.call('ACL', ['SETUSER', 'no-config', 'on', '>pw', '~*', '&*', '+@all', '-config']);
  await admin.call('ACL', ['SETUSER', 'no-info', 'on', '>pw', '~*', '&*', '+@all', '-info']);
  await admin.call('ACL', ['SETUSER', 'neither', 'on', '>pw', '~*', '&*', '+@all', '-info', '-config']);
});
afterAll(async () => {
  for (const client of clients) client.disconnect();
  await shared?.cleanup();
  await lru?.stop();
});

async function connectTo(user: string): Promise<RedisClient> {
  const auth = user === 'default' ? '' : `${user}:pw@`;
  // No ready check: it runs INFO, which some of these users may not.
  const client = await connectRedis({
    target: { mode: 'standalone', url: `redis://${auth}127.0.0.1:${lru.port}` },
    log: silent,
    connectionName: 'eviction-policy-test',
    extra: { enableReadyCheck: false, maxRetriesPerRequest: 1 },
  });
  clients.push(client);
  return client;
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

describe('assertNoEviction', () => {
  it('passes on a noeviction Redis without a word', async () => {
    const { lines, log } = capturedLogger();
    await assertNoEviction(shared.redis, log);
    expect(lines).toEqual([]);
  });

  it.each([
    ['read through INFO memory', 'default'],
    ['read through INFO where CONFIG is refused', 'no-config'],
    ['read through CONFIG GET where INFO is refused', 'no-info'],
  ])('refuses allkeys-lru, %s, naming the setting, the node and the fix', async (_how, user) => {
    const redis = await connectTo(user);
    const error = await assertNoEviction(redis, silent).then(
      () => null,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(EvictionPolicyError);
    expect(error).toMatchObject({ code: 'redis_eviction_policy', node: `127.0.0.1:${lru.port}`, policy: 'allkeys-lru' });
    const { message } = error as EvictionPolicyError;
    expect(message).toContain(`Redis at 127.0.0.1:${lru.port} has maxmemory-policy allkeys-lru`);
    expect(message).toContain('two servers own one device');
    expect(message).toContain('CONFIG SET maxmemory-policy noeviction');
  });

  it('does not refuse a Redis that will not say, but warns once that it must be noeviction', async () => {
    const redis = await connectTo('neither');
    const { lines, log } = capturedLogger();
    await assertNoEviction(redis, log);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40 });
    expect(lines[0]!.msg).toMatch(/could not read Redis's maxmemory-policy .* it must be noeviction/);
    expect(lines[0]!.redis).toEqual([
      { node: `127.0.0.1:${lru.port}`, refused: [expect.stringMatching(/^INFO memory: NOPERM/), expect.stringMatching(/^CONFIG GET maxmemory-policy: NOPERM/)] },
    ]);
  });

  it('a Redis that cannot be reached is a failure, not an unverifiable setting', async () => {
    const redis = await connectTo('default');
    redis.disconnect();
    const error = await assertNoEviction(redis, silent).then(
      () => null,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(EvictionPolicyError);
  });
});
