import type { Logger } from '../shared/logger.js';
import type { Store } from '../store/types.js';
import type { ClusterKeys } from './keys.js';
import type { SingletonRunner } from './singleton.js';

// The store keeps every inbound event written behind (migrations/009_inbound_events.sql); without
// a bound a busy device's rows would grow for ever. One server at a time (a singleton duty, once
// per period cluster-wide) deletes events older than EVENTS_STORE_RETENTION_DAYS in bounded
// batches, each device's newest excepted, so the store always knows where its numbering stands.

/** Rows per statement: short transactions that never hold the table long. */
const BATCH = 1000;
/** Batches per round at most; a backlog bigger than that goes on in the next round. */
const MAX_BATCHES = 500;

export interface EventPrunerOptions {
  store: Pick<Store, 'pruneEvents'>;
  keys: ClusterKeys;
  singleton: SingletonRunner;
  /** Events older than this go. */
  retentionMs: number;
  intervalMs: number;
  log: Logger;
  batch?: number;
}

export interface EventPruner {
  /** One round now; resolves with the events deleted, or null when another server ran it this period. */
  round(): Promise<number | null>;
  start(): void;
  stop(): void;
}

export function createEventPruner({ store, keys, singleton, retentionMs, intervalMs, log, batch = BATCH }: EventPrunerOptions): EventPruner {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number | null> | undefined;

  const roundOnce = async () => {
    let pruned = 0;
    const ran = await singleton.run(keys.singletonLock('prune-events'), intervalMs, async () => {
      const before = new Date(Date.now() - retentionMs);
      for (let i = 0; i < MAX_BATCHES; i++) {
        const deleted = await store.pruneEvents(before, batch);
        pruned += deleted;
        if (deleted < batch) break;
      }
    });
    if (!ran) return null;
    if (pruned > 0) log.info({ pruned, retentionMs }, 'inbound events past their retention deleted from the store');
    return pruned;
  };

  const round = () =>
    (running ??= roundOnce().finally(() => {
      running = undefined;
    }));

  return {
    round,
    start() {
      timer = setInterval(() => {
        round().catch((err) => log.warn({ err }, 'pruning inbound events failed; the next round retries'));
      }, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
