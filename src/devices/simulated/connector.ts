import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { ClusterKeys } from '../../cluster/keys.js';
import { defineLuaScripts, loadLuaScript, runLua } from '../../shared/lua.js';
import type { Logger } from '../../shared/logger.js';
import { DisconnectCode, type DeviceConnector, type DeviceSocket, type OpenDeviceOptions } from '../connector.js';

// A simulated WhatsApp for load tests, demos and the multi-process tests. It behaves like the real
// one where it matters to wafleet: one open socket per device, a second socket kicks the first
// with 440 (and the kick is counted, so split-brain shows up as conflicts), and a socket whose
// process stops pinging (crashed, paused) is dropped after a keep-alive timeout.

const LUA = new URL('./lua/', import.meta.url);
const scripts = {
  open: loadLuaScript(LUA, 'openSimSocket-3.lua'),
  ping: loadLuaScript(LUA, 'pingSimSocket-1.lua'),
  close: loadLuaScript(LUA, 'closeSimSocket-1.lua'),
};

export interface SimulatedConnectorOptions {
  redis: Redis;
  /** A connection this connector may put into subscriber mode (for kicks). */
  subscriber: Redis;
  keys: ClusterKeys;
  log: Logger;
  /** Time a connect takes, like a WhatsApp handshake. */
  connectLatencyMs: number;
  /** WhatsApp drops a socket that has not pinged for this long; pings go every third of it. */
  keepAliveTimeoutMs: number;
}

interface OpenSocket {
  socket: DeviceSocket;
  socketId: string;
  end(code: number, reason: string): void;
}

export async function createSimulatedConnector(options: SimulatedConnectorOptions): Promise<DeviceConnector> {
  const { redis, subscriber, keys, log, connectLatencyMs, keepAliveTimeoutMs } = options;
  defineLuaScripts(redis, Object.values(scripts));
  const open = new Map<string, OpenSocket>();

  await subscriber.subscribe(keys.simKickChannel);
  subscriber.on('message', (channel: string, message: string) => {
    if (channel !== keys.simKickChannel) return;
    const socketId = message.slice(message.indexOf(' ') + 1);
    open.get(socketId)?.end(DisconnectCode.connectionReplaced, 'conflict: replaced by another socket');
  });

  const connector: DeviceConnector = {
    kind: 'simulated',

    async open({ deviceId, token, serverId, log: deviceLog, events, guard }: OpenDeviceOptions) {
      guard();
      events.status('connecting');
      if (connectLatencyMs > 0) await new Promise((r) => setTimeout(r, connectLatencyMs));
      // The lease may have gone while we were connecting; a socket opened now would fight.
      guard();

      const socketId = `${serverId}#${token}#${randomBytes(4).toString('hex')}`;
      let ended = false;
      let pinging = false;
      const socketKey = keys.simSocket(deviceId);

      const stopTimer = () => clearInterval(timer);
      const entry: OpenSocket = {
        socketId,
        end(code, reason) {
          if (ended) return;
          ended = true;
          stopTimer();
          open.delete(socketId);
          deviceLog.info({ code, reason }, 'simulated socket closed');
          events.closed(code, reason);
        },
        socket: {
          deviceId,
          token,
          async close() {
            if (ended) return;
            ended = true;
            stopTimer();
            open.delete(socketId);
            await runLua(redis, scripts.close, [socketKey], [socketId]);
          },
        },
      };
      open.set(socketId, entry);

      const timer = setInterval(() => {
        if (pinging || ended) return;
        try {
          guard();
        } catch (err) {
          // A paused process that wakes past its self-fence deadline must not ping a socket back
          // to life: stop here; the runtime stops the device.
          entry.end(DisconnectCode.stopped, (err as Error).message);
          return;
        }
        pinging = true;
        runLua<number>(redis, scripts.ping, [socketKey], [socketId, keepAliveTimeoutMs])
          .then((alive) => {
            if (alive === 0) entry.end(DisconnectCode.connectionLost, 'connection lost: keep-alive timed out');
          })
          .catch((err) => deviceLog.warn({ err }, 'simulated keep-alive failed'))
          .finally(() => {
            pinging = false;
          });
      }, Math.max(20, Math.floor(keepAliveTimeoutMs / 3)));
      timer.unref();

      const kicked = await runLua<string>(
        redis,
        scripts.open,
        [socketKey, keys.simConflicts, keys.simConnects],
        [deviceId, socketId, keepAliveTimeoutMs, keys.simKickChannel],
      );
      if (kicked) deviceLog.warn({ kicked }, 'simulated WhatsApp kicked an older socket (conflict)');
      if (!ended) events.status('connected');
      return entry.socket;
    },

    async close() {
      await Promise.allSettled([...open.values()].map((entry) => entry.socket.close()));
      await subscriber.unsubscribe(keys.simKickChannel).catch(() => undefined);
    },
  };
  log.debug({ connectLatencyMs, keepAliveTimeoutMs }, 'simulated connector ready');
  return connector;
}
