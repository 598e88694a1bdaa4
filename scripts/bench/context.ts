import type { Redis } from 'ioredis';
import type { Figure } from '../../harness/bench/report.js';

// The contract between the runner (index.ts) and each scenario.

export interface BenchContext {
  /** Small sizes, for CI: the point is that the bench keeps working, not the figures. */
  quick: boolean;
  redisUrl: string;
  /** The runner's own connection, for INFO and clean-up; scenarios open their own for load. */
  redis: Redis;
  /** A progress line on stderr, so stdout stays the tables. */
  progress(message: string): void;
  /**
   * Registers a clean-up (kill processes, remove keys, drop a database). It runs when the
   * scenario ends, fails, or the bench is interrupted (Ctrl-C, SIGTERM), newest first.
   */
  defer(cleanup: () => Promise<unknown>): void;
  /**
   * What the scenario measured so far: a scenario that measures several sizes adds each size's
   * figures here as it goes, so a failure at the largest keeps the others. run() returns it.
   */
  output: ScenarioOutput & { notes: string[] };
}

export interface ScenarioOutput {
  parameters: Record<string, unknown>;
  figures: Figure[];
  notes?: string[];
}

export interface Scenario {
  id: string;
  title: string;
  run(ctx: BenchContext): Promise<ScenarioOutput>;
}
