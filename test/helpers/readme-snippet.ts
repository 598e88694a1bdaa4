import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// Code the README shows users, run exactly as shown: the fenced block between
// `<!-- <name>:start -->` and `<!-- <name>:end -->` becomes a module of its own.

export function readmeSnippet(name: string): string {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf(`<!-- ${name}:start -->`);
  const end = readme.indexOf(`<!-- ${name}:end -->`);
  if (start < 0 || end < start) throw new Error(`README.md has no ${name} markers`);
  const block = /```js\n([\s\S]*?)```/.exec(readme.slice(start, end));
  if (!block) throw new Error(`README.md's ${name} section has no js code block`);
  return block[1]!;
}

export async function importReadmeSnippet<T>(name: string): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'wafleet-readme-'));
  try {
    const file = join(dir, `${name}.mjs`);
    writeFileSync(file, readmeSnippet(name));
    return (await import(pathToFileURL(file).href)) as T;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
