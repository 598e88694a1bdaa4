import type { Request, Response } from 'express';
import type { EventLog, LoggedEvent } from '../events/event-log.js';

// GET /api/events/stream: a device's events as Server-Sent Events, from any server. Events come
// from the device's log in Redis, so where the device runs does not matter. Each stream polls
// the log (one XRANGE per poll on the shared connection) instead of holding a blocking read: a
// server with a thousand open streams still uses no extra Redis connection.

/** The event as every reader gets it: the pull API, this stream, and webhook bodies. */
export interface EventView {
  id: string;
  type: LoggedEvent['type'];
  deviceId: string;
  sequence: number;
  createdAt: string;
  data: unknown;
}

export function eventView(deviceId: string, { id, type, sequence, at, data }: LoggedEvent): EventView {
  return { id, type, deviceId, sequence, createdAt: new Date(at).toISOString(), data };
}

export interface EventStreamOptions {
  events: Pick<EventLog, 'read' | 'lastSequence'>;
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

export function createEventStreams({ events, pollMs = 500, keepAliveMs = 15_000, maxStreams = 1000 }: EventStreamOptions): EventStreams {
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
          let page: LoggedEvent[];
          try {
            page = await events.read(deviceId, cursor, PAGE);
          } catch {
            // Redis failing mid-stream ends it: the client comes back with Last-Event-ID and misses nothing.
            break;
          }
          for (const event of page) {
            await write(res, `id: ${event.sequence}\nevent: ${event.type}\ndata: ${JSON.stringify(eventView(deviceId, event))}\n\n`, signal);
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
