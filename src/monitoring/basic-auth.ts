import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import { HttpError, sendError } from '../http/errors.js';
import type { RateLimiter } from '../http/rate-limit.js';
import type { Logger } from '../shared/logger.js';

// HTTP basic auth for the monitoring port. Wrong logins are counted per client IP in Redis (so the
// limit holds however many monitors run); past the limit the IP gets 429 with Retry-After for the
// rest of the window, right or wrong, or a guesser could still tell a hit by its 200. Good logins
// are never counted: the board polls every few seconds with the same credentials.

export const LOGIN_RATE_SCOPE = 'monitor-login';
export const REALM = 'wafleet monitoring';

export interface BasicCredentials {
  username: string;
  password: string;
}

/** The credentials of `Authorization: Basic <base64(user:password)>`, or null when absent or malformed. */
export function parseBasicAuth(header: string | undefined): BasicCredentials | null {
  if (!header) return null;
  const match = /^Basic ([A-Za-z0-9+/]{1,2048}={0,2})$/i.exec(header.trim());
  if (!match) return null;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

export interface BasicAuthOptions {
  username: string;
  password: string;
  limiter: RateLimiter;
  /** Wrong logins per client IP per minute; the next attempt gets 429. */
  failuresPerMinute: number;
  log: Logger;
}

export function basicAuth(options: BasicAuthOptions): RequestHandler {
  // Digests are compared, so timingSafeEqual's equal-length rule cannot leak the lengths.
  const expectedUser = digest(options.username);
  const expectedPassword = digest(options.password);
  const { limiter, failuresPerMinute, log } = options;

  const challenge = (res: Response, message: string) => {
    res.set('WWW-Authenticate', `Basic realm="${REALM}", charset="UTF-8"`);
    sendError(res, 401, 'unauthorized', message);
  };
  const refuse = (res: Response, err: unknown) => {
    if (err instanceof HttpError) {
      res.set(err.headers);
      sendError(res, err.status, err.code, err.message, err.details);
      return;
    }
    // Without Redis the failure count cannot be checked; fail closed rather than allow guessing.
    log.warn({ err }, 'login rate limit unavailable');
    sendError(res, 503, 'rate_limit_unavailable', 'Logins cannot be checked right now (Redis unreachable); try again shortly');
  };

  return async (req, res, next) => {
    const credentials = parseBasicAuth(req.headers.authorization);
    // No credentials is how every browser asks for the login prompt: not a failed login.
    if (!credentials) return challenge(res, 'Log in with ADMIN_USERNAME and ADMIN_PASSWORD');
    const ip = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    try {
      await limiter.check(LOGIN_RATE_SCOPE, ip, failuresPerMinute);
    } catch (err) {
      return refuse(res, err);
    }
    // Both comparisons always run, so the time taken does not tell which half was wrong.
    const userOk = timingSafeEqual(digest(credentials.username), expectedUser);
    const passwordOk = timingSafeEqual(digest(credentials.password), expectedPassword);
    if (userOk && passwordOk) return next();
    // Only the address: a password typed into the username field must not reach the log.
    log.warn({ ip, path: req.originalUrl.split('?')[0] }, 'monitoring login failed');
    try {
      await limiter.hit(LOGIN_RATE_SCOPE, ip, failuresPerMinute);
    } catch (err) {
      return refuse(res, err);
    }
    challenge(res, 'Wrong username or password');
  };
}
