import { createHash, randomBytes } from 'node:crypto';
import type { RedisClient as Redis } from '../../shared/redis.js';
import type { ClusterKeys } from '../../cluster/keys.js';
import { defineLuaScripts, runLua } from '../../shared/lua.js';
import type { Logger } from '../../shared/logger.js';
import { isLinked } from '../auth-state/codec.js';
import { DisconnectCode, type DeviceConnector, type DeviceSocket, type OpenDeviceOptions } from '../connector.js';
import { isBootAlive } from '../../cluster/server-exclusivity.js';
import { SIM_HISTORY_CAP } from './bounds.js';
import { createPendingDelivery } from './inbound.js';
import { simScripts as scripts } from './scripts.js';

// A simulated WhatsApp for load tests, demos and the multi-process tests. It behaves like the real
// one where it matters to wafleet:
//  - one open socket per device: a second socket kicks the first with 440 (and the kick is
//    counted, so split-brain shows up as conflicts); a socket whose process stops pinging
//    (crashed, paused) is dropped after a keep-alive timeout; sockets also drop at random if asked;
//  - linking: a device whose shared auth state is not linked is shown QR codes (or one pairing
//    code) until the simulated phone "scans", which writes the link into the creds through the
//    same fenced auth state Baileys uses, and then asks for a fresh socket (515), as WhatsApp
//    does. A device that moves to another server finds its creds linked and resumes: no new code.
//    `{p}:sim:pairings` counts the links, so a test can tell "resumed" from "needed a new QR";
//  - inbound (inbound.ts): messages written to a device and receipts of messages it sent are held
//    until a socket of the device acknowledges them, and given again to its next socket if not.

export interface SimulatedConnectorOptions {
  redis: Redis;
  /** A connection this connector may put into subscriber mode (for kicks and inbound). */
  subscriber: Redis;
  keys: ClusterKeys;
  log: Logger;
  /** Time a connect takes, like a WhatsApp handshake. */
  connectLatencyMs: number;
  /** WhatsApp drops a socket that has not pinged for this long; pings go every third of it. */
  keepAliveTimeoutMs: number;
  /** Chance (0-1) that an open socket is dropped (428) within any one minute. */
  dropPerMinute?: number;
  /** The simulated phone links the device once it has been shown this many codes; 0: never. */
  scanAfterCodes?: number;
  /** How long each QR code lives before the next one (WhatsApp: 60 s, then 20 s). */
  qrIntervalMs?: number;
  /** Codes one socket shows before WhatsApp gives up on it (408), like Baileys' QR refs. */
  codesPerSocket?: number;
  /**
   * The boot id of the process this connector runs in (its Redis connections are named for it).
   * A socket of a boot that has no connection left is one whose process died: its TCP connection
   * closed with it, so WhatsApp dropped it at once, and a new socket replaces nothing.
   */
  bootId?: string;
  random?: () => number;
}

interface OpenSocket {
  socket: DeviceSocket;
  end(code: number, reason: string): void;
}

const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** A stable fake phone number per device, so the link marker is the same wherever it is read. */
const simulatedPhone = (deviceId: string) => `99${BigInt(`0x${createHash('sha1').update(deviceId).digest('hex').slice(0, 12)}`).toString().slice(0, 10)}`;

