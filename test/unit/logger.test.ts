import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { describe, expect, inject, it } from 'vitest';
import { createLogger } from '../../src/shared/logger.js';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...chunk.toString().trim().split('\n'));
      done();
    },
  });
  return { lines, destination };
}

describe('logger', () => {
  it('redacts secrets wherever a log call passes them', () => {
    const { lines, destination } = capture();
    const log = createLogger({ level: 'info', serverId: 'srv-1', destination });
    log.info({ INTERNAL_API_KEY: 'secret-1', config: { serviceRoleKey: 'secret-2', adminPassword: 'secret-3' } }, 'a');
    log.info({ req: { headers: { authorization: 'Bearer secret-4' } } }, 'b');
    log.child({ module: 'x' }).warn({ store: { databaseUrl: 'postgres://u:secret-5@h/db' }, password: 'secret-6' }, 'c');
    const text = lines.join('\n');
    for (let i = 1; i <= 6; i++) expect(text).not.toContain(`secret-${i}`);
    expect(text.match(/\[redacted\]/g)).toHaveLength(6);
    expect(JSON.parse(lines[0]!)).toMatchObject({ serverId: 'srv-1', msg: 'a' });
  });

  it('keeps fencing tokens and device ids readable', () => {
    const { lines, destination } = capture();
    createLogger({ level: 'info', destination }).info({ deviceId: 'd1', token: 42 }, 'lease claimed');
    expect(JSON.parse(lines[0]!)).toMatchObject({ deviceId: 'd1', token: 42 });
  });

  it('logs an error whole (stack, cause, code) but not the secrets it can carry', async () => {
    const { lines, destination } = capture();
    const log = createLogger({ level: 'info', destination });
    // A real Redis rejecting AUTH: ioredis puts the command, password included, on the error.
    const redis = new Redis(inject('redisUrl'), { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await redis.connect();
      const authError = await redis.auth('secret-7').then(
        () => null,
        (err: Error) => err,
      );
      expect(authError).toBeInstanceOf(Error);
      log.warn({ err: authError }, 'auth failed');
    } finally {
      redis.disconnect();
    }
    const cause = Object.assign(new Error('connect ECONNREFUSED postgres://app:secret-8@db.internal:5432/app'), { code: 'ECONNREFUSED' });
    log.warn({ err: new Error('store unavailable', { cause }) }, 'store down');

    const text = lines.join('\n');
    expect(text).not.toContain('secret-7');
    expect(text).not.toContain('secret-8');
    const [auth, store] = lines.map((line) => JSON.parse(line) as { err: Record<string, unknown> });
    expect(auth!.err).toMatchObject({ type: 'ReplyError', command: { name: 'auth', args: '[redacted]' } });
    expect(String(auth!.err.stack)).toContain('ReplyError');
    expect(store!.err).toMatchObject({ message: expect.stringContaining('store unavailable'), stack: expect.stringContaining('logger.test.ts') });
    expect(store!.err.cause).toMatchObject({ code: 'ECONNREFUSED', message: expect.stringContaining('postgres://app:***@db.internal') });
  });
});
