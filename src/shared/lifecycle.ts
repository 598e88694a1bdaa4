import { ConfigError, WafleetError } from './errors.js';
import type { Logger } from './logger.js';

// Start-up and shutdown plumbing shared by the process entry points (src/main.ts, src/monitor.ts).

export type Cleanup = { name: string; run: () => Promise<unknown> };

/** Cleanups run newest first, each guarded, so one failure never skips the rest. */
export async function runCleanups(cleanups: Cleanup[], log: Logger): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup.run();
    } catch (err) {
      log.warn({ err, cleanup: cleanup.name }, 'cleanup failed');
    }
  }
}

/**
 * SIGTERM and SIGINT (pm2 stop, restart, deploy) run `shutdown` and exit 0 when it is done. The
 * hard stop keeps a wedged cleanup from outliving pm2's kill timeout silently: past
 * `shutdownTimeoutMs` the process exits 1. `shutdown` must be safe to call more than once.
 */
export function exitOnSignals(options: { log: Logger; shutdownTimeoutMs: number; shutdown: (signal: NodeJS.Signals) => Promise<void> }): void {
  const { log, shutdownTimeoutMs, shutdown } = options;
  const onSignal = (signal: NodeJS.Signals) => {
    const hardStop = setTimeout(() => {
      log.error({ timeoutMs: shutdownTimeoutMs }, 'shutdown deadline passed; exiting');
      log.flush();
      process.exit(1);
    }, shutdownTimeoutMs);
    hardStop.unref();
    void shutdown(signal).then(() => {
      log.flush();
      process.exit(0);
    });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled promise rejection'));
}

export interface EntryPoint<C> {
  /** Names the process in a configuration error (stderr, as no logger exists yet). */
  name: string;
  /** Reads and validates the configuration; throws ConfigError on bad input. */
  loadConfig(): C;
  logger(config: C): Logger;
  shutdownTimeoutMs(config: C): number;
  /** Starts the process's work; what it answers stops it (drain first where there is anything to hand over). */
  start(config: C, log: Logger): Promise<{ shutdown(reason: string): Promise<void> }>;
  /** A start-up failure's message for the operator, when it is a known one (a port in use). */
  explainStartFailure?(err: unknown, config: C): string | undefined;
}

/**
 * An entry point's whole life: configuration (exit 1 with the reason on bad input), start (exit
 * code 1 with the reason logged when it fails), then shutdown on SIGTERM/SIGINT.
 */
export async function runEntryPoint<C>(entry: EntryPoint<C>): Promise<void> {
  let config: C;
  try {
    config = entry.loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      // No logger yet: LOG_LEVEL itself may be what is wrong.
      process.stderr.write(`${entry.name}: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const log = entry.logger(config);

  let running: { shutdown(reason: string): Promise<void> };
  try {
    running = await entry.start(config, log);
  } catch (err) {
    const known = entry.explainStartFailure?.(err, config);
    if (err instanceof WafleetError) log.fatal({ code: err.code }, err.message);
    else if (known) log.fatal(known);
    else log.fatal({ err }, `${entry.name} start-up failed`);
    log.flush();
    process.exitCode = 1;
    return;
  }

  exitOnSignals({ log, shutdownTimeoutMs: entry.shutdownTimeoutMs(config), shutdown: (signal) => running.shutdown(signal) });
}
