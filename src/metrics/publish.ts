import type { RedisClient as Redis } from '../shared/redis.js';
import type { ClusterKeys } from '../cluster/keys.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics } from './index.js';

// Each server publishes its metrics to Redis every heartbeat period, so the monitoring port can
// answer one scrape for the whole cluster without calling every server (which may be on another
// host, or dead). The key lives a few periods: a server that dies drops out of the aggregate by
// itself, and one that leaves (drain) removes its key.

/** Periods a published snapshot outlives its server's last publish. */
export const SNAPSHOT_PERIODS = 3;

export interface MetricsPublisher {
  /** Publishes now; resolves when written (or failed, which is only logged). */
  publish(): Promise<void>;
  /** Stops publishing and removes the snapshot. */
  stop(): Promise<void>;
}

export function startMetricsPublisher(options: {
  redis: Redis;
  keys: ClusterKeys;
  metrics: Metrics;
  serverId: string;
  intervalMs: number;
  log: Logger;
}): MetricsPublisher {
  const { redis, keys, metrics, serverId, intervalMs, log } = options;
  const key = keys.metrics(serverId);
  let inFlight: Promise<void> | undefined;
  let stopped = false;
  let warned = false;

  const publishOnce = async () => {
    try {
      const snapshot = await metrics.registry.getMetricsAsJSON();
      if (stopped) return;
      await redis.set(key, JSON.stringify({ serverId, at: Date.now(), metrics: snapshot }), 'PX', intervalMs * SNAPSHOT_PERIODS);
      warned = false;
    } catch (err) {
      // Once per outage: the heartbeat already reports Redis trouble loudly.
      if (!warned) log.warn({ err }, 'metrics snapshot not published');
      warned = true;
    }
  };
  const publish = () => {
    inFlight ??= publishOnce().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  const timer = setInterval(() => void publish(), intervalMs);
  timer.unref();
  void publish();

  return {
    publish,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await inFlight;
      await redis.del(key).catch(() => undefined);
    },
  };
}
