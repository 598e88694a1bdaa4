import type { LoggedEvent } from '../events/event-log.js';
import type { Logger } from '../shared/logger.js';
import type { MessageRecords } from './messages.js';

// A `message.ack` the event log accepted is also a fact about the message: its first delivered
// and read times become `deliveredAt` and `readAt` on GET /api/messages/:id. Taken from the log,
// not from the socket, so only the lease holder's receipts count, each once.

export type ReceiptStatus = 'delivered' | 'read' | 'played';

/** The store's side: the same times written behind (see WriteBehindRecorder). */
export type ReceiptRecorder = (deviceId: string, messageId: string, status: ReceiptStatus, receivedAt: Date) => void;

interface AckData {
  messageId: string | null;
  status: 'server' | ReceiptStatus;
  atMs: number | null;
}

export function createReceiptRecorder(messages: Pick<MessageRecords, 'recordReceipt'>, log: Logger, recordBehind?: ReceiptRecorder) {
  return (deviceId: string, event: LoggedEvent): void => {
    if (event.type !== 'message.ack') return;
    const { messageId, status, atMs } = event.data as AckData;
    // `server` is not a receipt from the recipient; a message we did not send has no record.
    if (!messageId || status === 'server') return;
    const at = atMs ?? event.at;
    messages.recordReceipt(messageId, status, at).catch((err: unknown) => {
      // The record shows it late or not at all; the store still gets it below.
      log.warn({ err, messageId, status }, 'receipt not recorded in Redis');
    });
    recordBehind?.(deviceId, messageId, status, new Date(at));
  };
}
