import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { StoreHostLockedError } from './errors.js';

// Only one process may ever open a PGlite data directory: two would corrupt it. The lock file
// sits beside the directory (PostgreSQL owns what is inside) and names its holder, so a lock
// left by a crashed host can be taken over.

interface LockOwner {
  pid: number;
  hostname: string;
  /** Tells a fresh process from its crashed predecessor when both got the same pid (containers). */
  instance: string;
  acquiredAt: string;
}

const INSTANCE = randomUUID();

export interface HostLock {
  readonly path: string;
  release(): Promise<void>;
}

export function hostLockPath(dataDir: string): string {
  return `${resolve(dataDir)}.lock`;
}

/** Takes the lock or throws StoreHostLockedError naming the live holder. */
export async function acquireHostLock(dataDir: string): Promise<HostLock> {
  const path = hostLockPath(dataDir);
  await mkdir(dirname(path), { recursive: true });
  const mine = JSON.stringify(owner());
  let lastOwner: LockOwner | undefined;

  for (let attempt = 0; attempt < 20; attempt++) {
    if (await createExclusive(path, mine)) {
      return { path, release: () => removeIf(path, mine) };
    }
    const current = await readText(path);
    if (current === null) continue; // released meanwhile; try again
    const holder = parseOwner(current);
    if (holder && isAlive(holder)) {
      throw new StoreHostLockedError(path, holder.pid);
    }
    lastOwner = holder ?? lastOwner;
    await takeOverStale(path, current);
  }
  throw new StoreHostLockedError(path, lastOwner?.pid ?? 0);
}

/**
 * Removes a stale lock unless someone else is already doing so. Without the guard, two
 * processes that both saw the stale lock could each delete it, the second deleting the fresh
 * lock the first had just created, and both would host.
 */
async function takeOverStale(path: string, staleContent: string): Promise<void> {
  const guard = `${path}.takeover`;
  const guardContent = JSON.stringify(owner());
  if (!(await createExclusive(guard, guardContent))) {
    const holder = parseOwner((await readText(guard)) ?? '');
    if (holder && !isAlive(holder)) await removeIf(guard, JSON.stringify(holder));
    await sleep(25);
    return;
  }
  try {
    // Still the very lock we judged stale, not a new one created since.
    if ((await readText(path)) === staleContent) await unlink(path).catch(ignoreMissing);
  } finally {
    await removeIf(guard, guardContent);
  }
}

function owner(): LockOwner {
  return { pid: process.pid, hostname: hostname(), instance: INSTANCE, acquiredAt: new Date().toISOString() };
}

/** Atomic create-if-absent with complete content: readers never see a half-written file. */
async function createExclusive(path: string, content: string): Promise<boolean> {
  const temp = `${path}.${process.pid}.${randomUUID()}.tmp`;
  await writeFile(temp, content, { flag: 'wx' });
  try {
    await link(temp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(temp).catch(ignoreMissing);
  }
}

function isAlive(holder: LockOwner): boolean {
  // A lock written on another machine (shared volume) cannot be checked; assume it is held.
  if (holder.hostname !== hostname()) return true;
  if (holder.pid === process.pid) return holder.instance === INSTANCE;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseOwner(text: string): LockOwner | null {
  try {
    const value = JSON.parse(text) as Partial<LockOwner>;
    return typeof value.pid === 'number' && typeof value.instance === 'string' && typeof value.hostname === 'string'
      ? (value as LockOwner)
      : null;
  } catch {
    return null;
  }
}

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function removeIf(path: string, content: string): Promise<void> {
  if ((await readText(path)) === content) await unlink(path).catch(ignoreMissing);
}

function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
