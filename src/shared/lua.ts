import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ChainableCommander } from 'ioredis';
import type { RedisClient as Redis } from './redis.js';

// Lua scripts live in their own files named `verbNoun-<numKeys>.lua` (or `verbNoun.lua` when the
// number of keys varies per call). Each is registered once per connection under a name carrying
// its content hash, so two deployed versions never run each other's Lua. A line
// `--- @include "name"` is replaced by `lua-includes/name.lua` (shared helpers such as
// redisNowMs) before hashing, so a changed include changes every name that uses it.

export interface LuaScript {
  /** Name the command is registered under on the client. */
  readonly command: string;
  /** Fixed number of keys, or undefined when the caller passes them per call. */
  readonly numberOfKeys: number | undefined;
  readonly source: string;
}

const INCLUDES = new URL('./lua-includes/', import.meta.url);
const INCLUDE_LINE = /^--- @include "([A-Za-z]+)"[ \t]*$/gm;

/** Expands the script's includes, each at most once (an include may include others). */
function expandLuaIncludes(source: string, fileName: string, includes: URL = INCLUDES, seen = new Set<string>()): string {
  return source.replace(INCLUDE_LINE, (_line, name: string) => {
    if (seen.has(name)) return `-- (${name} included above)`;
    seen.add(name);
    let included: string;
    try {
      included = readFileSync(new URL(`${name}.lua`, includes), 'utf8');
    } catch {
      throw new Error(`${fileName} includes "${name}", but there is no ${name}.lua in ${includes.pathname}`);
    }
    return expandLuaIncludes(included.trimEnd(), fileName, includes, seen);
  });
}

export function loadLuaScript(directory: URL, fileName: string, includes: URL = INCLUDES): LuaScript {
  const source = expandLuaIncludes(readFileSync(new URL(fileName, directory), 'utf8'), fileName, includes);
  const match = /^([A-Za-z]+)(?:-(\d+))?\.lua$/.exec(fileName);
  if (!match) throw new Error(`Lua file name ${fileName} is not verbNoun[-numKeys].lua`);
  const version = createHash('sha1').update(source).digest('hex').slice(0, 8);
  return {
    command: `wafleet_${match[1]}_${version}`,
    numberOfKeys: match[2] === undefined ? undefined : Number(match[2]),
    source,
  };
}

const defined = new WeakMap<Redis, Set<string>>();

/**
 * Registers scripts on a connection. Pipelines copy the commands defined when they are created,
 * so whatever queues scripts on a pipeline defines them first, at construction.
 */
export function defineLuaScripts(redis: Redis, scripts: readonly LuaScript[]): void {
  for (const script of scripts) ensureDefined(redis, script);
}

function ensureDefined(redis: Redis, script: LuaScript): void {
  let names = defined.get(redis);
  if (!names) {
    names = new Set();
    defined.set(redis, names);
  }
  if (names.has(script.command)) return;
  redis.defineCommand(script.command, {
    lua: script.source,
    ...(script.numberOfKeys === undefined ? {} : { numberOfKeys: script.numberOfKeys }),
  });
  names.add(script.command);
}

function argsFor(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): (string | number)[] {
  if (script.numberOfKeys !== undefined && keys.length !== script.numberOfKeys) {
    throw new Error(`${script.command} takes ${script.numberOfKeys} keys, got ${keys.length}`);
  }
  return script.numberOfKeys === undefined ? [keys.length, ...keys, ...args] : [...keys, ...args];
}

type Invoker = Record<string, (...args: (string | number)[]) => Promise<unknown>>;

/** Runs a script (EVALSHA, falling back to EVAL when Redis does not have it yet). */
export async function runLua<T>(redis: Redis, script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<T> {
  ensureDefined(redis, script);
  return (await (redis as unknown as Invoker)[script.command]!(...argsFor(script, keys, args))) as T;
}

/** Queues a script on a pipeline (so several calls share one round trip); see defineLuaScripts. */
export function queueLua(
  pipeline: ChainableCommander,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
): void {
  const invoke = (pipeline as unknown as Record<string, ((...a: (string | number)[]) => unknown) | undefined>)[script.command];
  if (!invoke) throw new Error(`${script.command} was not defined before the pipeline was created`);
  invoke.call(pipeline, ...argsFor(script, keys, args));
}
