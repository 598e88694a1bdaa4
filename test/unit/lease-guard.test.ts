import { describe, expect, it } from 'vitest';
import { LeaseLostError, SelfFencedError } from '../../src/cluster/errors.js';
import { createLeaseGuard } from '../../src/cluster/lease-guard.js';

function setup() {
  let now = 1000;
  const guard = createLeaseGuard({ clock: () => now, selfFenceMs: 200 });
  return { guard, advance: (ms: number) => (now += ms), at: () => now };
}

describe('lease guard', () => {
  it('is fenced until the first renewal succeeds', () => {
    const { guard } = setup();
    guard.hold('d1', 1);
    expect(guard.isFenced()).toBe(true);
    expect(() => guard.check('d1', 1)).toThrow(SelfFencedError);
  });

  it('counts the self-fence deadline from when the renewal was sent, not when it was answered', () => {
    const { guard, advance, at } = setup();
    guard.hold('d1', 1);
    const sentAt = at();
    advance(150); // a slow answer
    guard.renewed(sentAt);
    expect(guard.remainingMs()).toBe(50);
    expect(() => guard.check('d1', 1)).not.toThrow();
    advance(50);
    expect(guard.isFenced()).toBe(true);
    expect(() => guard.check('d1', 1)).toThrow(/self-fenced/);
  });

  it('never moves the deadline back for an older send time', () => {
    const { guard, advance, at } = setup();
    const early = at();
    advance(100);
    guard.renewed(at());
    guard.renewed(early);
    expect(guard.remainingMs()).toBe(200);
  });

  it('refuses a token it does not hold', () => {
    const { guard, at } = setup();
    guard.renewed(at());
    guard.hold('d1', 5);
    expect(() => guard.check('d1', 4)).toThrow(LeaseLostError);
    expect(() => guard.check('d2', 1)).toThrow(/not held by this server/);
    guard.drop('d1', 4); // an older token does not drop the newer hold
    expect(guard.tokenOf('d1')).toBe(5);
    guard.drop('d1', 5);
    expect(() => guard.check('d1', 5)).toThrow(LeaseLostError);
  });

  it('revoke fences at once', () => {
    const { guard, at } = setup();
    guard.renewed(at());
    guard.revoke();
    expect(guard.isFenced()).toBe(true);
  });

  it('tells its listeners of every change, the deadline passing included, whoever renewed', async () => {
    const guard = createLeaseGuard({ clock: () => performance.now(), selfFenceMs: 100 });
    const heard: boolean[] = [];
    const unsubscribe = guard.onChange((fenced) => heard.push(fenced));
    guard.renewed(performance.now());
    expect(heard).toEqual([false]);
    guard.renewed(performance.now()); // no change, nothing said
    expect(heard).toEqual([false]);
    await new Promise((r) => setTimeout(r, 150));
    expect(heard).toEqual([false, true]);
    guard.renewed(performance.now());
    guard.revoke();
    expect(heard).toEqual([false, true, false, true]);
    unsubscribe();
    guard.renewed(performance.now());
    expect(heard).toHaveLength(4);
  });
});
