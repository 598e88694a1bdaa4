import type { ErrorRequestHandler, RequestHandler, Response } from 'express';
import { WafleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';

// One error shape for every answer (API.md): {error: {code, message, details?}}.
export function sendError(res: Response, status: number, code: string, message: string, details?: unknown): void {
  res.status(status).json({ error: details === undefined ? { code, message } : { code, message, details } });
}

export const notFound: RequestHandler = (req, res) => {
  sendError(res, 404, 'not_found', `No route for ${req.method} ${req.path}`);
};

/** Maps body-parser failures to 4xx and everything unexpected to 500, never letting input crash the process. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const type = (err as { type?: string }).type;
    if (type === 'entity.parse.failed') return sendError(res, 400, 'invalid_json', 'The request body is not valid JSON');
    if (type === 'entity.too.large') return sendError(res, 413, 'body_too_large', 'The request body is too large');
    if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
      return sendError(res, 415, 'unsupported_encoding', 'The request body encoding is not supported');
    }
    if (err instanceof WafleetError) log.warn({ err, path: req.path }, 'request failed');
    else log.error({ err, path: req.path }, 'unhandled error in request');
    if (res.headersSent) return;
    sendError(res, 500, 'internal_error', 'Internal server error');
  };
}
