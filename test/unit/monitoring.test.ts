import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterKeys } from '../../src/cluster/keys.js';
import { adminPasswordWeaknesses, loadConfig } from '../../src/config/index.js';
import { parseBasicAuth } from '../../src/monitoring/basic-auth.js';
import { escapeHtml, jsonForScript } from '../../src/monitoring/cluster-page.js';
import { discoverQueueNames } from '../../src/monitoring/queue-board.js';
import { ConfigError } from '../../src/shared/errors.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The monitor's start-up rules, its basic-auth parsing, the page's escaping, and queue discovery
// (against a real Redis with real BullMQ queues).

const STRONG = 'k3!vQ9#mZ2@xW7';

function monitorProblems(env: Record<string, string>): string[] {
  try {
    loadConfig(env, undefined, 'monitor');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('monitor configuration', () => {
  it('refuses to start without ADMIN_PASSWORD, in every environment, and says why', () => {
    for (const NODE_ENV of ['development', 'test', 'production']) {
      const problems = monitorProblems({ NODE_ENV, INTERNAL_API_KEY: 'i'.repeat(32) });
      expect(problems).toEqual([expect.stringMatching(/^ADMIN_PASSWORD: is required to start the monitor .*no default password/)]);
    }
  });

  it('refuses a weak password in production, naming each weakness but never the password', () => {
    const cases: Array<[string, Record<string, string>, RegExp]> = [
      ['Sh0rt!pw', {}, /shorter than 12 characters/],
      ['operator-on-duty', { ADMIN_USERNAME: 'Operator-On-Duty' }, /same as ADMIN_USERNAME/],
      ['abababababababab', {}, /fewer than 6 different characters/],
      ['MyPassword2026!!', {}, /well-known password/],
    ];
    for (const [password, extra, why] of cases) {
      const problems = monitorProblems({ NODE_ENV: 'production', INTERNAL_API_KEY: 'i'.repeat(32), ADMIN_PASSWORD: password, ...extra });
      expect(problems.join('\n')).toMatch(why);
      expect(problems.every((p) => p.startsWith('ADMIN_PASSWORD: '))).toBe(true);
      expect(new ConfigError(problems).message).not.toContain(password);
    }
  });

  it('allows a weak password outside production (the monitor warns instead) and a strong one in production', () => {
    expect(monitorProblems({ ADMIN_PASSWORD: 'admin' })).toEqual([]);
    expect(adminPasswordWeaknesses('admin', 'admin')).toEqual(expect.arrayContaining(['is the same as ADMIN_USERNAME']));
    expect(monitorProblems({ NODE_ENV: 'production', INTERNAL_API_KEY: 'i'.repeat(32), ADMIN_PASSWORD: STRONG })).toEqual([]);
    expect(adminPasswordWeaknesses('admin', STRONG)).toEqual([]);
  });

  it("starts with a server's environment: the server identity is not the monitor's concern", () => {
    // pm2 gives the monitor the environment every server gets; a HOSTNAME no server would accept
    // as its id must not stop the monitor.
    const config = loadConfig({ HOSTNAME: 'db', ADMIN_PASSWORD: STRONG, ADMIN_LOGIN_FAILURES_PER_MINUTE: '3' }, undefined, 'monitor');
    expect(config.monitoring).toEqual({ port: 3001, adminUsername: 'admin', adminPassword: STRONG, loginFailuresPerMinute: 3 });
    expect(() => loadConfig({ HOSTNAME: 'db', ADMIN_PASSWORD: STRONG })).toThrow(/HOSTNAME: server id "db" must be 3-128/);
  });

  it('needs no INTERNAL_API_KEY in production (a server does): it may run on an operations host', () => {
    expect(monitorProblems({ NODE_ENV: 'production', ADMIN_PASSWORD: STRONG })).toEqual([]);
    expect(() => loadConfig({ SERVER_ID: 'srv-1', NODE_ENV: 'production', ADMIN_PASSWORD: STRONG })).toThrow(/INTERNAL_API_KEY: must be set/);
  });

  it('a server needs no ADMIN_PASSWORD, even in production', () => {
    const config = loadConfig({ SERVER_ID: 'srv-1', NODE_ENV: 'production', INTERNAL_API_KEY: 'i'.repeat(32) });
    expect(config.monitoring.adminPassword).toBeUndefined();
    expect(config.monitoring.loginFailuresPerMinute).toBe(10);
  });

  it('refuses a username basic auth cannot carry', () => {
    expect(monitorProblems({ ADMIN_USERNAME: 'ops:team', ADMIN_PASSWORD: STRONG })).toEqual([expect.stringMatching(/^ADMIN_USERNAME: must not contain ':'/)]);
  });
});

describe('basic auth header', () => {
  const header = (text: string) => `Basic ${Buffer.from(text, 'utf8').toString('base64')}`;

  it('reads user and password; the password may hold colons and any UTF-8', () => {
    expect(parseBasicAuth(header('admin:s3cr:et'))).toEqual({ username: 'admin', password: 's3cr:et' });
    expect(parseBasicAuth(header('ünïcødé:pässwörd'))).toEqual({ username: 'ünïcødé', password: 'pässwörd' });
    expect(parseBasicAuth(header('admin:'))).toEqual({ username: 'admin', password: '' });
    expect(parseBasicAuth(`basic ${Buffer.from('a:b').toString('base64')}`)).toEqual({ username: 'a', password: 'b' });
  });

  it('treats anything else as no credentials', () => {
    for (const value of [undefined, '', 'Bearer abc', 'Basic', 'Basic !!!', header('no-colon'), `Basic ${'A'.repeat(3000)}`]) {
      expect(parseBasicAuth(value)).toBeNull();
    }
  });
});

describe('cluster page escaping', () => {
  it('escapes HTML and keeps a JSON data island from closing its script', () => {
    expect(escapeHtml(`<a href="x" onclick='y'>&</a>`)).toBe('&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;');
    const hostile = { reason: '</script><script>alert(1)</script><!--', sep: '\u2028\u2029' };
    const island = jsonForScript(hostile);
    expect(island).not.toMatch(/[<>&\u2028\u2029]/);
    expect(JSON.parse(island)).toEqual(hostile);
  });
});

describe('queue discovery', () => {
  let t: TestRedis;
  const queues: Queue[] = [];
  beforeAll(async () => {
    t = await useTestRedis();
  });
  afterAll(async () => {
    await Promise.all(queues.map((q) => q.close()));
    await t.cleanup();
  });

  it('finds every queue under the BullMQ prefix with SCAN, and nothing else', async () => {
    const { bullPrefix } = createClusterKeys(t.prefix);
    expect(await discoverQueueNames(t.redis, bullPrefix)).toEqual([]);
    for (const name of ['wa-out-dev-1', 'wa-out-dev-2', 'wa-sync-0']) {
      const queue = new Queue(name, { connection: t.redis, prefix: bullPrefix });
      queues.push(queue);
      await queue.add('send', { messageId: `m-${name}` }, { jobId: `m-${name}` });
    }
    // Keys that are not a queue's: another prefix, and wafleet's own keys beside the queues.
    const other = new Queue('elsewhere', { connection: t.redis, prefix: `{${t.prefix}}:notbull` });
    queues.push(other);
    await other.add('x', {});
    await t.redis.set(`{${t.prefix}}:lease:dev-1`, 'srv:1');
    expect(await discoverQueueNames(t.redis, bullPrefix)).toEqual(['wa-out-dev-1', 'wa-out-dev-2', 'wa-sync-0']);
  });
});
