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
