/** Monotonic milliseconds; never jumps with wall-clock changes. Injected so tests can drive it. */
export type MonotonicClock = () => number;

export const monotonicNow: MonotonicClock = () => performance.now();
