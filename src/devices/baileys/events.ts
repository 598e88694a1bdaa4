import {
  getContentType,
  normalizeMessageContent,
  proto,
  toNumber,
  type BaileysEventMap,
  type MessageUserReceiptUpdate,
  type WAGenericMediaMessage,
  type WAMessage,
  type WAMessageUpdate,
} from '@whiskeysockets/baileys';
import type { AckStatus, InboundMedia, InboundMessage, InboundMessageType, MessageAck } from '../inbound.js';

// Baileys' events as wafleet's inbound messages and acks (../inbound.ts). Pure functions typed
// with Baileys' own types, so a field Baileys renames breaks the build, not a webhook.

/** A protobuf uint64 in seconds: a Long when decoded from bytes (history, resends), else a number. */
function msFromSeconds(seconds: proto.IWebMessageInfo['messageTimestamp'] | undefined): number | null {
  const value = toNumber(seconds);
  // Baileys writes 0 for a receipt that carried no time.
  return value > 0 ? value * 1000 : null;
}

/**
 * `messages.upsert`: `notify` is a message as it arrives, `append` one WhatsApp kept while the
 * device was offline (a restart, a failover) and hands over on reconnect; both are news. History
 * never comes this way (see historyMessages).
 */
export function inboundMessages(upsert: BaileysEventMap['messages.upsert']): InboundMessage[] {
  return upsert.messages.flatMap((info) => inboundMessage(info, false) ?? []);
}

export interface HistoryOptions {
  /** Whether the device wants its chats' history, synced by WhatsApp at link time, delivered as messages. */
  historySync: boolean;
}

/** `messaging-history.set`: the messages older than the link, only for a device that asked for them. */
export function historyMessages(history: BaileysEventMap['messaging-history.set'], { historySync }: HistoryOptions): InboundMessage[] {
  return historySync ? history.messages.flatMap((info) => inboundMessage(info, true) ?? []) : [];
}

/** Keys and delivery machinery, not something a person wrote. */
const NOT_CONTENT: ReadonlySet<keyof proto.IMessage> = new Set(['protocolMessage', 'fastRatchetKeySenderKeyDistributionMessage']);

const TYPES: Partial<Record<keyof proto.IMessage, InboundMessageType>> = {
  conversation: 'text',
  extendedTextMessage: 'text',
  imageMessage: 'image',
  videoMessage: 'video',
  ptvMessage: 'video',
  audioMessage: 'audio',
  documentMessage: 'document',
  stickerMessage: 'sticker',
  reactionMessage: 'reaction',
  locationMessage: 'location',
  liveLocationMessage: 'location',
  contactMessage: 'contact',
  contactsArrayMessage: 'contact',
};

function inboundMessage(info: WAMessage, fromHistory: boolean): InboundMessage | null {
  const { key } = info;
  if (key.fromMe || !key.id || !key.remoteJid) return null;
  // Disappearing, view-once and captioned-document wrappers hold the message itself; an edit's
  // wrapper holds a protocolMessage, which is no new message.
  const content = normalizeMessageContent(info.message);
  const kind = getContentType(content);
  if (!content || !kind || NOT_CONTENT.has(kind)) return null;
  const reaction = content.reactionMessage;
  const reactedTo = reaction?.key?.id;
  // A reaction that names no message is on nothing a webhook user could find.
  if (reaction && !reactedTo) return null;
  const participant = key.participant || info.participant || null;
  const node = content[kind];
  const context = typeof node === 'object' && node !== null && 'contextInfo' in node ? node.contextInfo : null;
  const media = content.imageMessage ?? content.videoMessage ?? content.ptvMessage ?? content.audioMessage ?? content.documentMessage ?? content.stickerMessage;
  return {
    waMessageId: key.id,
    chatJid: key.remoteJid,
    senderJid: participant ?? key.remoteJid,
    pushName: info.pushName || null,
    participant,
    timestampMs: msFromSeconds(info.messageTimestamp),
    type: TYPES[kind] ?? 'other',
    text:
      content.conversation ||
      content.extendedTextMessage?.text ||
      content.imageMessage?.caption ||
      content.videoMessage?.caption ||
      content.documentMessage?.caption ||
      null,
    media: media ? mediaOf(media) : null,
    quotedMessageId: context?.stanzaId || null,
    // WhatsApp removes a reaction by sending an empty one.
    reaction: reactedTo ? { targetId: reactedTo, emoji: reaction?.text || null } : null,
    fromHistory,
  };
}

function mediaOf(media: WAGenericMediaMessage): InboundMedia {
  return {
    mimetype: media.mimetype || null,
    size: media.fileLength == null ? null : toNumber(media.fileLength),
    fileName: ('fileName' in media && media.fileName) || null,
    sha256: media.fileSha256?.length ? Buffer.from(media.fileSha256).toString('hex') : null,
  };
}

const ACK_STATUSES: Partial<Record<proto.WebMessageInfo.Status, AckStatus>> = {
  [proto.WebMessageInfo.Status.SERVER_ACK]: 'server',
  [proto.WebMessageInfo.Status.DELIVERY_ACK]: 'delivered',
  [proto.WebMessageInfo.Status.READ]: 'read',
  [proto.WebMessageInfo.Status.PLAYED]: 'played',
};

/**
 * `messages.update`: receipts in one-to-one chats, as the message's new status with the receipt's
 * time in `messageTimestamp`. Updates that carry no status (edits, stars, poll votes) are no acks.
 */
export function acksFromUpdates(updates: WAMessageUpdate[]): MessageAck[] {
  return updates.flatMap(({ key, update }) => {
    const status = update.status == null ? undefined : ACK_STATUSES[update.status];
    if (!key.fromMe || !key.id || !key.remoteJid || !status) return [];
    return [{ waMessageId: key.id, chatJid: key.remoteJid, status, recipientJid: null, atMs: msFromSeconds(update.messageTimestamp) }];
  });
}

/**
 * `message-receipt.update`: receipts in groups and broadcasts, one per member. Baileys merges a
 * member's receipts that arrive together, so one may say both delivered and read.
 */
export function acksFromReceipts(receipts: MessageUserReceiptUpdate[]): MessageAck[] {
  return receipts.flatMap(({ key, receipt }) => {
    if (!key.fromMe || !key.id || !key.remoteJid) return [];
    const ack = { waMessageId: key.id, chatJid: key.remoteJid, recipientJid: receipt.userJid || null };
    const steps: [AckStatus, proto.IUserReceipt['receiptTimestamp']][] = [
      ['delivered', receipt.receiptTimestamp],
      ['read', receipt.readTimestamp],
      ['played', receipt.playedTimestamp],
    ];
    return steps.flatMap(([status, at]) => (at == null ? [] : [{ ...ack, status, atMs: msFromSeconds(at) }]));
  });
}
