import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { API_DOCS_END, API_DOCS_START, apiDocsMarkdown, declaredRoutes } from '../../src/http/api-docs.js';
import { openApiDocument } from '../../src/http/routes.js';

const routes = declaredRoutes();

describe('API documentation', () => {
  it("the README's API section is what the route declarations generate (run npm run docs:api)", () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf(API_DOCS_START), readme.indexOf(API_DOCS_END) + API_DOCS_END.length);
    expect(section).toBe(apiDocsMarkdown(routes));
  });

  it('every documented call is in the OpenAPI document, and the other way round', () => {
    const document = openApiDocument(routes, { title: 't', version: '1' }) as { paths: Record<string, Record<string, unknown>> };
    const fromOpenApi = Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`));
    const fromRoutes = routes.map((r) => `${r.method.toUpperCase()} ${r.path.replace(/:([A-Za-z]+)/g, '{$1}')}`);
    expect(fromOpenApi.sort()).toEqual(fromRoutes.sort());
  });

  it('keeps every call of the contract (API.md) that is built', () => {
    const calls = new Set(routes.map((r) => `${r.method.toUpperCase()} ${r.path}`));
    for (const call of [
      'POST /api/devices',
      'GET /api/devices',
      'GET /api/devices/:id',
      'POST /api/devices/:id/connect',
      'POST /api/devices/:id/disconnect',
      'POST /api/devices/:id/logout',
      'DELETE /api/devices/:id',
      'GET /api/devices/:id/qr',
      'GET /api/devices/:id/pairing-code',
      'GET /api/servers',
      'PUT /api/servers/:id',
      'PATCH /api/servers/:id',
      'POST /api/servers/:id/drain',
      'POST /api/servers/:id/health-check',
      'DELETE /api/servers/:id',
      'GET /api/cluster',
      'POST /api/users/:userId/api-keys',
      'DELETE /api/api-keys/:id',
      'GET /health',
      'GET /ready',
      'POST /api/devices/:id/messages',
      'GET /api/messages/:id',
      'POST /send-message',
      'PUT /api/devices/:id/webhook',
      'DELETE /api/devices/:id/webhook',
      'GET /api/devices/:id/webhook/failures',
    ]) {
      expect(calls.has(call), call).toBe(true);
    }
  });
});
