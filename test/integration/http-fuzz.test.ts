import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '../../harness/cluster.js';
import type { ServerProcess } from '../../harness/processes.js';
import { seededRandom } from '../../harness/chaos/schedule.js';

// Thousands of malformed requests against a real server process: every answer must be a 4xx,
// the process must stay up without an unhandled rejection, and nothing may be written.

const INTERNAL_KEY = 'fuzz-internal-key-0123456789abcdef';
const REQUESTS = 2400;
let cluster: TestCluster;
let server: ServerProcess;
let userKey: string;

const BAD_IDS = [
  'not-a-uuid',
  '..%2F..%2Fetc%2Fpasswd',
  '%2e%2e',
  '..',
  "1' OR '1'='1",
  '00000000-0000-0000-0000-00000000000g',
  'x'.repeat(3000),
  '%00',
  '%F0%9F%92%A9',
  '-1',
  '{}',
  'null',
];
const BAD_SERVER_IDS = ['admin', 'ab', '..', 'a%2F%2Fb', 'x'.repeat(200), 'ROOT', 'srv%20one', '%00srv'];
const BAD_BODIES: Array<{ raw: string; type?: string }> = [
  { raw: '{"name":', type: 'application/json' },
  { raw: '{"name": 123}', type: 'application/json' },
  { raw: '{"name": ["a"], "userId": {}}', type: 'application/json' },
  { raw: '[]', type: 'application/json' },
  { raw: 'null', type: 'application/json' },
  { raw: '"just a string"', type: 'application/json' },
  { raw: `{"name": "${'y'.repeat(400_000)}"}`, type: 'application/json' },
  { raw: '{"name": "ok", "userId": "nope", "connectionMethod": "sms"}', type: 'application/json' },
  { raw: '{"name": "ok", "__proto__": {"admin": true}}', type: 'application/json' },
  { raw: '{"name":"ok","webhookUrl":"file:///etc/passwd"}', type: 'application/json' },
  { raw: '{"priority": "high", "maxCapacity": -5}', type: 'application/json' },
  { raw: 'name=ok', type: 'application/x-www-form-urlencoded' },
  { raw: '<xml/>', type: 'text/xml' },
  { raw: '{"name":"ok"}', type: 'text/plain' },
  { raw: '\u0000\u0001\u0002', type: 'application/json' },
  { raw: '{"name":"ok"}', type: 'application/json; charset=utf-16' },
];

interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

function generate(count: number): FuzzRequest[] {
  // Deterministic, so a failure can be replayed.
  const random = seededRandom(20261128);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const requests: FuzzRequest[] = [];
  const withBody = (request: FuzzRequest): FuzzRequest => {
    const body = pick(BAD_BODIES);
    return { ...request, body: body.raw, headers: { ...request.headers, ...(body.type ? { 'content-type': body.type } : {}) } };
  };
  while (requests.length < count) {
    const auth = pick(['none', 'forged', 'basic', 'empty', 'internal', 'user'] as const);
    const headers: Record<string, string> =
      auth === 'none'
        ? {}
        : auth === 'forged'
          ? { authorization: `Bearer wfk_${randomUUID()}` }
          : auth === 'basic'
            ? { authorization: 'Basic YWRtaW46YWRtaW4=' }
            : auth === 'empty'
              ? { authorization: 'Bearer ' }
              : { authorization: `Bearer ${auth === 'internal' ? INTERNAL_KEY : userKey}` };
    const device = pick(BAD_IDS);
    const serverId = pick(BAD_SERVER_IDS);
    // With a valid key every request is malformed somewhere (id, query or body), or names a
    // device that does not exist; without one, anything goes: it must be refused before use.
    const templates: Array<() => FuzzRequest> = [
      () => ({ method: 'GET', path: `/api/devices/${device}`, headers }),
      () => ({ method: 'GET', path: `/api/devices/${randomUUID()}`, headers }),
      () => ({ method: 'POST', path: `/api/devices/${device}/connect`, headers }),
      () => ({ method: 'POST', path: `/api/devices/${randomUUID()}/connect`, headers }),
      () => ({ method: 'POST', path: `/api/devices/${device}/disconnect`, headers }),
      () => ({ method: 'POST', path: `/api/devices/${device}/logout`, headers }),
      () => ({ method: 'DELETE', path: `/api/devices/${device}`, headers }),
      () => ({ method: 'DELETE', path: `/api/devices/${randomUUID()}`, headers }),
      () => ({ method: 'GET', path: `/api/devices/${device}/qr`, headers }),
      () => ({ method: 'GET', path: `/api/devices/${device}/pairing-code`, headers }),
      () => withBody({ method: 'POST', path: '/api/devices', headers }),
      () => ({ method: 'GET', path: `/api/devices?limit=${pick(['abc', '-1', '0', '99999', '1e9'])}`, headers }),
      () => ({ method: 'GET', path: `/api/devices?userId=${device}`, headers }),
      () => ({ method: 'GET', path: '/api/devices?limit=5&evil=1', headers }),
      () => withBody({ method: 'PUT', path: `/api/servers/${pick([serverId, 'fuzz-srv'])}`, headers }),
      () => withBody({ method: 'PATCH', path: `/api/servers/${pick([serverId, 'fuzz-srv'])}`, headers }),
      () => ({ method: 'POST', path: `/api/servers/${serverId}/drain`, headers }),
      () => ({ method: 'POST', path: '/api/servers/fuzz-missing/drain', headers }),
      () => ({ method: 'POST', path: `/api/servers/${serverId}/health-check`, headers }),
      () => ({ method: 'DELETE', path: `/api/servers/${serverId}`, headers }),
      () => withBody({ method: 'POST', path: `/api/users/${pick([device, randomUUID()])}/api-keys`, headers }),
      () => ({ method: 'DELETE', path: `/api/api-keys/${pick([device, randomUUID()])}`, headers }),
      () => ({ method: pick(['GET', 'POST', 'PUT']), path: `/api/${pick(['x', '../etc/passwd', 'devices/../../admin', '%2e%2e/servers'])}`, headers }),
    ];
    requests.push(pick(templates)());
  }
  return requests;
}

