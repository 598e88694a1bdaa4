import type { IncomingMessage, ClientRequest } from 'node:http';
import { Boom } from '@hapi/boom';
import { makeWASocket, type ConnectionState, type WASocket } from '@whiskeysockets/baileys';
import type { Logger } from '../../shared/logger.js';
import { isLinked } from '../auth-state/codec.js';
import { toJid, DisconnectCode, type DeviceConnector, type DeviceSocket, type OpenDeviceOptions } from '../connector.js';
import type { InboundMessage, MessageAck } from '../inbound.js';
import { acksFromReceipts, acksFromUpdates, historyMessages, inboundMessages } from './events.js';

// The production connector: one Baileys socket per device, on the device's shared, fenced auth
// state. It only translates: Baileys' connection updates become the runtime's events (status,
// codes, closes with their DisconnectReason), and close() ends the socket without logging out.
// What a close means (reconnect, back off, stop) is the runtime's decision, not this file's.

/** Baileys keeps the first QR code 60 s and each next one 20 s (its qrTimeout defaults). */
const FIRST_QR_TTL_MS = 60_000;
const NEXT_QR_TTL_MS = 20_000;
/** A pairing code is good for as long as the socket keeps asking WhatsApp for refs (about 6). */
const PAIRING_CODE_TTL_MS = FIRST_QR_TTL_MS + 5 * NEXT_QR_TTL_MS;

export interface BaileysConnectorOptions {
  log: Logger;
  /** WhatsApp's WebSocket URL; Baileys' own default when unset. Tests point it at a local server. */
  waWebSocketUrl?: string | undefined;
  /** The handshake (and each query) fails after this long. */
  connectTimeoutMs: number;
  keepAliveIntervalMs?: number | undefined;
  /** Level of Baileys' own log lines (it is chatty at info). */
  logLevel: string;
  /** Called with every socket made: instrumentation, and tests that need the socket itself. */
  onSocket?: ((deviceId: string, socket: WASocket) => void) | undefined;
  /** Whether a synced chat history becomes inbound messages (EVENTS_HISTORY_SYNC). */
  historySync: boolean;
}

/** Baileys closes with a Boom whose output.statusCode is the DisconnectReason. */
function closeCode(error: unknown): number {
  const code = (error as { output?: { statusCode?: unknown } } | undefined)?.output?.statusCode;
  return typeof code === 'number' && code > 0 ? code : DisconnectCode.connectionClosed;
}

