import type { Request, Response } from 'express';
import { eventView, type EventLog, type EventView } from '../events/event-log.js';
import type { Store } from '../store/types.js';

// GET /api/events/stream: a device's events as Server-Sent Events, from any server. Events come
// from the device's log in Redis (and the store for what Redis no longer has), so where the
// device runs does not matter. Each stream polls
// the log (one XRANGE per poll on the shared connection) instead of holding a blocking read: a
// server with a thousand open streams still uses no extra Redis connection.

export interface EventSources {
  events: Pick<EventLog, 'read' | 'lastSequence'>;
  store: Pick<Store, 'listEvents'>;
}

/**
 * The device's events after `after`, oldest first: from Redis's stream, and those it no longer
 * has (trimmed, expired, or lost with Redis's data and not put back) from the store, which keeps
 * them longer. The store is asked only when Redis's answer does not start right after `after`
 * while the numbering says there is more: an open stream's idle polls never reach it.
 */
export async function readDeviceEvents({ events, store }: EventSources, deviceId: string, after: number, limit: number): Promise<EventView[]> {
  const live = (await events.read(deviceId, after, limit)).map((event) => eventView(deviceId, event));
  const next = live[0]?.sequence;
  if (next === after + 1) return live;
  if (next === undefined && (await events.lastSequence(deviceId)) <= after) return live;
  const stored = (await store.listEvents(deviceId, after, limit))
    // The store trails Redis by the write-behind: what Redis has, Redis answers.
    .filter((e) => next === undefined || e.sequence < next)
    // The store keeps the type the log gave it.
    .map(({ id, type, sequence, createdAt, data }) => ({ id, type: type as EventView['type'], deviceId, sequence, createdAt: createdAt.toISOString(), data }));
  return [...stored, ...live].slice(0, limit);
}

export interface EventStreamOptions extends EventSources {
  /** How often an open stream looks for new events. */
  pollMs?: number;
  /** A comment line this often keeps proxies from closing an idle stream. */
  keepAliveMs?: number;
  /** Streams one server keeps open at most; more are refused with 503. */
  maxStreams?: number;
}

export interface EventStreams {
  /**
   * Serves the device's events after `after` (null: only events from now on) until the client
   * goes or close() is called. Resolves when the stream ends; false when it was refused because
   * the server is at its limit or closing (nothing written).
   */
  serve(req: Request, res: Response, deviceId: string, after: number | null): Promise<boolean>;
  /** Streams open now. */
  readonly size: number;
  /** Ends every open stream and refuses new ones (shutdown: open streams would hold the listener). */
  close(): void;
}

const PAGE = 100;

export function createEventStreams({ events, store, pollMs = 500, keepAliveMs = 15_000, maxStreams = 1000 }: EventStreamOptions): EventStreams {
  const open = new Set<AbortController>();
  let closed = false;

  const pause = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done);
    });

  /** Writes and waits for the socket to take it, so a slow client holds its own stream back, not the server's memory. */
  const write = async (res: Response, chunk: string, signal: AbortSignal) => {
    if (res.write(chunk) || signal.aborted) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        res.off('drain', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      res.on('drain', done);
      signal.addEventListener('abort', done);
    });
  };

  return {
    async serve(req, res, deviceId, after) {
      if (closed || open.size >= maxStreams) return false;
      const stop = new AbortController();
      const { signal } = stop;
      open.add(stop);
      req.on('close', () => stop.abort());
      try {
        let cursor = after ?? (await events.lastSequence(deviceId));
        res.status(200).set({
          'Content-Type': 'text/event-stream; charset=utf-8',
          'Cache-Control': 'no-cache, no-transform',
          Connection: 'keep-alive',
          // nginx would otherwise buffer the stream.
          'X-Accel-Buffering': 'no',
        });
        res.flushHeaders();
        // An EventSource reconnects after this long, sending the last id it saw as Last-Event-ID.
        await write(res, `retry: 2000\n: after ${cursor}\n\n`, signal);
        let quietSince = Date.now();
        while (!signal.aborted) {
          let page: EventView[];
          try {
            page = await readDeviceEvents({ events, store }, deviceId, cursor, PAGE);
          } catch {
            // Redis failing mid-stream ends it: the client comes back with Last-Event-ID and misses nothing.
            break;
          }
          for (const event of page) {
            await write(res, `id: ${event.sequence}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`, signal);
            cursor = event.sequence;
            quietSince = Date.now();
          }
          if (page.length === PAGE) continue;
          if (Date.now() - quietSince >= keepAliveMs) {
            await write(res, ': keep-alive\n\n', signal);
            quietSince = Date.now();
          }
          await pause(pollMs, signal);
        }
      } finally {
        open.delete(stop);
        res.end();
      }
      return true;
    },

    get size() {
      return open.size;
    },

    close() {
      closed = true;
      for (const stream of open) stream.abort();
    },
  };
}