beforeAll(async () => {
  cluster = await startTestCluster();
  server = await cluster.start('fuzz-srv', {
    INTERNAL_API_KEY: INTERNAL_KEY,
    RATE_LIMIT_PER_MINUTE: '1000000',
    RATE_LIMIT_IP_PER_MINUTE: '1000000',
    RATE_LIMIT_HEALTH_CHECK_PER_MINUTE: '1000000',
  });
  const created = await fetch(`http://127.0.0.1:${server.port}/api/users/${randomUUID()}/api-keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${INTERNAL_KEY}`, 'content-type': 'application/json' },
    body: '{}',
  });
  userKey = ((await created.json()) as { key: string }).key;
});
afterAll(async () => {
  await cluster?.stop();
});

async function snapshot(): Promise<Record<string, unknown>> {
  const client = new pg.Client({ connectionString: cluster.db.url });
  await client.connect();
  try {
    const count = async (table: string) => Number((await client.query(`select count(*)::int as n from ${table}`)).rows[0].n);
    const keys = (await cluster.redis.redis.keys(`{${cluster.redis.prefix}}:*`))
      // Rate-limit counters and the server's own heartbeat keys change by design, and the
      // start-up claim on the server id expires one TTL after start-up, whenever that falls.
      .filter((k) => !k.includes(':ratelimit:') && !k.includes(':lock:') && !k.includes(':server-claim:'))
      .sort();
    return {
      devices: await count('devices'),
      apiKeys: await count('api_keys'),
      servers: (await client.query('select id, server_url, max_capacity, priority from backend_servers order by id')).rows,
      sessions: await count('device_sessions'),
      keys,
      inbox: await cluster.redis.redis.xlen(cluster.keys.inbox('fuzz-srv')),
    };
  } finally {
    await client.end();
  }
}

describe('fuzzing the HTTP API', () => {
  it(`answers ${REQUESTS} malformed requests with 4xx, stays up, and writes nothing`, async () => {
    const before = await snapshot();
    const requests = generate(REQUESTS);
    const unexpected: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < requests.length) {
          const request = requests[next++]!;
          let status: number;
          try {
            const res = await fetch(`http://127.0.0.1:${server.port}${request.path}`, {
              method: request.method,
              headers: request.headers,
              body: request.body,
            });
            status = res.status;
            const text = await res.text();
            if (status >= 400 && status < 500 && status !== 431 && status !== 414) {
              const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
              if (!body.error?.code || !body.error.message) unexpected.push(`${request.method} ${request.path.slice(0, 80)}: ${status} without the error shape`);
            }
          } catch (err) {
            unexpected.push(`${request.method} ${request.path.slice(0, 80)}: ${(err as Error).message}`);
            continue;
          }
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          if (status < 400 || status >= 500) unexpected.push(`${request.method} ${request.path.slice(0, 80)} -> ${status}`);
        }
      }),
    );
    console.log(`fuzz: ${REQUESTS} requests, statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
    expect(unexpected).toEqual([]);
    expect(statuses.size).toBeGreaterThanOrEqual(6);

    // Still up, and nothing unhandled in its log.
    expect((await fetch(`http://127.0.0.1:${server.port}/health`)).status).toBe(200);
    expect(server.output()).not.toMatch(/unhandled/i);
    expect(server.output()).not.toMatch(/"level":50/);
    expect(await snapshot()).toEqual(before);
  });
});