export function createBaileysConnector(options: BaileysConnectorOptions): DeviceConnector {
  const { waWebSocketUrl, connectTimeoutMs, keepAliveIntervalMs, logLevel, onSocket, historySync } = options;
  const sockets = new Set<DeviceSocket>();

  return {
    kind: 'baileys',

    async open({ deviceId, token, log: deviceLog, events, guard, auth, link }: OpenDeviceOptions) {
      guard();
      events.status('connecting');
      const { creds } = auth.state;
      // Asking for a pairing code writes `me` before any phone confirmed it; a socket that finds
      // `me` logs in instead of registering, and WhatsApp would refuse that as a logout (401).
      if (!isLinked(creds) && creds.me) creds.me = undefined;

      const sock = makeWASocket({
        auth: auth.state,
        logger: deviceLog.child({ module: 'baileys' }, { level: logLevel }),
        ...(waWebSocketUrl ? { waWebSocketUrl } : {}),
        connectTimeoutMs,
        ...(keepAliveIntervalMs ? { keepAliveIntervalMs } : {}),
        // A gateway must not keep the phone from getting notifications.
        markOnlineOnConnect: false,
        // A write refused by the fence is not going to succeed on a retry; a Redis blip might.
        transactionOpts: { maxCommitRetries: 3, delayBetweenTriesMs: 500 },
      });
      onSocket?.(deviceId, sock);
      // Baileys listens for 'unexpected-response', which stops `ws` from failing the handshake
      // itself, yet never acts on it: an upgrade refused with an HTTP status (WhatsApp's edge
      // answering 503, a proxy's 403) would leave the socket connecting forever. End it with that
      // status, so the close maps like any other.
      sock.ws.on('unexpected-response', (request: ClientRequest, response: IncomingMessage) => {
        // Boom takes 400 and up; a redirect or a 200 instead of an upgrade is a closed connection.
        const statusCode = (response.statusCode ?? 0) >= 400 ? response.statusCode! : DisconnectCode.connectionClosed;
        void sock.end(new Boom(`Unexpected server response: ${statusCode}`, { statusCode }));
        request.destroy();
      });

      let ended = false;
      let closedByUs = false;
      let qrCount = 0;
      let pairingRequested = false;

      // Baileys has already merged the update into `creds` (its own listener runs first).
      sock.ev.on('creds.update', () => {
        auth.saveCreds().catch((err: Error) => deviceLog.warn({ err }, 'creds not saved'));
      });

      const onQr = (qr: string) => {
        qrCount += 1;
        if (link?.method === 'pairing' && link.phone) {
          // WhatsApp is ready for a registration once it sends the first QR ref; ask once per socket.
          if (pairingRequested) return;
          pairingRequested = true;
          sock
            .requestPairingCode(link.phone)
            .then((code) => {
              if (!ended) events.pairingCode(code, PAIRING_CODE_TTL_MS);
            })
            .catch((err: Error) => deviceLog.warn({ err }, 'pairing code request failed'));
          return;
        }
        events.qr(qr, qrCount === 1 ? FIRST_QR_TTL_MS : NEXT_QR_TTL_MS);
      };

      sock.ev.on('connection.update', (update: Partial<ConnectionState>) => {
        if (ended) return;
        if (update.qr) onQr(update.qr);
        if (update.connection === 'open') events.status('connected');
        if (update.connection === 'close') {
          ended = true;
          sockets.delete(socket);
          if (closedByUs) return;
          const error = update.lastDisconnect?.error;
          const code = closeCode(error);
          deviceLog.info({ code, reason: error?.message }, 'baileys socket closed');
          events.closed(code, error?.message ?? 'connection closed');
        }
      });

      // What WhatsApp sends back, in wafleet's terms (events.ts); nothing once the socket ended.
      // Baileys has acknowledged it already, so there is nothing to wait for here.
      const inbound = (messages: InboundMessage[]) => {
        if (!ended && messages.length > 0) void events.inbound(messages);
      };
      const acks = (found: MessageAck[]) => {
        if (!ended && found.length > 0) void events.acks(found);
      };
      sock.ev.on('messages.upsert', (upsert) => inbound(inboundMessages(upsert)));
      sock.ev.on('messaging-history.set', (history) => inbound(historyMessages(history, { historySync })));
      sock.ev.on('messages.update', (updates) => acks(acksFromUpdates(updates)));
      sock.ev.on('message-receipt.update', (receipts) => acks(acksFromReceipts(receipts)));

      const socket: DeviceSocket = {
        deviceId,
        token,
        async close() {
          if (closedByUs || ended) {
            closedByUs = true;
            return;
          }
          closedByUs = true;
          sockets.delete(socket);
          // end() without an error closes the WebSocket only: no logout, the session is kept.
          await sock.end(undefined);
        },
        async logout() {
          if (closedByUs || ended) return;
          closedByUs = true;
          sockets.delete(socket);
          try {
            await sock.logout('logged out by wafleet');
          } catch (err) {
            deviceLog.warn({ err }, 'logout not sent to WhatsApp; closing');
            await sock.end(undefined);
          }
        },
        async send(message, waMessageId) {
          guard();
          const content =
            message.type === 'text'
              ? { text: message.text ?? '' }
              : message.type === 'image'
                ? { image: message.media!, caption: message.caption }
                : message.type === 'video'
                  ? { video: message.media!, caption: message.caption }
                  : { document: message.media!, fileName: message.fileName ?? 'document', mimetype: 'application/octet-stream', caption: message.caption };
          await sock.sendMessage(toJid(message.to), content, { messageId: waMessageId });
        },
      };
      sockets.add(socket);
      return socket;
    },

    async close() {
      await Promise.allSettled([...sockets].map((socket) => socket.close()));
    },
  };
}
