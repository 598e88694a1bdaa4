// What reaches wafleet from WhatsApp about a device's chats, in wafleet's own terms: the payloads
// of the `message.received` and `message.ack` webhooks. Every driver maps its events to these
// (Baileys: baileys/events.ts), so nothing above the device layer depends on a driver's types.

export type InboundMessageType = 'text' | 'image' | 'video' | 'audio' | 'document' | 'sticker' | 'reaction' | 'location' | 'contact' | 'other';

/** The file a media message carries, as WhatsApp describes it; the bytes are not downloaded here. */
export interface InboundMedia {
  /** As the sender's app declared it, e.g. `image/jpeg`, `audio/ogg; codecs=opus`. */
  mimetype: string | null;
  /** In bytes. */
  size: number | null;
  /** The name the sender gave a document; null for other media. */
  fileName: string | null;
  /** SHA-256 of the file as downloaded and decrypted, in lowercase hex (as `sha256sum` prints it). */
  sha256: string | null;
}

/** A message someone else wrote in one of the device's chats (`message.received`). */
export interface InboundMessage {
  /** WhatsApp's id of the message; replies and reactions name it, and so does `quotedMessageId`. */
  waMessageId: string;
  /** The chat: the other person's JID in a one-to-one chat, the group's JID (`…@g.us`) in a group. */
  chatJid: string;
  /** Who wrote it: the chat's JID in a one-to-one chat, the member's JID in a group. */
  senderJid: string;
  /** The name the sender set in their own profile, not the device's contact name; null if not sent. */
  pushName: string | null;
  /** In a group (or a broadcast list or status), the member who wrote it, as senderJid; null in a one-to-one chat. */
  participant: string | null;
  /** When the sender's phone sent it, in epoch milliseconds (WhatsApp counts whole seconds); null if WhatsApp gave none. */
  timestampMs: number | null;
  type: InboundMessageType;
  /** The text of a text message, or the caption of an image, video or document; null otherwise. */
  text: string | null;
  /** For image, video, audio, document and sticker messages; null otherwise. */
  media: InboundMedia | null;
  /** The WhatsApp id of the message this one replies to; null when it is not a reply. */
  quotedMessageId: string | null;
  /** For `reaction`: the message reacted to, and the emoji, or null when the sender took their reaction back. */
  reaction: { targetId: string; emoji: string | null } | null;
  /** True for a message from the history WhatsApp syncs when a device is linked: older than the link, not news. */
  fromHistory: boolean;
}

/** How far a message the device sent has got: in WhatsApp's order, each implying the ones before. */
export type AckStatus = 'server' | 'delivered' | 'read' | 'played';

/** A step in the delivery of a message the device sent (`message.ack`). */
export interface MessageAck {
  /** WhatsApp's id of the message the device sent. */
  waMessageId: string;
  chatJid: string;
  /** `server`: WhatsApp has it; `delivered`: on the recipient's phone; `read`: opened; `played`: a voice note or video played. */
  status: AckStatus;
  /**
   * In a group, the member whose phone sent this receipt (each member sends their own); null in a
   * one-to-one chat, where the chat is the recipient.
   */
  recipientJid: string | null;
  /** When it happened, in epoch milliseconds (WhatsApp counts whole seconds); null if WhatsApp gave none. */
  atMs: number | null;
}
