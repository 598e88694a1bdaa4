import { describe, expect, it } from 'vitest';
import { proto, type BaileysEventMap, type MessageUserReceiptUpdate, type WAMessage, type WAMessageUpdate } from '@whiskeysockets/baileys';
import { acksFromReceipts, acksFromUpdates, historyMessages, inboundMessages } from '../../src/devices/baileys/events.js';
import type { InboundMessage } from '../../src/devices/inbound.js';

// Payloads as Baileys 7.0.0-rc14 emits them (keys as decodeMessageNode builds them, receipts as
// handleReceipt does), written against Baileys' own types so a field it renames fails here.

const ALICE = '4915112345678@s.whatsapp.net';
const BOB = '4917698765432@s.whatsapp.net';
const GROUP = '120363025246125486@g.us';
const T = 1764770000;
/** sha256 of the image; WhatsApp sends it as bytes, the webhook as hex. */
const IMAGE_SHA256 = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';

const notify = (...messages: WAMessage[]): BaileysEventMap['messages.upsert'] => ({ type: 'notify', messages });

/** From Alice in a one-to-one chat, as received live. */
function fromAlice(id: string, message: proto.IMessage): WAMessage {
  return {
    key: { remoteJid: ALICE, remoteJidAlt: undefined, fromMe: false, id, participant: undefined, addressingMode: 'pn' },
    messageTimestamp: T,
    pushName: 'Alice',
    broadcast: false,
    message,
  };
}

/** What the mapping makes of fromAlice(id, …): the fields every message shares. */
function aliceSaid(id: string, fields: Partial<InboundMessage>): InboundMessage {
  return {
    waMessageId: id,
    chatJid: ALICE,
    senderJid: ALICE,
    pushName: 'Alice',
    participant: null,
    timestampMs: T * 1000,
    type: 'text',
    text: null,
    media: null,
    quotedMessageId: null,
    reaction: null,
    fromHistory: false,
    ...fields,
  };
}

const image: proto.Message.IImageMessage = {
  url: 'https://mmg.whatsapp.net/v/t62.7118-24/12345_n.enc',
  mimetype: 'image/jpeg',
  caption: 'the view from the hotel',
  fileSha256: Buffer.from(IMAGE_SHA256, 'hex'),
  fileLength: 48213,
  height: 1280,
  width: 960,
  mediaKey: Buffer.alloc(32, 1),
  fileEncSha256: Buffer.alloc(32, 2),
  directPath: '/v/t62.7118-24/12345_n.enc',
  mediaKeyTimestamp: T - 5,
};
const imageMedia = { mimetype: 'image/jpeg', size: 48213, fileName: null, sha256: IMAGE_SHA256 };

