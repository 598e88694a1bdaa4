import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ReceiverFault, SignatureCheck } from './history.js';

// A webhook receiver as a user would run one, for the chaos run and the bench: it verifies each
// delivery's signature itself (from the contract, not from wafleet's code, so a signing bug
// cannot agree with itself) and reports every request it got. The chaos run gives it faults of its
// own: answering 500, hanging past the servers' timeout, refusing connections.

/** One POST as the receiver saw it. */
export interface WebhookRequest {
  /** When it arrived (ms since the epoch, this process's clock). */
  at: number;
  eventId: string;
  /** X-Wafleet-Event-Id. */
  headerEventId: string;
  type: string;
  deviceId: string;
  sequence: number;
  /** `data.waMessageId` of the event, when it has one. */
  waMessageId?: string;
  signature: SignatureCheck;
  /** What the receiver did: an HTTP status, or `hang` (held, never answered). */
  answer: number | 'hang';
}

export interface WebhookReceiver {
  url: string;
  port: number;
  /** `ok` answers 200; a fault answers 500, hangs, or refuses connections until the next call. */
  setMode(mode: ReceiverFault | 'ok'): Promise<void>;
  close(): Promise<void>;
}

/**
 * `X-Wafleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. Only
 * the HMAC is checked: a retry may carry the time of its first try or its own, both are right.
 */
export function verifySignature(secret: string, header: string | undefined, rawBody: Buffer): SignatureCheck {
  if (!header) return 'missing';
  const parts = new Map(header.split(',').map((part) => part.split('=', 2) as [string, string]));
  const t = parts.get('t');
  const v1 = parts.get('v1');
  if (!t || !/^\d+$/.test(t) || !v1 || !/^[0-9a-f]{64}$/.test(v1)) return 'invalid';
  const expected = createHmac('sha256', secret).update(`${t}.`).update(rawBody).digest();
  return timingSafeEqual(expected, Buffer.from(v1, 'hex')) ? 'valid' : 'invalid';
}

/** The header a server would send, for the bench's bare BullMQ hop (the same work on both sides). */
export function signatureHeader(secret: string, rawBody: string, nowS = Math.floor(Date.now() / 1000)): string {
  return `t=${nowS},v1=${createHmac('sha256', secret).update(`${nowS}.${rawBody}`).digest('hex')}`;
}

function eventOf(raw: Buffer): Pick<WebhookRequest, 'eventId' | 'type' | 'deviceId' | 'sequence' | 'waMessageId'> {
  try {
    const body = JSON.parse(raw.toString('utf8')) as { id?: unknown; type?: unknown; deviceId?: unknown; sequence?: unknown; data?: { waMessageId?: unknown } | null };
    const wa = body.data?.waMessageId;
    return {
      eventId: typeof body.id === 'string' ? body.id : '',
      type: typeof body.type === 'string' ? body.type : '',
      deviceId: typeof body.deviceId === 'string' ? body.deviceId : '',
      sequence: typeof body.sequence === 'number' ? body.sequence : -1,
      ...(typeof wa === 'string' ? { waMessageId: wa } : {}),
    };
  } catch {
    // Not JSON: the checker reports it by its empty id.
    return { eventId: '', type: '', deviceId: '', sequence: -1 };
  }
}

export async function startWebhookReceiver(options: {
  /** The secret to verify with; a request may name its device's own through `secretOf`. */
  secret: string;
  secretOf?: (deviceId: string) => string | undefined;
  /** How long a hung request is held before its socket is destroyed (past the servers' timeout). */
  hangMs: number;
  onRequest: (request: WebhookRequest) => void;
  port?: number;
}): Promise<WebhookReceiver> {
  let mode: ReceiverFault | 'ok' = 'ok';
  const sockets = new Set<Socket>();
  const hung = new Set<NodeJS.Timeout>();

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const event = eventOf(raw);
      const secret = options.secretOf?.(event.deviceId) ?? options.secret;
      const header = req.headers['x-wafleet-signature'];
      const answer: WebhookRequest['answer'] = mode === 'hang' ? 'hang' : mode === 'error' ? 500 : 200;
      options.onRequest({
        at: Date.now(),
        ...event,
        headerEventId: String(req.headers['x-wafleet-event-id'] ?? ''),
        signature: verifySignature(secret, Array.isArray(header) ? header[0] : header, raw),
        answer,
      });
      if (answer === 'hang') {
        const timer = setTimeout(() => {
          hung.delete(timer);
          req.socket.destroy();
        }, options.hangMs);
        hung.add(timer);
        return;
      }
      res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer === 200 ? 'ok' : 'receiver fault');
    });
  };

  const server = createServer(handle);
  server.keepAliveTimeout = 5000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  const stopListening = () =>
    new Promise<void>((resolve) => {
      for (const timer of hung) clearTimeout(timer);
      hung.clear();
      // Kept-alive connections would go on being served: a receiver that is down has none.
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });

  const port = await listen(options.port ?? 0);
  let closed: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    port,
    async setMode(next) {
      if (next === mode) return;
      const wasDown = mode === 'down';
      mode = next;
      if (next === 'down') await stopListening();
      else if (wasDown) await listen(port);
    },
    close() {
      closed ??= mode === 'down' ? Promise.resolve() : stopListening();
      return closed;
    },
  };
}
