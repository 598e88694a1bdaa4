import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadLuaScript, runLua } from '../../src/shared/lua.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The Lua loader: includes expanded before the content hash, so the registered name changes
// with an include, and every script in src loads with its includes in place.

let t: TestRedis;
let dir: string;
const url = (path: string) => pathToFileURL(path.endsWith('/') ? path : `${path}/`);

beforeAll(async () => {
  t = await useTestRedis();
  dir = mkdtempSync(join(tmpdir(), 'wafleet-lua-'));
  writeFileSync(join(dir, 'nowMs.lua'), '--[[ returns Redis time in ms ]]\n--- @include "redisNowMs"\nreturn redisNowMs()\n');
  writeFileSync(join(dir, 'missingInclude.lua'), '--- @include "noSuchHelper"\nreturn 1\n');
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await t.cleanup();
});

describe('Lua includes', () => {
  it('expands an include in place, and the script runs on Redis with it', async () => {
    const script = loadLuaScript(url(dir), 'nowMs.lua');
    expect(script.source).toContain('local function redisNowMs()');
    expect(script.source).not.toContain('@include');
    const [seconds, micros] = await t.redis.time();
    const redisMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const fromScript = await runLua<number>(t.redis, script, [], []);
    expect(fromScript).toBeGreaterThanOrEqual(redisMs);
    expect(fromScript - redisMs).toBeLessThan(1000);
  });

  it('names a script by its expanded text: another include text, another name', () => {
    const other = mkdtempSync(join(tmpdir(), 'wafleet-lua-inc-'));
    try {
      writeFileSync(join(other, 'redisNowMs.lua'), 'local function redisNowMs() return 0 end\n');
      const shared = loadLuaScript(url(dir), 'nowMs.lua');
      const changed = loadLuaScript(url(dir), 'nowMs.lua', url(other));
      expect(changed.source).toContain('return 0 end');
      expect(changed.command).not.toBe(shared.command);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('refuses an include that does not exist, naming the script and the include', () => {
    expect(() => loadLuaScript(url(dir), 'missingInclude.lua')).toThrow(/missingInclude\.lua includes "noSuchHelper"/);
  });

  it('every script in src loads with its includes expanded', () => {
    const root = new URL('../../src/', import.meta.url);
    const scripts = (readdirSync(root, { recursive: true }) as string[]).filter((p) => /(^|\/)lua\/[A-Za-z]+(-\d+)?\.lua$/.test(p));
    expect(scripts.length).toBeGreaterThan(20);
    for (const path of scripts) {
      const slash = path.lastIndexOf('/');
      const script = loadLuaScript(new URL(`${path.slice(0, slash + 1)}`, root), path.slice(slash + 1));
      expect(script.source, path).not.toMatch(/@include/);
    }
  });
});