describe('inboundMessages', () => {
  it('maps a plain text and a reply, whose quoted id is the stanzaId of its contextInfo', () => {
    const reply: proto.IMessage = {
      extendedTextMessage: {
        text: 'yes, at 8',
        contextInfo: { stanzaId: '3EB0C431D5A8F2E1B7C4', participant: BOB, quotedMessage: { conversation: 'dinner?' } },
      },
    };
    expect(inboundMessages(notify(fromAlice('3EB01', { conversation: 'hello' }), fromAlice('3EB02', reply)))).toEqual([
      aliceSaid('3EB01', { text: 'hello' }),
      aliceSaid('3EB02', { text: 'yes, at 8', quotedMessageId: '3EB0C431D5A8F2E1B7C4' }),
    ]);
  });

  it('gives an image its caption and media metadata, the sha256 in hex', () => {
    expect(inboundMessages(notify(fromAlice('3EB03', { imageMessage: image })))).toEqual([aliceSaid('3EB03', { type: 'image', text: 'the view from the hotel', media: imageMedia })]);
  });

  it('gives a captioned document (its own wrapper) the caption and the file name', () => {
    const document: proto.IMessage = {
      documentWithCaptionMessage: {
        message: {
          documentMessage: {
            mimetype: 'application/pdf',
            title: 'invoice-2041.pdf',
            fileName: 'invoice-2041.pdf',
            caption: 'the invoice',
            fileLength: 183004,
            fileSha256: Buffer.from(IMAGE_SHA256, 'hex'),
            pageCount: 2,
          },
        },
      },
    };
    expect(inboundMessages(notify(fromAlice('3EB04', document)))).toEqual([
      aliceSaid('3EB04', {
        type: 'document',
        text: 'the invoice',
        media: { mimetype: 'application/pdf', size: 183004, fileName: 'invoice-2041.pdf', sha256: IMAGE_SHA256 },
      }),
    ]);
  });

  it('maps a voice note as audio with no text', () => {
    const voice: proto.IMessage = { audioMessage: { mimetype: 'audio/ogg; codecs=opus', seconds: 7, ptt: true, fileLength: 11520 } };
    expect(inboundMessages(notify(fromAlice('3EB05', voice)))).toEqual([
      aliceSaid('3EB05', { type: 'audio', media: { mimetype: 'audio/ogg; codecs=opus', size: 11520, fileName: null, sha256: null } }),
    ]);
  });

  it('names the group as the chat and the member as sender and participant', () => {
    const inGroup: WAMessage = {
      key: { remoteJid: GROUP, fromMe: false, id: 'A1B2C3D4E5F6', participant: BOB, participantAlt: undefined, addressingMode: 'pn' },
      messageTimestamp: T,
      pushName: 'Bob',
      broadcast: false,
      message: { conversation: 'who brings the cake?', messageContextInfo: { deviceListMetadataVersion: 2 } },
    };
    expect(inboundMessages(notify(inGroup))).toEqual([
      aliceSaid('A1B2C3D4E5F6', { chatJid: GROUP, senderJid: BOB, pushName: 'Bob', participant: BOB, text: 'who brings the cake?' }),
    ]);
  });

  it('maps a reaction to the message it is on, and an empty one as the reaction taken back', () => {
    const on = { remoteJid: ALICE, fromMe: true, id: '3EB0AAAA' };
    const reacted = fromAlice('3EB06', { reactionMessage: { key: on, text: '👍', senderTimestampMs: T * 1000 + 120 } });
    const removed = fromAlice('3EB07', { reactionMessage: { key: on, text: '', senderTimestampMs: T * 1000 + 900 } });
    expect(inboundMessages(notify(reacted, removed))).toEqual([
      aliceSaid('3EB06', { type: 'reaction', reaction: { targetId: '3EB0AAAA', emoji: '👍' } }),
      aliceSaid('3EB07', { type: 'reaction', reaction: { targetId: '3EB0AAAA', emoji: null } }),
    ]);
  });

  it('unwraps disappearing and view-once messages', () => {
    const ephemeral = fromAlice('3EB08', { ephemeralMessage: { message: { extendedTextMessage: { text: 'gone in a week', contextInfo: { expiration: 604800 } } } } });
    const viewOnce = fromAlice('3EB09', { viewOnceMessageV2: { message: { imageMessage: { ...image, viewOnce: true } } } });
    expect(inboundMessages(notify(ephemeral, viewOnce))).toEqual([
      aliceSaid('3EB08', { text: 'gone in a week' }),
      aliceSaid('3EB09', { type: 'image', text: 'the view from the hotel', media: imageMedia }),
    ]);
  });

  it('keeps what WhatsApp held while the device was offline (`append`)', () => {
    expect(inboundMessages({ type: 'append', messages: [fromAlice('3EB10', { conversation: 'are you there?' })] })).toEqual([
      aliceSaid('3EB10', { text: 'are you there?' }),
    ]);
  });

  it('skips messages this account sent, keys, protocol messages, edits and stubs with no content', () => {
    const mine: WAMessage = { ...fromAlice('3EB11', { conversation: 'sent from the phone' }), key: { remoteJid: ALICE, fromMe: true, id: '3EB11' } };
    const senderKey = fromAlice('3EB12', { senderKeyDistributionMessage: { groupId: GROUP, axolotlSenderKeyDistributionMessage: Buffer.alloc(8) } });
    const revoke = fromAlice('3EB13', { protocolMessage: { key: { remoteJid: ALICE, fromMe: false, id: '3EB01' }, type: proto.Message.ProtocolMessage.Type.REVOKE } });
    const edit = fromAlice('3EB14', {
      editedMessage: {
        message: {
          protocolMessage: {
            key: { remoteJid: ALICE, fromMe: false, id: '3EB01' },
            type: proto.Message.ProtocolMessage.Type.MESSAGE_EDIT,
            editedMessage: { conversation: 'hello again' },
          },
        },
      },
    });
    const stub: WAMessage = {
      key: { remoteJid: GROUP, fromMe: false, id: '2F1B0E', participant: BOB },
      messageTimestamp: T,
      messageStubType: proto.WebMessageInfo.StubType.GROUP_PARTICIPANT_ADD,
      messageStubParameters: [ALICE],
    };
    expect(inboundMessages(notify(mine, senderKey, revoke, edit, stub))).toEqual([]);
  });
});

