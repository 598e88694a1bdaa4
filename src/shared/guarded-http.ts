import { lookup as dnsLookup } from 'node:dns';
import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { WafleetError } from './errors.js';
import { redactUserUrl } from './redact.js';

// The one client for requests to URLs a user gave (media to send, webhooks). Such a URL must not
// reach the gateway's own network (loopback, the private LAN, the cloud metadata service at
// 169.254.169.254), directly or through a redirect, and must not hold a worker or its memory for
// long. A name is checked inside the socket's own DNS lookup, so the address checked is the
// address connected to: a name that answers a public address to a check and 127.0.0.1 to the
// connect (DNS rebinding) has no window between the two.

export type OutboundFailure = 'bad_url' | 'blocked_address' | 'timeout' | 'too_large' | 'too_many_redirects' | 'network';

/** A request to a user's URL that did not get a complete answer; the message names the URL without its secrets. */
export class OutboundRequestError extends WafleetError {
  declare readonly code: OutboundFailure;

  constructor(code: OutboundFailure, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

const BLOCKED_RANGES: ReadonlyArray<readonly [network: string, prefix: number, type: 'ipv4' | 'ipv6']> = [
  ['0.0.0.0', 8, 'ipv4'], // "this network": 0.0.0.0 reaches the local host
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'], // carrier-grade NAT
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'], // link-local, and the cloud metadata service 169.254.169.254
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'], // IETF protocol assignments (some clouds' metadata, NAT64 helpers)
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'], // benchmarking networks
  ['224.0.0.0', 4, 'ipv4'], // multicast
  ['240.0.0.0', 4, 'ipv4'], // reserved, and the broadcast address
  ['::', 128, 'ipv6'],
  ['::1', 128, 'ipv6'],
  ['fc00::', 7, 'ipv6'], // unique local, and AWS's IPv6 metadata fd00:ec2::254
  ['fe80::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];

/** The addresses a user's URL may not reach: loopback, private, link-local, metadata, reserved. */
export function privateAddresses(): BlockList {
  const list = new BlockList();
  for (const [network, prefix, type] of BLOCKED_RANGES) list.addSubnet(network, prefix, type);
  return list;
}

/** An IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d) address as its IPv4 address. */
function embeddedIPv4(ipv6: string): string | null {
  // The URL parser writes an IPv6 address one way: lower case, the longest run of zeros
  // compressed, and the last 32 bits as two hex groups.
  const canonical = new URL(`http://[${ipv6}]/`).hostname;
  const match = /^\[::(?:ffff:)?([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(canonical);
  if (!match) return null;
  const [high, low] = [parseInt(match[1]!, 16), parseInt(match[2]!, 16)];
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

function isBlocked(blocked: BlockList, address: string): boolean {
  const bare = address.replace(/%.*$/, ''); // an IPv6 zone (fe80::1%eth0)
  const family = isIP(bare);
  if (family === 4) return blocked.check(bare, 'ipv4');
  // Not an address at all: nothing to judge it by, so nothing to allow.
  if (family !== 6) return true;
  const ipv4 = embeddedIPv4(bare);
  return blocked.check(bare, 'ipv6') || (ipv4 !== null && blocked.check(ipv4, 'ipv4'));
}

/**
 * Why a user's URL could never be requested (null: it may be): checked when it is registered, so a
 * webhook aimed at the gateway's own network is refused at once instead of failing every delivery.
 * A name is resolved now; one that does not resolve yet passes (its deliveries are checked again
 * at connect time, as every request is).
 */
export async function screenUserUrl(value: string, { allowPrivate, blocked = privateAddresses() }: { allowPrivate: boolean; blocked?: BlockList }): Promise<string | null> {
  let url: URL;
  try {
    url = target(value);
  } catch (err) {
    return (err as Error).message;
  }
  if (allowPrivate) return null;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host) !== 0) return isBlocked(blocked, host) ? `${host} is a loopback, private, link-local or reserved address` : null;
  const addresses = await dnsLookupAll(host);
  // The guarded client refuses a name when any of its addresses is refused, so one is enough here.
  const bad = addresses.find((address) => isBlocked(blocked, address));
  return bad ? `${host} resolves to ${bad}, which is a loopback, private, link-local or reserved address` : null;
}

function dnsLookupAll(host: string): Promise<string[]> {
  return new Promise((resolve) => {
    dnsLookup(host, { all: true }, (err, addresses) => resolve(err ? [] : addresses.map((a) => a.address)));
  });
}

export interface GuardedHttpOptions {
  /** Lifts the address rule: tests, and deployments whose media or webhooks live on a private network. */
  allowPrivate: boolean;
  /** For the whole request: every redirect, the connects, the answers and the body. */
  timeoutMs: number;
  /** The largest body accepted. */
  maxBytes: number;
  /** Redirects followed at most; default 5. */
  maxRedirects?: number;
  /** The addresses refused; default privateAddresses(). Tests narrow it to tell two loopback addresses apart. */
  blocked?: BlockList;
}

export interface GuardedRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /**
   * false: the answer's status and headers are all the caller wants (a webhook's receiver): the
   * request ends when they arrive, the body is neither waited for nor read, and so never too large.
   */
  readBody?: boolean;
}

export interface GuardedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface GuardedHttpClient {
  /** Throws OutboundRequestError; an answer with any status (404, 500) is an answer. */
  request(url: string, init?: GuardedRequest): Promise<GuardedResponse>;
}

interface Hop {
  method: string;
  headers: Record<string, string>;
  body: Buffer | string | undefined;
  readBody: boolean;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Not sent on to another origin: they were meant for the URL the user gave, not where it points. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization']);
const BODY_HEADERS = new Set(['content-type', 'content-length', 'content-encoding', 'transfer-encoding']);

function target(value: string, base?: URL): URL {
  let url: URL;
  try {
    url = new URL(value, base);
  } catch {
    throw new OutboundRequestError('bad_url', base ? `${redactUserUrl(base.href)} redirected to something that is not a URL` : 'not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new OutboundRequestError('bad_url', `${redactUserUrl(url.href)} is not an http:// or https:// URL`);
  }
  return url;
}

/** What a redirect keeps of the request, as browsers do: 303 (and 301/302 after a POST) become a GET. */
function redirected(hop: Hop, status: number, from: URL, to: URL): Hop {
  const toGet = status === 303 ? hop.method !== 'HEAD' : (status === 301 || status === 302) && hop.method === 'POST';
  const dropped = new Set([...(toGet ? BODY_HEADERS : []), ...(from.origin !== to.origin ? CREDENTIAL_HEADERS : [])]);
  return {
    method: toGet ? 'GET' : hop.method,
    headers: Object.fromEntries(Object.entries(hop.headers).filter(([name]) => !dropped.has(name.toLowerCase()))),
    body: toGet ? undefined : hop.body,
    readBody: hop.readBody,
  };
}

export function createGuardedHttpClient(options: GuardedHttpOptions): GuardedHttpClient {
  const { allowPrivate, timeoutMs, maxBytes } = options;
  const maxRedirects = options.maxRedirects ?? 5;
  const blocked = options.blocked ?? privateAddresses();
  const refused = (shown: string, host: string, address: string) =>
    new OutboundRequestError('blocked_address', `${shown} refused: ${host === address ? address : `${host} resolves to ${address}, which`} is a loopback, private, link-local or reserved address`);

  /** The socket's own lookup: every address the name resolves to must pass, or none is connected to. */
  const lookupFor =
    (shown: string): LookupFunction =>
    (hostname, lookupOptions, callback) => {
      dnsLookup(hostname, { ...lookupOptions, all: true }, (err, addresses) => {
        if (err) return callback(err, []);
        const bad = addresses.find(({ address }) => isBlocked(blocked, address));
        if (bad) return callback(refused(shown, hostname, bad.address), []);
        if (lookupOptions.all) return callback(null, addresses);
        callback(null, addresses[0]!.address, addresses[0]!.family);
      });
    };

  const exchange = (url: URL, hop: Hop, shown: string, deadline: number) =>
    new Promise<GuardedResponse>((resolve, reject) => {
      const transport = url.protocol === 'https:' ? https : http;
      // No agent: a pooled socket would skip the lookup, and one pooled by an unguarded request
      // could reach anywhere.
      const req = transport.request(url, { method: hop.method, headers: hop.headers, agent: false, ...(allowPrivate ? {} : { lookup: lookupFor(shown) }) });
      const fail = (err: OutboundRequestError) => {
        clearTimeout(timer);
        req.destroy();
        reject(err);
      };
      const network = (err: Error) => fail(err instanceof OutboundRequestError ? err : new OutboundRequestError('network', `${shown} failed: ${err.message}`, { cause: err }));
      const tooLarge = () => fail(new OutboundRequestError('too_large', `${shown} answered with more than ${maxBytes} bytes`));
      const timer = setTimeout(
        () => fail(new OutboundRequestError('timeout', `${shown} had no complete answer within ${timeoutMs} ms`)),
        Math.max(0, deadline - performance.now()),
      );
      req.on('error', network);
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if ((REDIRECTS.has(status) && res.headers.location) || !hop.readBody) {
          // Where it points is all a redirect says; its body is not read.
          clearTimeout(timer);
          res.destroy();
          resolve({ status, headers: res.headers, body: Buffer.alloc(0) });
          return;
        }
        if (Number(res.headers['content-length']) > maxBytes) return tooLarge();
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) tooLarge();
          else chunks.push(chunk);
        });
        res.on('error', network);
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status, headers: res.headers, body: Buffer.concat(chunks) });
        });
      });
      req.end(hop.body);
    });

  return {
    async request(value, init = {}) {
      const deadline = performance.now() + timeoutMs;
      let url = target(value);
      let hop: Hop = {
        method: (init.method ?? 'GET').toUpperCase(),
        headers: { 'user-agent': 'wafleet', ...init.headers },
        body: init.body,
        readBody: init.readBody ?? true,
      };
      for (let redirects = 0; ; redirects++) {
        const shown = `${hop.method} ${redactUserUrl(url.href)}`;
        // An address in the URL itself is never looked up, so it is checked here, before any connect.
        const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
        if (!allowPrivate && isIP(host) !== 0 && isBlocked(blocked, host)) throw refused(shown, host, host);
        const response = await exchange(url, hop, shown, deadline);
        const location = REDIRECTS.has(response.status) ? response.headers.location : undefined;
        if (!location) return response;
        if (redirects === maxRedirects) throw new OutboundRequestError('too_many_redirects', `${shown} redirected more than ${maxRedirects} times`);
        const next = target(location, url);
        hop = redirected(hop, response.status, url, next);
        url = next;
      }
    },
  };
}
