import http from 'node:http';
import { BlockList, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createGuardedHttpClient, OutboundRequestError, screenUserUrl, type GuardedHttpOptions } from '../../src/shared/guarded-http.js';

// The guarded client against real sockets: listeners that count every connection made to them,
// so "refused" means no connection at all, not an error after one.

interface Listener {
  port: number;
  /** Connections accepted so far. */
  connections: number;
  requests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }>;
  url(path?: string, host?: string): string;
}

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/**
 * A listener on `host`; without one, on every local address (IPv6 and IPv4 where the machine has
 * both), so 127.0.0.1, [::1] and localhost all reach it.
 */
async function listen(handler: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void, host?: string): Promise<Listener> {
  const listener: Listener = { port: 0, connections: 0, requests: [], url: (path = '/', at = host ?? '127.0.0.1') => `http://${at}:${listener.port}${path}` };
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      listener.requests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      handler(req, res, body);
    });
  });
  server.on('connection', () => (listener.connections += 1));
  servers.push(server);
  await new Promise<void>((resolve) => (host ? server.listen(0, host, resolve) : server.listen(0, resolve)));
  listener.port = (server.address() as AddressInfo).port;
  return listener;
}

const ok = (_req: http.IncomingMessage, res: http.ServerResponse) => res.end('ok');
const redirectTo = (location: string, status = 302) => (_req: http.IncomingMessage, res: http.ServerResponse) => res.writeHead(status, { location }).end();

const client = (options: Partial<GuardedHttpOptions> = {}) => createGuardedHttpClient({ allowPrivate: false, timeoutMs: 2000, maxBytes: 1_000_000, ...options });

/** The error a request ends with; fails the test when it succeeds. */
async function failure(request: Promise<unknown>): Promise<OutboundRequestError> {
  const err: unknown = await request.then(
    () => new Error('the request succeeded'),
    (e: unknown) => e,
  );
  if (!(err instanceof OutboundRequestError)) throw err;
  return err;
}

