import type { Request, RequestHandler, Response, Router } from 'express';
import { z, type ZodType } from 'zod';
import type { Logger } from '../shared/logger.js';
import { bearerToken, type Authenticator, type Caller } from './auth.js';
import { HttpError } from './errors.js';
import type { RateLimiter } from './rate-limit.js';

// Every API route is declared once, with its zod schemas; the same declaration mounts the route
// (authentication, rate limits, validation) and generates the OpenAPI document, so the two
// cannot disagree.

export type Access = 'public' | 'any' | 'internal';

export interface RouteContext<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  caller: Caller;
  req: Request;
  res: Response;
}

export interface RouteResult {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** The handler wrote the response itself (a stream) and it is over: nothing more to send. */
  streamed?: true;
}

export interface RouteSpec<P = unknown, Q = unknown, B = unknown> {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  /** Express path, e.g. `/api/devices/:id`. */
  path: string;
  summary: string;
  tag: string;
  access: Access;
  params?: ZodType<P>;
  query?: ZodType<Q>;
  body?: ZodType<B>;
  /** Extra headers the route reads (documented only). */
  headers?: Record<string, string>;
  /** Status -> description, for the OpenAPI document. */
  responses: Record<number, string>;
  /** An additional, stricter per-caller limit (requests per minute) for expensive routes. */
  strictLimitPerMinute?: number;
  handler(ctx: RouteContext<P, Q, B>): Promise<RouteResult>;
}

/** Keeps the generic types of a route while collecting routes of different shapes in one list. */
export function route<P, Q, B>(spec: RouteSpec<P, Q, B>): RouteSpec {
  return spec;
}

export interface MountDeps {
  authenticator: Authenticator;
  rateLimiter: RateLimiter;
  limits: { perKeyPerMinute: number; perIpPerMinute: number };
  log: Logger;
}

function validate<T>(schema: ZodType<T> | undefined, value: unknown, where: string): T {
  if (!schema) return undefined as T;
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw new HttpError(
    422,
    'validation_failed',
    `The request ${where} is not valid`,
    parsed.error.issues.map((issue) => ({ path: [where, ...issue.path].join('.'), message: issue.message })),
  );
}

const BODY_METHODS = new Set(['post', 'put', 'patch']);

function hasBody(req: Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

export function mountRoutes(router: Router, routes: readonly RouteSpec[], deps: MountDeps): void {
  for (const spec of routes) {
    const handler: RequestHandler = async (req, res, next) => {
      try {
        if (spec.access !== 'public') {
          // The per-IP limit comes first, so guessing keys costs the guesser, not the store.
          await deps.rateLimiter.hit('ip', req.ip ?? 'unknown', deps.limits.perIpPerMinute);
        }
        let caller: Caller = { kind: 'internal' };
        if (spec.access !== 'public') {
          const token = bearerToken(req.headers.authorization);
          const identified = token ? await deps.authenticator.identify(token) : null;
          if (!identified) throw new HttpError(401, 'unauthorized', 'A valid API key is required (Authorization: Bearer <key>)');
          if (spec.access === 'internal' && identified.kind !== 'internal') {
            throw new HttpError(403, 'forbidden', 'This endpoint needs the internal API key');
          }
          caller = identified;
          const subject = identified.kind === 'internal' ? 'internal' : identified.keyId;
          await deps.rateLimiter.hit('key', subject, deps.limits.perKeyPerMinute);
          if (spec.strictLimitPerMinute !== undefined) {
            await deps.rateLimiter.hit(`route:${spec.method}:${spec.path}`, subject, spec.strictLimitPerMinute);
          }
        }
        if (BODY_METHODS.has(spec.method) && hasBody(req) && !req.is('application/json')) {
          throw new HttpError(415, 'unsupported_media_type', 'Send the request body as application/json');
        }
        const params = validate(spec.params, req.params, 'params');
        const query = validate(spec.query, req.query, 'query');
        const body = validate(spec.body, spec.body && req.body === undefined ? {} : req.body, 'body');
        const result = await spec.handler({ params, query, body, caller, req, res });
        if (result.streamed) return;
        if (result.headers) res.set(result.headers);
        if (result.body === undefined) res.status(result.status).end();
        else res.status(result.status).json(result.body);
      } catch (err) {
        next(err);
      }
    };
    router[spec.method](spec.path, handler);
  }
}

const ERROR_SCHEMA = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} },
    },
  },
};

function jsonSchema(schema: ZodType): Record<string, unknown> {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

/** OpenAPI 3.1 from the route declarations. */
export function openApiDocument(routes: readonly RouteSpec[], info: { title: string; version: string }): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const spec of routes) {
    const path = spec.path.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters: unknown[] = [];
    for (const [where, schema] of [
      ['path', spec.params],
      ['query', spec.query],
    ] as const) {
      if (!schema) continue;
      const object = jsonSchema(schema) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, property] of Object.entries(object.properties ?? {})) {
        parameters.push({ name, in: where, required: where === 'path' || (object.required ?? []).includes(name), schema: property });
      }
    }
    for (const [name, description] of Object.entries(spec.headers ?? {})) {
      parameters.push({ name, in: 'header', required: false, description, schema: { type: 'string' } });
    }
    const responses: Record<string, unknown> = {};
    for (const [status, description] of Object.entries(spec.responses)) {
      responses[status] = Number(status) >= 400 ? { description, content: { 'application/json': { schema: ERROR_SCHEMA } } } : { description };
    }
    paths[path] ??= {};
    paths[path][spec.method] = {
      summary: spec.summary,
      tags: [spec.tag],
      ...(spec.access === 'public' ? { security: [] } : {}),
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(spec.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(spec.body) } } } } : {}),
      responses,
      ...(spec.access === 'internal' ? { 'x-wafleet-access': 'internal API key only' } : {}),
    };
  }
  return {
    openapi: '3.1.0',
    info,
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths,
  };
}
