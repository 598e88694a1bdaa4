import type { LeaseGuard } from '../cluster/lease-guard.js';
import type { Logger } from '../shared/logger.js';
import type { DeviceStatus } from '../store/types.js';
import { DisconnectCode, type DeviceConnector, type DeviceSocket } from './connector.js';

// Runs the sockets of the devices this server holds. It opens a socket only under a lease the
// guard vouches for, re-checks the lease before every reconnect, and never fights over a device:
// a socket replaced by another (440) backs off and only retries while the lease is still ours.

export interface StatusSink {
  /** A fenced status write; resolves false when the write was refused (lease not held). */
  (deviceId: string, token: number, status: DeviceStatus, detail?: Record<string, unknown>): Promise<boolean>;
}

export interface DeviceRuntimeOptions {
  connector: DeviceConnector;
  guard: LeaseGuard;
  serverId: string;
  log: Logger;
  recordStatus: StatusSink;
  /** Reconnect back-off: base and cap, ms; jittered. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
}

export interface DeviceRuntime {
  /** Starts the device's socket under the token the guard holds for it. */
  start(deviceId: string, token: number): void;
  /** Stops the socket; the session is kept (never a logout). */
  stop(deviceId: string, reason: string): Promise<void>;
  stopAll(reason: string): Promise<void>;
  /** Devices with an open, connected socket. */
  readonly activeConnections: number;
  readonly running: number;
  isRunning(deviceId: string): boolean;
}

interface Running {
  token: number;
  socket?: DeviceSocket;
  connected: boolean;
  attempts: number;
  retry?: NodeJS.Timeout;
  stopped: boolean;
  opening?: Promise<void>;
}

export function createDeviceRuntime(options: DeviceRuntimeOptions): DeviceRuntime {
  const { connector, guard, serverId, log, recordStatus } = options;
  const backoffBaseMs = options.backoffBaseMs ?? 500;
  const backoffCapMs = options.backoffCapMs ?? 30_000;
  const devices = new Map<string, Running>();

  const report = (deviceId: string, token: number, status: DeviceStatus, detail?: Record<string, unknown>) => {
    recordStatus(deviceId, token, status, detail)
      .then((written) => {
        if (!written) log.warn({ deviceId, token, status }, 'fenced status write refused: lease not held');
      })
      .catch((err) => log.warn({ err, deviceId }, 'status write failed'));
  };

  const open = (deviceId: string, entry: Running): void => {
    const deviceLog = log.child({ deviceId, token: entry.token });
    entry.opening = connector
      .open({
        deviceId,
        token: entry.token,
        serverId,
        log: deviceLog,
        guard: () => guard.check(deviceId, entry.token),
        events: {
          status(status, detail) {
            if (entry.stopped) return;
            entry.connected = status === 'connected';
            if (entry.connected) entry.attempts = 0;
            report(deviceId, entry.token, status, detail);
          },
          closed(code, reason) {
            entry.socket = undefined;
            entry.connected = false;
            if (entry.stopped) return;
            onClosed(deviceId, entry, code, reason);
          },
        },
      })
      .then((socket) => {
        if (entry.stopped) return socket.close();
        entry.socket = socket;
      })
      .catch((err) => {
        if (entry.stopped) return;
        deviceLog.warn({ err: { message: (err as Error).message } }, 'socket failed to open');
        scheduleReconnect(deviceId, entry, 'open failed');
      })
      .finally(() => {
        entry.opening = undefined;
      });
  };

  const scheduleReconnect = (deviceId: string, entry: Running, why: string): void => {
    entry.attempts += 1;
    const ceiling = Math.min(backoffCapMs, backoffBaseMs * 2 ** (entry.attempts - 1));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    log.info({ deviceId, token: entry.token, delayMs: delay, why }, 'reconnecting after back-off');
    entry.retry = setTimeout(() => {
      entry.retry = undefined;
      if (entry.stopped) return;
      // No reconnect ever runs without re-checking the lease.
      try {
        guard.check(deviceId, entry.token);
      } catch (err) {
        log.info({ deviceId, reason: (err as Error).message }, 'not reconnecting: lease no longer held');
        return;
      }
      open(deviceId, entry);
    }, delay);
    entry.retry.unref();
  };

  const onClosed = (deviceId: string, entry: Running, code: number, reason: string): void => {
    switch (code) {
      case DisconnectCode.stopped:
        // Closed because the guard refused (self-fence or lease lost): the core stops the device.
        return;
      case DisconnectCode.connectionReplaced:
        report(deviceId, entry.token, 'conflict', { reason });
        scheduleReconnect(deviceId, entry, 'replaced by another socket (440)');
        return;
      case DisconnectCode.restartRequired:
        open(deviceId, entry);
        return;
      default:
        report(deviceId, entry.token, 'connecting', { code, reason });
        scheduleReconnect(deviceId, entry, `closed with ${code}`);
    }
  };

  const stopEntry = async (deviceId: string, entry: Running, reason: string): Promise<void> => {
    entry.stopped = true;
    clearTimeout(entry.retry);
    devices.delete(deviceId);
    await entry.opening?.catch(() => undefined);
    await entry.socket?.close().catch((err) => log.warn({ err, deviceId }, 'socket close failed'));
    log.info({ deviceId, token: entry.token, reason }, 'device stopped');
  };

  return {
    start(deviceId, token) {
      const current = devices.get(deviceId);
      if (current && current.token === token) return;
      if (current) void stopEntry(deviceId, current, 'superseded by a newer token');
      const entry: Running = { token, connected: false, attempts: 0, stopped: false };
      devices.set(deviceId, entry);
      open(deviceId, entry);
    },
    async stop(deviceId, reason) {
      const entry = devices.get(deviceId);
      if (entry) await stopEntry(deviceId, entry, reason);
    },
    async stopAll(reason) {
      await Promise.all([...devices].map(([deviceId, entry]) => stopEntry(deviceId, entry, reason)));
    },
    get activeConnections() {
      let n = 0;
      for (const entry of devices.values()) if (entry.connected) n++;
      return n;
    },
    get running() {
      return devices.size;
    },
    isRunning: (deviceId) => devices.has(deviceId),
  };
}
