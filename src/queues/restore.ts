import type { Logger } from '../shared/logger.js';
import type { Store, StoredMessage } from '../store/types.js';
import { acceptedFromStore, type MessageRecords } from './messages.js';
import type { OutboundProducer } from './outbound.js';

// After Redis lost its data, the messages the store still counts as pending (accepted, their end
// not recorded) are put back: each record that is missing is re-created as it was accepted (same
// id, same accept time, `queued`), each job made sure of, and each device's waiting jobs put in
// accept order at the head of its line, ahead of anything accepted since. It runs in the Redis
// reset before claims open again, so no device sends before its line is whole.
//
// One server runs it under the re-seed lock, but a second may run it too (the first died, or
// Redis lost its data again): each step is idempotent (a record
// is created only when missing, a job id is unique, re-ordering repeats the same order). A record
// that says sent or failed is left alone. A message sent just before the loss whose end had not
// reached the store yet is sent again, with the same WhatsApp message id, which WhatsApp drops as
// a repeat: still delivered once.

export interface RestoreReport {
  /** Pending in the store. */
  pending: number;
  /** Redis records re-created. */
  restored: number;
}

export interface MessageRestoreDeps {
  store: Pick<Store, 'listPendingMessages'>;
  records: Pick<MessageRecords, 'accept'>;
  producer: Pick<OutboundProducer, 'enqueue' | 'requeue' | 'orderWaiting'>;
  log: Logger;
  /** Messages read from the store per page. */
  pageSize?: number;
}

export function createMessageRestore({ store, records, producer, log, pageSize = 500 }: MessageRestoreDeps): () => Promise<RestoreReport> {
  /** Puts one page back; `anchor` carries a device's place in line from one page to the next. */
  const restorePage = async (page: StoredMessage[], anchor: { deviceId: string; jobId: string }): Promise<number> => {
    // accept() creates a missing record and otherwise answers the record's status untouched.
    const outcomes = await Promise.all(
      page.map(async (message) => {
        const { status, created } = await records.accept(acceptedFromStore(message));
        if (status === 'sent' || status === 'failed') return { waiting: false, created };
        // A re-created record's job may have run as `missing` already: queue it afresh.
        if (created) await producer.requeue(message.id, message.deviceId);
        else await producer.enqueue(message.id, message.deviceId);
        return { waiting: true, created };
      }),
    );
    // The page is in (device, seq) order, so each device's list below is in accept order.
    const waiting = new Map<string, string[]>();
    page.forEach((message, i) => {
      if (!outcomes[i]!.waiting) return;
      waiting.set(message.deviceId, [...(waiting.get(message.deviceId) ?? []), message.id]);
    });
    for (const [deviceId, ids] of waiting) {
      const from = anchor.deviceId === deviceId ? anchor.jobId : '';
      anchor.deviceId = deviceId;
      anchor.jobId = await producer.orderWaiting(deviceId, from, ids);
    }
    return outcomes.filter((o) => o.created).length;
  };

  return async () => {
    const report: RestoreReport = { pending: 0, restored: 0 };
    const anchor = { deviceId: '', jobId: '' };
    let after: { deviceId: string; seq: number } | null = null;
    for (;;) {
      const page = await store.listPendingMessages(after, pageSize);
      if (page.length === 0) break;
      report.pending += page.length;
      report.restored += await restorePage(page, anchor);
      const last = page[page.length - 1]!;
      after = { deviceId: last.deviceId, seq: last.seq };
    }
    if (report.pending > 0) log.warn(report, 'pending messages put back on their queues from the store');
    return report;
  };
}
