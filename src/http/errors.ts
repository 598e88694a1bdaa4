import type { ErrorRequestHandler, RequestHandler, Response } from 'express';
import { WafleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { StoreUnavailableError } from '../store/errors.js';

/** Retry-After for a call refused while the store is down: store outages are mostly brief. */
const STORE_RETRY_AFTER_S = 2;

// One error shape for every answer (the contract, GET /openapi.json): {error: {code, message, details?}}.

/** An error that is the caller's to fix (or to wait out): answered with its status, never logged as a fault. */
export class HttpError extends WafleetError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
    readonly details?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(code, message);
  }
}

export function sendError(res: Response, status: number, code: string, message: string, details?: unknown): void {
  res.status(status).json({ error: details === undefined ? { code, message } : { code, message, details } });
}

export const notFound: RequestHandler = (req, res) => {
  sendError(res, 404, 'not_found', `No route for ${req.method} ${req.path}`);
};

/** Maps body-parser failures to 4xx and everything unexpected to 500, never letting input crash the process. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (res.headersSent) return;
    if (err instanceof HttpError) {
      res.set(err.headers);
      return sendError(res, err.status, err.code, err.message, err.details);
    }
    if (err instanceof StoreUnavailableError) {
      // The store is where a call's truth is (a device, an accepted message): without it nothing
      // was done, and the same call (with the same Idempotency-Key) can be retried shortly, here
      // or on any other server.
      log.warn({ code: err.code, path: req.path }, 'store unavailable; request refused');
      res.set('Retry-After', String(STORE_RETRY_AFTER_S));
      return sendError(res, 503, 'store_unavailable', 'The durable store is unavailable; nothing was done. Retry shortly');
    }
    const type = (err as { type?: string }).type;
    if (type === 'entity.parse.failed') return sendError(res, 400, 'invalid_json', 'The request body is not valid JSON');
    if (type === 'entity.too.large') return sendError(res, 413, 'body_too_large', 'The request body is too large');
    if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
      return sendError(res, 415, 'unsupported_encoding', 'The request body encoding is not supported');
    }
    // Other body-parser failures (a bad content-length, an aborted upload) are the client's too.
    const status = (err as { status?: number }).status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      return sendError(res, status, 'bad_request', 'The request could not be read');
    }
    if (err instanceof WafleetError) log.warn({ err, path: req.path }, 'request failed');
    else log.error({ err, path: req.path }, 'unhandled error in request');
    sendError(res, 500, 'internal_error', 'Internal server error');
  };
}