export async function createSimulatedConnector(options: SimulatedConnectorOptions): Promise<DeviceConnector> {
  const { redis, subscriber, keys, log, connectLatencyMs, keepAliveTimeoutMs } = options;
  const dropPerMinute = options.dropPerMinute ?? 0;
  const scanAfterCodes = options.scanAfterCodes ?? 1;
  const qrIntervalMs = options.qrIntervalMs ?? 1000;
  const codesPerSocket = options.codesPerSocket ?? 5;
  const random = options.random ?? Math.random;
  defineLuaScripts(redis, Object.values(scripts));
  /** Linked sockets by socketId (kicks address them); unlinked ones (showing codes) apart. */
  const open = new Map<string, OpenSocket>();
  const linking = new Set<OpenSocket>();
  /** Per device with a linked socket here: starts a delivery of what WhatsApp holds for it. */
  const deliveries = new Map<string, () => void>();

  await subscriber.subscribe(keys.simKickChannel, keys.simInboundChannel);
  subscriber.on('message', (channel: string, message: string) => {
    if (channel === keys.simInboundChannel) {
      deliveries.get(message)?.();
      return;
    }
    if (channel !== keys.simKickChannel) return;
    const socketId = message.slice(message.indexOf(' ') + 1);
    open.get(socketId)?.end(DisconnectCode.connectionReplaced, 'conflict: replaced by another socket');
  });

  /** A socket of a device that is not linked: shows codes until the phone scans or WhatsApp gives up. */
  const showCodes = ({ deviceId, token, serverId, log: deviceLog, events, guard, auth, link }: OpenDeviceOptions): DeviceSocket => {
    let ended = false;
    let shown = 0;
    let timer: NodeJS.Timeout | undefined;
    const method = link?.method ?? 'qr';
    const entry: OpenSocket = {
      end(code, reason) {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        linking.delete(entry);
        deviceLog.info({ code, reason }, 'simulated socket closed');
        events.closed(code, reason);
      },
      socket: {
        deviceId,
        token,
        async close() {
          ended = true;
          clearTimeout(timer);
          linking.delete(entry);
        },
      },
    };
    linking.add(entry);

    const scan = async () => {
      if (ended) return;
      try {
        guard();
        // What WhatsApp's pair-success leaves in the creds: the account and who we are.
        const { creds } = auth.state;
        creds.me = { id: `${simulatedPhone(deviceId)}@s.whatsapp.net`, name: 'simulated' };
        creds.account = { details: Buffer.from(`wafleet-simulated:${deviceId}`) };
        creds.platform = 'simulated';
        creds.additionalData = { ...(creds.additionalData as object | undefined), simulated: { linkedBy: serverId, linkedAt: Date.now(), method } };
        await auth.saveCreds();
        await redis.hincrby(keys.simPairings, deviceId, 1);
      } catch (err) {
        entry.end(DisconnectCode.stopped, errorMessage(err));
        return;
      }
      entry.end(DisconnectCode.restartRequired, 'restart required');
    };

    const next = () => {
      if (ended) return;
      try {
        guard();
      } catch (err) {
        entry.end(DisconnectCode.stopped, errorMessage(err));
        return;
      }
      if (shown >= codesPerSocket) {
        entry.end(DisconnectCode.timedOut, 'QR refs attempts ended');
        return;
      }
      shown += 1;
      if (method === 'qr') events.qr(`sim-qr:${deviceId}:${shown}:${randomBytes(6).toString('hex')}`, qrIntervalMs);
      else if (shown === 1) events.pairingCode(randomBytes(4).toString('hex').toUpperCase(), qrIntervalMs * codesPerSocket);
      const scans = scanAfterCodes > 0 && shown === scanAfterCodes;
      timer = setTimeout(() => void (scans ? scan() : next()), scans ? Math.max(1, Math.floor(qrIntervalMs / 2)) : qrIntervalMs);
      timer.unref();
    };
    next();
    return entry.socket;
  };

  // Whether a boot still has a connection, asked once per boot however many sockets it had: a dead
  // boot stays dead (boot ids never come back), a live answer is trusted for a second.
  const deadBoots = new Set<string>();
  const bootChecks = new Map<string, Promise<boolean>>();
  const bootIsDead = (bootId: string): Promise<boolean> => {
    if (deadBoots.has(bootId)) return Promise.resolve(true);
    let check = bootChecks.get(bootId);
    if (!check) {
      check = isBootAlive(redis, bootId)
        .then((alive) => {
          if (alive === false) deadBoots.add(bootId);
          return alive === false;
        })
        .catch(() => false);
      bootChecks.set(bootId, check);
      setTimeout(() => bootChecks.delete(bootId), 1000).unref();
    }
    return check;
  };

  /**
   * A socket still open in the simulation whose process died (crashed, SIGKILLed) did not close
   * itself, but on the real WhatsApp the kernel closed its TCP connection when the process died:
   * WhatsApp saw it go, and the next socket kicks nothing. Closed here the same way.
   */
  const dropSocketOfDeadProcess = async (deviceId: string): Promise<void> => {
    const current = await redis.get(keys.simSocket(deviceId));
    const owner = current?.split('#')[2]?.split('-');
    if (!current || !owner || owner.length < 2 || owner[0] === options.bootId) return;
    if (!(await bootIsDead(owner[0]!))) return;
    await runLua(redis, scripts.close, [keys.simSocket(deviceId), keys.simHistory], [current, deviceId, 'closed', SIM_HISTORY_CAP]);
  };

  const connector: DeviceConnector = {
    kind: 'simulated',

    async open(openOptions: OpenDeviceOptions) {
      const { deviceId, token, serverId, log: deviceLog, events, guard, auth } = openOptions;
      guard();
      events.status('connecting');
      if (connectLatencyMs > 0) await new Promise((r) => setTimeout(r, connectLatencyMs));
      // The lease may have gone while we were connecting; a socket opened now would fight.
      guard();
      if (!isLinked(auth.state.creds)) return showCodes(openOptions);

      const socketId = `${serverId}#${token}#${options.bootId ? `${options.bootId}-` : ''}${randomBytes(4).toString('hex')}`;
      await dropSocketOfDeadProcess(deviceId);
      let ended = false;
      let pinging = false;
      const socketKey = keys.simSocket(deviceId);
      const tickMs = Math.max(20, Math.floor(keepAliveTimeoutMs / 3));
      // The chance of a drop within one tick that makes `dropPerMinute` within a minute.
      const dropPerTick = dropPerMinute > 0 ? 1 - (1 - Math.min(1, dropPerMinute)) ** (tickMs / 60_000) : 0;

      const stopTimer = () => clearInterval(timer);
      const deliver = createPendingDelivery({ redis, keys, deviceId, socketId, events, log: deviceLog, ended: () => ended });
      const forget = () => {
        stopTimer();
        open.delete(socketId);
        if (deliveries.get(deviceId) === deliver) deliveries.delete(deviceId);
      };
      const entry: OpenSocket = {
        end(code, reason) {
          if (ended) return;
          ended = true;
          forget();
          deviceLog.info({ code, reason }, 'simulated socket closed');
          events.closed(code, reason);
        },
        socket: {
          deviceId,
          token,
          async close() {
            if (ended) return;
            ended = true;
            forget();
            await runLua(redis, scripts.close, [socketKey, keys.simHistory], [socketId, deviceId, 'closed', SIM_HISTORY_CAP]);
          },
          async send(message, waMessageId) {
            guard();
            const entryJson = JSON.stringify({ waMessageId, to: message.to, type: message.type, text: message.text ?? null, mediaBytes: message.media?.length ?? null, serverId, token });
            const delivered = await runLua<number>(
              redis,
              scripts.send,
              [socketKey, keys.simSeen(deviceId), keys.simLog(deviceId), keys.simHistory],
              [socketId, waMessageId, entryJson, deviceId, SIM_HISTORY_CAP],
            );
            if (delivered === -1) throw new Error('simulated socket is not open');
          },
        },
      };
      open.set(socketId, entry);
      deliveries.set(deviceId, deliver);

      const timer = setInterval(() => {
        if (pinging || ended) return;
        try {
          guard();
        } catch (err) {
          // A paused process that wakes past its self-fence deadline must not ping a socket back
          // to life: stop here; the runtime stops the device.
          entry.end(DisconnectCode.stopped, errorMessage(err));
          return;
        }
        pinging = true;
        if (dropPerTick > 0 && random() < dropPerTick) {
          // WhatsApp closed the socket: gone on its side first, so the reconnect is no conflict.
          runLua(redis, scripts.close, [socketKey, keys.simHistory], [socketId, deviceId, 'dropped', SIM_HISTORY_CAP])
            .catch((err) => deviceLog.warn({ err }, 'simulated drop failed'))
            .finally(() => {
              pinging = false;
              entry.end(DisconnectCode.connectionClosed, 'connection closed (simulated drop)');
            });
          return;
        }
        runLua<number>(redis, scripts.ping, [socketKey, keys.simPending(deviceId)], [socketId, keepAliveTimeoutMs])
          .then((alive) => {
            if (alive === 0) entry.end(DisconnectCode.connectionLost, 'connection lost: keep-alive timed out');
            if (alive === 2) deliver();
          })
          .catch((err) => deviceLog.warn({ err }, 'simulated keep-alive failed'))
          .finally(() => {
            pinging = false;
          });
      }, tickMs);
      timer.unref();

      const kicked = await runLua<string>(
        redis,
        scripts.open,
        [socketKey, keys.simConflicts, keys.simConnects, keys.simHistory],
        [deviceId, socketId, keepAliveTimeoutMs, keys.simKickChannel, SIM_HISTORY_CAP],
      );
      if (kicked) deviceLog.warn({ kicked }, 'simulated WhatsApp kicked an older socket (conflict)');
      if (!ended) {
        events.status('connected');
        deliver();
      }
      return entry.socket;
    },

    async close() {
      for (const entry of linking) await entry.socket.close();
      await Promise.allSettled([...open.values()].map((entry) => entry.socket.close()));
      await subscriber.unsubscribe(keys.simKickChannel, keys.simInboundChannel).catch(() => undefined);
    },
  };
  log.debug({ connectLatencyMs, keepAliveTimeoutMs, dropPerMinute, scanAfterCodes }, 'simulated connector ready');
  return connector;
}
