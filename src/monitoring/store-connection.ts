import type { Store } from '../store/types.js';

// The monitor reads the store (server records, lease events) but must not depend on it: it starts
// and shows queues, servers and leases while the store is down or still coming up (under pm2 the
// embedded store host starts at the same time), and connects when the store answers.

export interface StoreConnection {
  /** The store, opened on first use; rejects with the last failure while it cannot be opened. */
  get(): Promise<Store>;
  close(): Promise<void>;
}

export function createStoreConnection(open: () => Promise<Store>, options: { retryMs: number; now?: () => number }): StoreConnection {
  const now = options.now ?? Date.now;
  let store: Store | undefined;
  let opening: Promise<Store> | undefined;
  let failure: { at: number; err: Error } | undefined;
  let closed = false;

  return {
    get() {
      if (store) return Promise.resolve(store);
      if (closed) return Promise.reject(new Error('the monitor is shutting down'));
      // A failed open is not retried on every request: a page refresh must not pile up attempts.
      if (!opening && failure && now() - failure.at < options.retryMs) return Promise.reject(failure.err);
      opening ??= open()
        .then(async (opened) => {
          if (closed) {
            await opened.close();
            throw new Error('the monitor is shutting down');
          }
          store = opened;
          failure = undefined;
          return opened;
        })
        .catch((err: unknown) => {
          failure = { at: now(), err: err instanceof Error ? err : new Error(String(err)) };
          throw err;
        })
        .finally(() => {
          opening = undefined;
        });
      return opening;
    },
    async close() {
      closed = true;
      await opening?.catch(() => undefined);
      await store?.close();
      store = undefined;
    },
  };
}
