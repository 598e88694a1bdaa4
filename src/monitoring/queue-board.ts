import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Queue } from 'bullmq';
import type { Router } from 'express';
import { scanKeys, type RedisClient as Redis } from '../shared/redis.js';
import { OUTBOUND_QUEUE_PREFIX } from '../queues/outbound.js';
import { WEBHOOK_QUEUE } from '../webhooks/index.js';
import type { Logger } from '../shared/logger.js';

// BullBoard over every wafleet queue. Queues are not declared here: they are found in Redis,
// because they come and go with the cluster (one outbound queue per device, the write-behind
// queues of the store sync, the webhook queue once a delivery was queued), and the board is
// refreshed so that a queue created later shows up.

/** BullMQ writes `<prefix>:<queue>:meta` when a queue is first used and `:id` with the first job. */
const QUEUE_MARKER_KEYS = ['meta', 'id'] as const;

/** Queue names under a BullMQ key prefix, found with SCAN (never KEYS). */
export async function discoverQueueNames(redis: Redis, bullPrefix: string): Promise<string[]> {
  const names = new Set<string>();
  for (const suffix of QUEUE_MARKER_KEYS) {
    await scanKeys(redis, `${bullPrefix}:*:${suffix}`, (found) => {
      for (const key of found) {
        const name = key.slice(bullPrefix.length + 1, -(suffix.length + 1));
        // BullMQ refuses ':' in queue names; anything else under the prefix is not a queue's key.
        if (name.length > 0 && !name.includes(':')) names.add(name);
      }
    });
  }
  return [...names].sort();
}

function describeQueue(name: string): string | undefined {
  if (name.startsWith(OUTBOUND_QUEUE_PREFIX)) return `Outbound messages of device ${name.slice(OUTBOUND_QUEUE_PREFIX.length)}, worked by its lease holder`;
  if (name === WEBHOOK_QUEUE) return 'Webhook deliveries of every device, worked by every server: pumps (one run per device and target) and retries; failed jobs are the dead letters';
  return undefined;
}

export interface QueueBoardOptions {
  /** A connection of the board's own: BullMQ adds listeners to it for every queue. */
  redis: Redis;
  bullPrefix: string;
  /** Where the board is mounted, e.g. /admin/queues; BullBoard builds its links from it. */
  basePath: string;
  /** Extra links in BullBoard's menu. */
  links: Array<{ text: string; url: string }>;
  log: Logger;
}

export interface QueueBoard {
  readonly router: Router;
  /** Finds the queues in Redis now and mounts any new ones; returns every mounted name. */
  refresh(): Promise<string[]>;
  readonly names: readonly string[];
  close(): Promise<void>;
}

export function createQueueBoard(options: QueueBoardOptions): QueueBoard {
  const { redis, bullPrefix, log } = options;
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(options.basePath);
  const board = createBullBoard({
    queues: [],
    serverAdapter,
    options: {
      uiConfig: {
        boardTitle: 'wafleet',
        miscLinks: options.links,
        hideDocsLink: true,
        sortQueues: true,
        // BullBoard lists a queue's workers with CLIENT LIST, once per queue per poll; with one
        // queue per device that is thousands of full client lists every few seconds. The cluster
        // page says who holds each device, and so who works its queue.
        showWorkers: false,
      },
    },
  });
  const queues = new Map<string, Queue>();
  let refreshing: Promise<string[]> | undefined;

  const refreshOnce = async (): Promise<string[]> => {
    const found = await discoverQueueNames(redis, bullPrefix);
    const present = new Set(found);
    let changed = false;
    for (const name of found) {
      if (queues.has(name)) continue;
      queues.set(name, new Queue(name, { connection: redis, prefix: bullPrefix }));
      changed = true;
    }
    for (const [name, queue] of queues) {
      if (present.has(name)) continue;
      queues.delete(name);
      await queue.close().catch(() => undefined);
      changed = true;
    }
    if (changed) {
      board.replaceQueues(
        [...queues.entries()].map(
          ([name, queue]) =>
            // Read-only: outbound messages keep their own order, retries and status records, and
            // the write-behind queues their per-device order; moving their jobs by hand from the
            // board would break both. The board is for watching.
            new BullMQAdapter(queue, { readOnlyMode: true, allowRetries: false, description: describeQueue(name) ?? '' }),
        ),
      );
      log.info({ queues: queues.size }, 'BullBoard queues updated');
    }
    return [...queues.keys()].sort();
  };

  return {
    router: serverAdapter.getRouter() as Router,
    refresh() {
      // Re-entrancy guard: a slow SCAN is never overlapped by the next refresh.
      refreshing ??= refreshOnce().finally(() => {
        refreshing = undefined;
      });
      return refreshing;
    },
    get names() {
      return [...queues.keys()].sort();
    },
    async close() {
      await refreshing?.catch(() => undefined);
      await Promise.all([...queues.values()].map((q) => q.close().catch(() => undefined)));
      queues.clear();
    },
  };
}
