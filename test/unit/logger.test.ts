import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
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
});
