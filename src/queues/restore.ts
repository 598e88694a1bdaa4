import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
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
// Every server that notices the loss runs it, maybe at once: each step is idempotent (a record
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
  redis: Redis;
  keys: ClusterKeys;
  records: Pick<MessageRecords, 'accept'>;
  producer: Pick<OutboundProducer, 'enqueue' | 'requeue' | 'orderWaiting'>;
  log: Logger;
  /** Messages read from the store per page. */
  pageSize?: number;
}

export function createMessageRestore({ store, redis, keys, records, producer, log, pageSize = 500 }: MessageRestoreDeps): () => Promise<RestoreReport> {
  /** Puts one page back; `anchor` carries a device's place in line from one page to the next. */
  const restorePage = async (page: StoredMessage[], anchor: { deviceId: string; jobId: string }): Promise<number> => {
    const pipeline = redis.pipeline();
    for (const message of page) pipeline.hget(keys.message(message.id), 'status');
    const statuses = ((await pipeline.exec()) ?? []).map(([err, value]) => {
      if (err) throw err;
      return value as string | null;
    });
    let restored = 0;
    const waiting = new Map<string, string[]>();
    await Promise.all(
      page.map(async (message, i) => {
        const status = statuses[i];
        if (status === 'sent' || status === 'failed') return;
        if (status === null || status === undefined) {
          // Missing: `created` is false only when another server re-created it meanwhile.
          if ((await records.accept(acceptedFromStore(message))).created) restored += 1;
          await producer.requeue(message.id, message.deviceId);
        } else {
          await producer.enqueue(message.id, message.deviceId);
        }
      }),
    );
    // The page is in (device, seq) order, so each device's list below is in accept order.
    for (const [i, message] of page.entries()) {
      const status = statuses[i];
      if (status === 'sent' || status === 'failed') continue;
      const ids = waiting.get(message.deviceId) ?? [];
      ids.push(message.id);
      waiting.set(message.deviceId, ids);
    }
    for (const [deviceId, ids] of waiting) {
      const from = anchor.deviceId === deviceId ? anchor.jobId : '';
      anchor.deviceId = deviceId;
      anchor.jobId = await producer.orderWaiting(deviceId, from, ids);
    }
    return restored;
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