describe('guarded http client', () => {
  it.each([
    ['loopback', (port: number) => `http://127.0.0.1:${port}/`],
    ['loopback, another form', (port: number) => `http://0x7f.1:${port}/`],
    ['"this host"', (port: number) => `http://0.0.0.0:${port}/`],
    ['IPv6 loopback', (port: number) => `http://[::1]:${port}/`],
    ['IPv4-mapped loopback', (port: number) => `http://[::ffff:127.0.0.1]:${port}/`],
    ['IPv4-compatible loopback', (port: number) => `http://[::127.0.0.1]:${port}/`],
    ['a name that resolves to loopback', (port: number) => `http://localhost:${port}/`],
    ['private (10/8)', (port: number) => `http://10.0.0.1:${port}/`],
    ['private (192.168/16)', (port: number) => `http://192.168.1.1:${port}/`],
    ['cloud metadata', () => 'http://169.254.169.254/latest/meta-data/iam/security-credentials/'],
    ['cloud metadata over IPv6', () => 'http://[fd00:ec2::254]/latest/meta-data/'],
  ])('refuses %s without connecting', async (_what, urlFor) => {
    const target = await listen(ok);
    const err = await failure(client().request(urlFor(target.port)));
    expect(err.code).toBe('blocked_address');
    expect(err.message).toMatch(/^GET http:\/\/.* refused: .*is a loopback, private, link-local or reserved address$/);
    expect(target.connections).toBe(0);
  });

  it('lets every address through with allowPrivate, and returns status, headers and body', async () => {
    const target = await listen((req, res, body) => res.writeHead(201, { 'x-seen': `${req.method}:${body}` }).end('made'));
    const guarded = client({ allowPrivate: true });
    const got = await guarded.request(target.url('/files/a.png?size=2'));
    expect(got.status).toBe(201);
    expect(got.headers['x-seen']).toBe('GET:');
    expect(got.body.toString()).toBe('made');
    const posted = await guarded.request(target.url('/hook', 'localhost'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"event":"sent"}' });
    expect(posted.headers['x-seen']).toBe('POST:{"event":"sent"}');
    expect(target.requests.map((r) => [r.method, r.url])).toEqual([
      ['GET', '/files/a.png?size=2'],
      ['POST', '/hook'],
    ]);
    expect(target.requests[1]!.headers).toMatchObject({ 'content-type': 'application/json', 'content-length': '16', 'user-agent': 'wafleet' });
  });

  it('names the URL in its errors without credentials or query', async () => {
    const target = await listen(ok);
    const err = await failure(client().request(`http://admin:hunter2@127.0.0.1:${target.port}/media/a.png?signature=s3cr3t#frag`));
    expect(err.message).toContain(`GET http://127.0.0.1:${target.port}/media/a.png refused`);
    expect(err.message).not.toMatch(/hunter2|admin|s3cr3t|frag/);
  });

  it.each([
    { given: 'an address', firstHost: '127.0.0.1', refusedHost: '127.0.0.2', location: (port: number) => `http://127.0.0.2:${port}/latest/meta-data/` },
    { given: 'a name', firstHost: '127.0.0.2', refusedHost: '127.0.0.1', location: (port: number) => `http://localhost:${port}/latest/meta-data/` },
  ])('follows no redirect to a refused address given as $given: the refused listener sees nothing', async ({ firstHost, refusedHost, location }) => {
    // Two loopback addresses stand in for a public one (first hop) and a private one (refused).
    const refusedTarget = await listen(ok, refusedHost);
    const first = await listen(redirectTo(location(refusedTarget.port)), firstHost);
    const blocked = new BlockList();
    blocked.addAddress(refusedHost);
    const err = await failure(client({ blocked }).request(first.url('/cat.jpg', firstHost)));
    expect(err.code).toBe('blocked_address');
    expect(first.requests).toHaveLength(1);
    expect(refusedTarget.connections).toBe(0);

    // The same redirect with nothing refused reaches it: the listener could have seen it.
    const got = await client({ blocked: new BlockList() }).request(first.url('/cat.jpg', firstHost));
    expect(got.body.toString()).toBe('ok');
    expect(refusedTarget.requests.map((r) => r.url)).toEqual(['/latest/meta-data/']);
  });

  it('a 303 after a POST becomes a GET without the body, and credentials stay with the origin they were meant for', async () => {
    const second = await listen(ok, '127.0.0.2');
    const first = await listen(redirectTo(second.url('/done', '127.0.0.2'), 303));
    await client({ allowPrivate: true }).request(first.url('/hook'), {
      method: 'POST',
      headers: { Authorization: 'Bearer token', 'content-type': 'application/json', 'x-event': 'sent' },
      body: '{"a":1}',
    });
    expect(first.requests[0]).toMatchObject({ method: 'POST', body: '{"a":1}', headers: { authorization: 'Bearer token' } });
    expect(second.requests[0]).toMatchObject({ method: 'GET', url: '/done', body: '', headers: { 'x-event': 'sent' } });
    expect(second.requests[0]!.headers).not.toHaveProperty('authorization');
    expect(second.requests[0]!.headers).not.toHaveProperty('content-type');
  });

  it('stops after maxRedirects', async () => {
    let hops = 0;
    const loop = await listen((_req, res) => res.writeHead(307, { location: `/hop-${++hops}` }).end());
    const err = await failure(client({ allowPrivate: true, maxRedirects: 3 }).request(loop.url('/start')));
    expect(err.code).toBe('too_many_redirects');
    expect(err.message).toMatch(/redirected more than 3 times$/);
    expect(loop.requests.map((r) => r.url)).toEqual(['/start', '/hop-1', '/hop-2', '/hop-3']);
  });

  it('refuses what is not an http(s) URL, given or redirected to', async () => {
    expect((await failure(client().request('not a url'))).code).toBe('bad_url');
    expect((await failure(client().request('file:///etc/passwd'))).code).toBe('bad_url');
    const first = await listen(redirectTo('file:///etc/passwd'));
    const err = await failure(client({ allowPrivate: true }).request(first.url()));
    expect(err).toMatchObject({ code: 'bad_url', message: 'file:///etc/passwd is not an http:// or https:// URL' });
  });

  it.each([
    ['never answers', () => undefined],
    ['never finishes its body', (_req: http.IncomingMessage, res: http.ServerResponse) => res.writeHead(200).write('partial')],
  ])('ends with a timeout when the server %s', async (_what, handler) => {
    const slow = await listen(handler);
    const started = performance.now();
    const err = await failure(client({ allowPrivate: true, timeoutMs: 300 }).request(slow.url()));
    expect(err).toMatchObject({ code: 'timeout', message: `GET ${slow.url()} had no complete answer within 300 ms` });
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    // Generous: the point is that it ends, not how promptly on a busy machine.
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it.each([
    ['declares more than the cap', (_req: http.IncomingMessage, res: http.ServerResponse) => res.writeHead(200, { 'content-length': 5000 }).end('x'.repeat(5000))],
    ['streams more than the cap without a length', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeHead(200);
      const chunk = 'x'.repeat(400);
      // Up to about a megabyte, so a client that does not stop would read far past the cap.
      const timer = setInterval(() => res.write(chunk), 1);
      res.on('close', () => clearInterval(timer));
      setTimeout(() => res.end(), 3000);
    }],
  ])('refuses a body that %s', async (_what, handler) => {
    const big = await listen(handler);
    const err = await failure(client({ allowPrivate: true, maxBytes: 1000 }).request(big.url()));
    expect(err).toMatchObject({ code: 'too_large', message: `GET ${big.url()} answered with more than 1000 bytes` });
  });

  it('accepts a body exactly at the cap', async () => {
    const exact = await listen((_req, res) => res.end('x'.repeat(1000)));
    expect((await client({ allowPrivate: true, maxBytes: 1000 }).request(exact.url())).body).toHaveLength(1000);
  });

  it('says what failed when the connection does', async () => {
    const closed = await listen(ok);
    await new Promise((resolve) => servers.pop()!.close(resolve));
    const err = await failure(client({ allowPrivate: true }).request(closed.url('/a?token=t0k')));
    expect(err.code).toBe('network');
    expect(err.message).toMatch(new RegExp(`^GET http://127.0.0.1:${closed.port}/a failed: .*ECONNREFUSED`));
  });

  it('with readBody false, answers at the status line: a body that never ends, or is too large, does not matter', async () => {
    const endless = await listen((_req, res) => {
      res.writeHead(200, { 'content-length': '10000000' });
      res.write('x'.repeat(5000));
    });
    const started = performance.now();
    const res = await client({ allowPrivate: true, maxBytes: 1000, timeoutMs: 1500 }).request(endless.url(), { method: 'POST', body: '{}', readBody: false });
    expect(res.status).toBe(200);
    expect(res.body).toHaveLength(0);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(endless.requests[0]).toMatchObject({ method: 'POST', body: '{}' });
  });
});

describe('screenUserUrl (registration of a user URL)', () => {
  it('names the problem with a private, loopback, link-local or metadata address, literal or resolved, and passes the rest', async () => {
    for (const url of ['http://127.0.0.1/', 'http://10.1.2.3:8080/x', 'http://169.254.169.254/latest', 'http://[::1]/', 'http://[fd00:ec2::254]/', 'http://localhost/']) {
      expect(await screenUserUrl(url, { allowPrivate: false }), url).toMatch(/loopback, private, link-local or reserved/);
    }
    expect(await screenUserUrl('ftp://example.com/', { allowPrivate: false })).toMatch(/not an http/);
    expect(await screenUserUrl('https://93.184.215.14/hook', { allowPrivate: false })).toBeNull();
    // A name that does not resolve (yet) passes: each delivery is checked again when it connects.
    expect(await screenUserUrl('https://no-such-host.invalid/hook', { allowPrivate: false })).toBeNull();
    expect(await screenUserUrl('http://127.0.0.1/', { allowPrivate: true })).toBeNull();
  });
});
