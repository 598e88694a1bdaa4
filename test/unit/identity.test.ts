import { describe, expect, it } from 'vitest';
import { generateServerId, resolveServerIdentity, serverIdProblems } from '../../src/config/identity.js';

describe('server id rules', () => {
  it.each(['srv', 'server-1', 'a.b_c-D9', 'x'.repeat(128), 'myapp-production.up.railway.app'])('accepts %s', (id) => {
    expect(serverIdProblems(id)).toEqual([]);
  });

  it('refuses ids shorter than 3 or longer than 128 characters', () => {
    expect(serverIdProblems('ab').join()).toMatch(/3-128 characters/);
    expect(serverIdProblems('x'.repeat(129)).join()).toMatch(/3-128 characters long \(got 129\)/);
  });

  it.each(['../etc', 'a..b'])("refuses '..' in %s", (id) => {
    expect(serverIdProblems(id).join()).toMatch(/'\.\.'/);
  });

  it("refuses '//'", () => {
    expect(serverIdProblems('https://host').join()).toMatch(/'\/\/'/);
  });

  it.each(['srv 1', 'srv/1', 'srv:1', 'sérveur', 'srv\n1'])('refuses characters outside a-z A-Z 0-9 _ - . in %j', (id) => {
    expect(serverIdProblems(id).join()).toMatch(/may contain only/);
  });

  it.each(['null', 'admin', 'root', 'system', 'ADMIN', 'Root', 'SyStEm', 'NULL'])('refuses the reserved word %s in any case', (id) => {
    expect(serverIdProblems(id).join()).toMatch(/reserved/);
  });

  it('does not refuse words that merely contain a reserved word', () => {
    expect(serverIdProblems('admin-1')).toEqual([]);
    expect(serverIdProblems('rootless')).toEqual([]);
  });
});

describe('server identity sources', () => {
  const generated = () => 'server-1-abcd';

  it('takes SERVER_ID first', () => {
    const { identity } = resolveServerIdentity(
      { SERVER_ID: 'from-id', RAILWAY_STATIC_URL: 'rail.app', RAILWAY_SERVICE_NAME: 'svc', HOSTNAME: 'host' },
      generated,
    );
    expect(identity).toEqual({ id: 'from-id', source: 'SERVER_ID' });
  });

  it('falls back in order: RAILWAY_STATIC_URL, RAILWAY_SERVICE_NAME, HOSTNAME', () => {
    expect(resolveServerIdentity({ RAILWAY_STATIC_URL: 'rail.app', RAILWAY_SERVICE_NAME: 'svc', HOSTNAME: 'host' }, generated).identity).toEqual({
      id: 'rail.app',
      source: 'RAILWAY_STATIC_URL',
    });
    expect(resolveServerIdentity({ RAILWAY_SERVICE_NAME: 'svc', HOSTNAME: 'host' }, generated).identity).toEqual({
      id: 'svc',
      source: 'RAILWAY_SERVICE_NAME',
    });
    expect(resolveServerIdentity({ HOSTNAME: 'host' }, generated).identity).toEqual({ id: 'host', source: 'HOSTNAME' });
  });

  it('generates server-<timestamp>-<random> when no source is set', () => {
    expect(resolveServerIdentity({}, generated).identity).toEqual({ id: 'server-1-abcd', source: 'generated' });
    const id = generateServerId(1700000000000);
    expect(id).toMatch(/^server-1700000000000-[0-9a-f]{8}$/);
    expect(serverIdProblems(id)).toEqual([]);
    expect(generateServerId()).not.toBe(generateServerId());
  });

  it('treats an empty value as unset', () => {
    expect(resolveServerIdentity({ SERVER_ID: '', HOSTNAME: 'host' }, generated).identity.source).toBe('HOSTNAME');
  });

  it('validates the chosen source instead of silently falling through to the next one', () => {
    const { identity, problems } = resolveServerIdentity({ SERVER_ID: 'admin', HOSTNAME: 'good-host' }, generated);
    expect(identity.source).toBe('SERVER_ID');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^SERVER_ID: server id "admin" .*reserved/);
  });
});
