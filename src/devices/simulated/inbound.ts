import type { ClusterKeys } from '../../cluster/keys.js';
import { runLua } from '../../shared/lua.js';
import type { Logger } from '../../shared/logger.js';
import type { RedisClient as Redis } from '../../shared/redis.js';
import { toJid, type DeviceSocketEvents } from '../connector.js';
import type { AckStatus, InboundMessage, MessageAck } from '../inbound.js';
import { SIM_HISTORY_CAP, SIM_PENDING_CAP, SIM_PENDING_TTL_MS } from './bounds.js';
import { simScripts as scripts } from './scripts.js';

// The simulated WhatsApp's inbound side: what it sends a device (messages written to it, receipts
// of messages it sent). Like WhatsApp it holds each of them until a socket of the device
// acknowledges it, and gives whatever it holds to every socket that opens until then; the
// device's log drops a repeat by its id. Any server can make WhatsApp send something (the sim
// API); the server holding the device's socket hears of it on the inbound channel.

/** Entries one take hands a socket; a device with more pending gets them in further takes. */
const TAKE_BATCH = 100;

export interface SimulatedWhatsApp {
  /** Someone with phone number `from` writes `text` to the device; answers WhatsApp's id of the message. */
  sendToDevice(deviceId: string, from: string, text: string): Promise<string>;
  /** The recipient's phone acknowledges a message the device sent; false when WhatsApp never received it. */
  receipt(deviceId: string, receipt: { waMessageId: string; chatJid: string; status: Extract<AckStatus, 'delivered' | 'read'> }): Promise<boolean>;
}

export function createSimulatedWhatsApp({ redis, keys }: { redis: Redis; keys: ClusterKeys }): SimulatedWhatsApp {
  return {
    sendToDevice: (deviceId, from, text) =>
      runLua<string>(
        redis,
        scripts.inbound,
        [keys.simPending(deviceId), keys.simInboundSeq, keys.simHistory],
        [deviceId, from.replace(/^\+/, ''), text, SIM_PENDING_CAP, SIM_PENDING_TTL_MS, SIM_HISTORY_CAP, keys.simInboundChannel],
      ),
    async receipt(deviceId, { waMessageId, chatJid, status }) {
      const queued = await runLua<number>(
        redis,
        scripts.receipt,
        [keys.simSeen(deviceId), keys.simPending(deviceId), keys.simHistory],
        [deviceId, waMessageId, chatJid, status, SIM_PENDING_CAP, SIM_PENDING_TTL_MS, SIM_HISTORY_CAP, keys.simInboundChannel],
      );
      return queued === 1;
    },
  };
}

type PendingEntry = [id: string, fields: string[]];

function fieldsOf(raw: readonly string[]): Map<string, string> {
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < raw.length; i += 2) fields.set(raw[i]!, raw[i + 1]!);
  return fields;
}

function inboundMessage(fields: Map<string, string>): InboundMessage {
  const jid = toJid(fields.get('f')!);
  return {
    waMessageId: fields.get('m')!,
    chatJid: jid,
    senderJid: jid,
    pushName: null,
    participant: null,
    timestampMs: Number(fields.get('t')),
    type: 'text',
    text: fields.get('x') ?? '',
    media: null,
    quotedMessageId: null,
    reaction: null,
    fromHistory: false,
  };
}

function messageAck(fields: Map<string, string>): MessageAck {
  return { waMessageId: fields.get('m')!, chatJid: fields.get('c')!, status: fields.get('r') as AckStatus, recipientJid: null, atMs: Number(fields.get('t')) };
}

/**
 * Reports the entries in the order WhatsApp queued them, a run of messages or of receipts at a
 * time; resolves once the device has them all (see DeviceSocketEvents.inbound).
 */
function report(entries: readonly PendingEntry[], events: DeviceSocketEvents): Promise<unknown> {
  let messages: InboundMessage[] = [];
  let acks: MessageAck[] = [];
  const had: Array<Promise<void>> = [];
  const flush = () => {
    if (messages.length > 0) had.push(events.inbound(messages));
    if (acks.length > 0) had.push(events.acks(acks));
    messages = [];
    acks = [];
  };
  for (const [, raw] of entries) {
    const fields = fieldsOf(raw);
    if (fields.get('k') === 'message') {
      if (acks.length > 0) flush();
      messages.push(inboundMessage(fields));
    } else {
      if (messages.length > 0) flush();
      acks.push(messageAck(fields));
    }
  }
  flush();
  return Promise.all(had);
}

interface PendingDeliveryOptions {
  redis: Redis;
  keys: ClusterKeys;
  deviceId: string;
  socketId: string;
  events: DeviceSocketEvents;
  log: Logger;
  /** True once the socket has closed: what it was handed then stays with WhatsApp, unacknowledged. */
  ended(): boolean;
}

/**
 * What an open socket does when WhatsApp has something for its device: takes it, reports it, and
 * acknowledges it once the device has it in its log and the store; a socket that closed
 * meanwhile acknowledges nothing, so WhatsApp gives it again to the next. (Baileys acknowledges
 * a message before it reports it; a connector that waits closes the window in which a server
 * dying, or Redis losing its data, loses a message WhatsApp will not send again.) Returns the call
 * that starts a delivery (on open, on the inbound channel, on a keep-alive that saw something
 * pending); calls while one runs make it go round once more, so nothing queued meanwhile waits.
 */
export function createPendingDelivery({ redis, keys, deviceId, socketId, events, log, ended }: PendingDeliveryOptions): () => void {
  const socketKey = keys.simSocket(deviceId);
  const pendingKey = keys.simPending(deviceId);
  let running = false;
  let again = false;

  /** One batch; true when there may be more. */
  const deliverBatch = async (): Promise<boolean> => {
    const entries = await runLua<PendingEntry[]>(redis, scripts.take, [socketKey, pendingKey, keys.simHistory], [socketId, deviceId, TAKE_BATCH, SIM_HISTORY_CAP]);
    if (entries.length === 0 || ended()) return false;
    await report(entries, events);
    if (ended()) return false;
    await runLua<number>(redis, scripts.ack, [socketKey, pendingKey], [socketId, ...entries.map(([id]) => id)]);
    return entries.length === TAKE_BATCH;
  };

  return () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    void (async () => {
      try {
        do {
          again = false;
          while (!ended() && (await deliverBatch()));
        } while (again && !ended());
      } catch (err) {
        // Left with WhatsApp: the next keep-alive sees it pending and delivers it again.
        log.warn({ err }, 'simulated inbound delivery failed');
      } finally {
        running = false;
      }
    })();
  };
}