describe('historyMessages', () => {
  // History arrives as protobuf bytes, so its uint64 fields are Longs and its bytes Buffers.
  const decoded = proto.WebMessageInfo.decode(proto.WebMessageInfo.encode({ ...fromAlice('3EB15', { imageMessage: image }), messageTimestamp: T - 86400 }).finish());
  const history: BaileysEventMap['messaging-history.set'] = {
    chats: [],
    contacts: [],
    messages: [{ ...decoded, key: decoded.key ?? {} }],
    isLatest: true,
    progress: 100,
    syncType: proto.HistorySync.HistorySyncType.RECENT,
  };

  it('is dropped unless the device asked for history', () => {
    expect(historyMessages(history, { historySync: false })).toEqual([]);
  });

  it('is kept as fromHistory when it did, its Long timestamp and size read as numbers', () => {
    expect(typeof decoded.messageTimestamp).toBe('object');
    expect(historyMessages(history, { historySync: true })).toEqual([
      aliceSaid('3EB15', { timestampMs: (T - 86400) * 1000, type: 'image', text: 'the view from the hotel', media: imageMedia, fromHistory: true }),
    ]);
  });
});

describe('acks', () => {
  const sent = { remoteJid: ALICE, fromMe: true, participant: undefined };
  const status = proto.WebMessageInfo.Status;

  it('maps each one-to-one receipt status to its ack, at the receipt time', () => {
    const updates: WAMessageUpdate[] = [
      { key: { ...sent, id: 'W1' }, update: { status: status.SERVER_ACK, messageTimestamp: T + 1 } },
      { key: { ...sent, id: 'W1' }, update: { status: status.DELIVERY_ACK, messageTimestamp: T + 2 } },
      { key: { ...sent, id: 'W1' }, update: { status: status.READ, messageTimestamp: T + 30 } },
      { key: { ...sent, id: 'W2' }, update: { status: status.PLAYED, messageTimestamp: T + 60 } },
    ];
    const ack = { chatJid: ALICE, recipientJid: null };
    expect(acksFromUpdates(updates)).toEqual([
      { ...ack, waMessageId: 'W1', status: 'server', atMs: (T + 1) * 1000 },
      { ...ack, waMessageId: 'W1', status: 'delivered', atMs: (T + 2) * 1000 },
      { ...ack, waMessageId: 'W1', status: 'read', atMs: (T + 30) * 1000 },
      { ...ack, waMessageId: 'W2', status: 'played', atMs: (T + 60) * 1000 },
    ]);
  });

  it('ignores pending and failed sends, updates without a status, and receipts for messages of others', () => {
    const updates: WAMessageUpdate[] = [
      { key: { ...sent, id: 'W3' }, update: { status: status.PENDING } },
      { key: { ...sent, id: 'W3' }, update: { status: status.ERROR, messageStubParameters: ['479'] } },
      { key: { ...sent, id: 'W3' }, update: { starred: true } },
      // Another device of this account read a message Alice sent.
      { key: { remoteJid: ALICE, fromMe: false, id: 'W4' }, update: { status: status.READ, messageTimestamp: T } },
    ];
    expect(acksFromUpdates(updates)).toEqual([]);
  });

  it('maps group receipts per member, one ack for each time a merged receipt carries', () => {
    const inGroup = { remoteJid: GROUP, fromMe: true, id: 'W5' };
    const receipts: MessageUserReceiptUpdate[] = [
      { key: { ...inGroup, participant: BOB }, receipt: { userJid: BOB, receiptTimestamp: T + 3 } },
      { key: { ...inGroup, participant: ALICE }, receipt: { userJid: ALICE, receiptTimestamp: T + 4, readTimestamp: T + 9 } },
      { key: { ...inGroup, participant: BOB }, receipt: { userJid: BOB, playedTimestamp: T + 40 } },
      { key: { remoteJid: GROUP, fromMe: false, id: 'W6', participant: BOB }, receipt: { userJid: BOB, readTimestamp: T } },
    ];
    const ack = { waMessageId: 'W5', chatJid: GROUP };
    expect(acksFromReceipts(receipts)).toEqual([
      { ...ack, recipientJid: BOB, status: 'delivered', atMs: (T + 3) * 1000 },
      { ...ack, recipientJid: ALICE, status: 'delivered', atMs: (T + 4) * 1000 },
      { ...ack, recipientJid: ALICE, status: 'read', atMs: (T + 9) * 1000 },
      { ...ack, recipientJid: BOB, status: 'played', atMs: (T + 40) * 1000 },
    ]);
  });
});
