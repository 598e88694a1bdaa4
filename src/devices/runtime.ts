import { LeaseLostError, SelfFencedError } from '../cluster/errors.js';
import type { DeviceRunner } from '../cluster/device-runner.js';
import type { LeaseGuard } from '../cluster/lease-guard.js';
import { monotonicNow, type MonotonicClock } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import type { ConnectionLogEventType } from '../store/connection-events.js';
import type { DeviceStatus } from '../store/types.js';
import type { AppendOutcome, WafleetEvent } from '../events/event-log.js';
import { eventIdFor } from '../events/ids.js';
import type { AuthStateStore, DeviceAuthState } from './auth-state/auth-state.js';
import { isLinked } from './auth-state/codec.js';
import type { CodePublisher } from './codes.js';
import type { DeviceConnector, DeviceSocket, DeviceSocketEvents, LinkMethod, SendableMessage, SocketMessage } from './connector.js';
import { AuthStateFencedError, DeviceNotConnectedError } from './errors.js';
import type { MediaDownloader } from './media.js';
import { backoffDelay, closeAction, DEFAULT_RECONNECT_POLICY, type ReconnectPolicy } from './reconnect-policy.js';

// Runs the sockets of the devices this server holds. It opens a socket only under a lease the
// guard vouches for, and re-checks the lease (locally and in Redis) before every reconnect. It
// decides what a close means (reconnect-policy.ts): restart, back off, yield to a conflict, or
// stop for good (logged out, failed, repeatedly replaced, never linked), in which case the
// device's desired state becomes `stopped` and its lease is released (the `retire` callback).

export interface StatusSink {
  /** A fenced status write; resolves false when the write was refused (lease not held). */
  (deviceId: string, token: number, status: DeviceStatus, detail?: Record<string, unknown>): Promise<boolean>;
}

export interface ConnectionEventSink {
  /** Appends to device_connection_logs (ordered per device, written behind). */
  (deviceId: string, token: number, eventType: ConnectionLogEventType, details?: Record<string, unknown>): void;
}

export interface EventSink {
  /** Appends to the device's event log under `token`; `stale` when the lease is no longer that token's. */
  (deviceId: string, token: number, event: WafleetEvent): Promise<AppendOutcome['outcome']>;
}

/** Appends of one event tried at most this often, a back-off apart, while Redis cannot take it. */
const EVENT_APPEND_ATTEMPTS = 8;
const EVENT_APPEND_BACKOFF_MS = 250;

/** Why a device stopped for good. */
export interface Retirement {
  status: Extract<DeviceStatus, 'logged_out' | 'error' | 'conflict' | 'disconnected'>;
  reason: string;
  /** The DisconnectReason that ended it, when one did. */
  code: number | null;
}

export interface DeviceRuntimeOptions {
  connector: DeviceConnector;
  guard: LeaseGuard;
  serverId: string;
  /** This process's boot id: the lease values it holds name it (absent: the bare server id). */
  bootId?: string;
  log: Logger;
  recordStatus: StatusSink;
  recordEvent: ConnectionEventSink;
  authStates: AuthStateStore;
  codes: CodePublisher;
  /** How a device that is not linked yet links (the store's connection_method); null: QR. */
  linkMethod(deviceId: string): Promise<LinkMethod | null>;
  /** Reads the lease's holder in Redis (null: no lease). Throws when Redis cannot say. */
  leaseHolder(deviceId: string): Promise<{ serverId: string; bootId?: string; token: number } | null>;
  /**
   * The device stopped for good: the callee makes its desired state `stopped` (so nothing starts
   * it again) and releases the lease. Called after the final status is written, under the lease.
   */
  retire(deviceId: string, token: number, retirement: Retirement): Promise<void>;
  /** Fetches a message's media (through the guarded client) before its socket sends it. */
  downloadMedia: MediaDownloader;
  /** The device's event log: what WhatsApp sends back (messages received, acks) goes there. */
  appendEvent: EventSink;
  /** Our id of a message the device sent, by its WhatsApp id (an ack names only the latter); null: not ours. */
  sentMessageId(deviceId: string, waMessageId: string): Promise<string | null>;
  policy?: Partial<ReconnectPolicy>;
  random?: () => number;
  clock?: MonotonicClock;
}

export interface DeviceRunState {
  token: number;
  connected: boolean;
  /** Failed connects in a row (the back-off exponent). */
  attempts: number;
  /** 440s within the conflict window. */
  conflicts: number;
  /** Rounds (sockets) in a row that showed codes without the device being linked. */
  qrRounds: number;
  /** Codes shown since the device last connected. */
  qrRefreshes: number;
}

/** The lease core starts, stops and logs out devices through the DeviceRunner part. */
export interface DeviceRuntime extends DeviceRunner {
  /**
   * Sends through the device's connected socket, under `token`, media downloaded first. Throws
   * DeviceNotConnectedError (retry later) when the device is not running here with that token or
   * is not connected, MediaDownloadError when the media cannot be had.
   */
  send(deviceId: string, token: number, message: SendableMessage, waMessageId: string): Promise<void>;
  /** Devices with an open, connected socket. */
  readonly activeConnections: number;
  readonly running: number;
  /** Running devices by the status their socket last reported (for metrics). */
  statusCounts(): Partial<Record<DeviceStatus, number>>;
  isRunning(deviceId: string): boolean;
  /** What the runtime knows about a running device, for status pages and tests. */
  describe(deviceId: string): DeviceRunState | null;
}

/**
 * How the socket got its session: `resumed` (linked creds from Redis: started here before, or
 * moved from another server), `restored` (linked creds from the store's snapshot: Redis had none),
 * `linked` (linked by a code in this run), `new` (not linked: codes will be shown).
 */
type Session = 'resumed' | 'restored' | 'linked' | 'new';

interface Running {
  deviceId: string;
  token: number;
  log: Logger;
  auth: DeviceAuthState;
  socket?: DeviceSocket;
  /** Bumped per socket, so events of a socket that was replaced are ignored. */
  generation: number;
  opening?: Promise<void>;
  retry?: NodeJS.Timeout;
  stopped: boolean;
  connected: boolean;
  /** The status last reported for this socket. */
  status: DeviceStatus;
  connectedAt: number;
  openedAt: number;
  session: Session;
  attempts: number;
  restarts: number;
  /** Monotonic times of recent 440s. */
  conflicts: number[];
  qrRounds: number;
  qrRefreshes: number;
  codesThisRound: number;
  /** A code was accepted (515 after codes): the next socket's session is `linked`. */
  justLinked: boolean;
  /** The device's appends in flight, chained so its events reach the log in the order they came. */
  eventLog: Promise<void>;
  /** Status changes reported under this lease: each one's ordinal tells it from an earlier one to the same status. */
  statusChanges: number;
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

export function createDeviceRuntime(options: DeviceRuntimeOptions): DeviceRuntime {
  const { connector, guard, serverId, bootId, log, recordStatus, recordEvent, authStates, codes, downloadMedia, appendEvent, sentMessageId } = options;
  const policy: ReconnectPolicy = { ...DEFAULT_RECONNECT_POLICY, ...options.policy };
  const random = options.random ?? Math.random;
  const clock = options.clock ?? monotonicNow;
  const devices = new Map<string, Running>();
  const retiredListeners: Array<(deviceId: string, token: number) => void> = [];

  const report = (entry: Running, status: DeviceStatus, detail?: Record<string, unknown>): Promise<void> => {
    entry.status = status;
    entry.statusChanges += 1;
    // Users learn of it from the event log (the log refuses it, too, once the lease is another's).
    appendInOrder(entry, {
      id: eventIdFor(entry.deviceId, 'device.status', [entry.token, entry.statusChanges, status]),
      type: 'device.status',
      data: { status, ...detail },
    });
    return recordStatus(entry.deviceId, entry.token, status, detail)
      .then((written) => {
        if (!written) entry.log.warn({ status }, 'fenced status write refused: lease not held');
      })
      .catch((err) => entry.log.warn({ err, status }, 'status write failed'));
  };

  const event = (entry: Running, type: ConnectionLogEventType, details?: Record<string, unknown>) => {
    try {
      recordEvent(entry.deviceId, entry.token, type, details);
    } catch (err) {
      entry.log.warn({ err, type }, 'connection event not recorded');
    }
  };

  const withdrawCodes = (entry: Running) => {
    codes.clear(entry.deviceId, { serverId, bootId, token: entry.token }).catch((err) => entry.log.warn({ err }, 'codes not withdrawn'));
  };

  const open = (entry: Running): void => {
    const generation = ++entry.generation;
    const current = () => !entry.stopped && entry.generation === generation;
    entry.opening = (async () => {
      guard.check(entry.deviceId, entry.token);
      const { state, source } = await entry.auth.load();
      if (!current()) return;
      const linked = isLinked(state.creds);
      let link: LinkMethod | null = null;
      if (!linked) {
        link = (await options.linkMethod(entry.deviceId)) ?? { method: 'qr', phone: null };
        if (link.method === 'pairing' && !link.phone) {
          entry.log.warn('pairing requested without a phone number; showing QR codes instead');
          link = { method: 'qr', phone: null };
        }
        if (!current()) return;
      }
      entry.session = !linked ? 'new' : entry.justLinked ? 'linked' : source === 'snapshot' ? 'restored' : 'resumed';
      if (source === 'snapshot') event(entry, 'session_restored', { linked });
      entry.openedAt = clock();
      event(entry, 'connecting', { attempt: entry.attempts, session: entry.session, ...(link ? { link: link.method } : {}) });
      const socket = await connector.open({
        deviceId: entry.deviceId,
        token: entry.token,
        serverId,
        log: entry.log,
        guard: () => guard.check(entry.deviceId, entry.token),
        events: socketEvents(entry, generation),
        auth: { state, saveCreds: () => entry.auth.saveCreds() },
        link,
      });
      if (!current()) {
        await socket.close();
        return;
      }
      entry.socket = socket;
    })()
      .catch((err) => {
        if (!current()) return;
        if (err instanceof SelfFencedError) {
          entry.log.info({ reason: message(err) }, 'not opening while self-fenced');
          waitOutFence(entry);
          return;
        }
        if (err instanceof LeaseLostError) {
          // The guard refused: the core stops the device; opening now could fight.
          entry.log.info({ reason: message(err) }, 'not opening: lease no longer held');
          return;
        }
        if (err instanceof AuthStateFencedError) {
          // Redis does not show our lease, yet the guard holds it: taken (the next renewal tells,
          // and the core stops the device), or Redis lost its data and the lease is being
          // re-asserted. Try again later; the reconnect re-checks.
          entry.log.warn({ reason: message(err) }, 'auth state refused the lease; retrying later');
          scheduleReconnect(entry, null, 'lease not visible in Redis');
          return;
        }
        entry.log.warn({ err }, 'socket failed to open');
        event(entry, 'error', { phase: 'open', message: message(err) });
        scheduleReconnect(entry, null, 'open failed');
      })
      .finally(() => {
        if (entry.generation === generation) entry.opening = undefined;
      });
  };

  const socketEvents = (entry: Running, generation: number): DeviceSocketEvents => {
    let ended = false;
    const live = () => !ended && !entry.stopped && entry.generation === generation;
    return {
      status(status, detail) {
        if (!live()) return;
        if (status === 'connected') onConnected(entry);
        else void report(entry, status, detail);
      },
      qr(qr, ttlMs) {
        if (live()) onCode(entry, 'qr', qr, ttlMs);
      },
      pairingCode(code, ttlMs) {
        if (live()) onCode(entry, 'pairing', code, ttlMs);
      },
      closed(code, reason) {
        if (!live()) return;
        ended = true;
        entry.socket = undefined;
        onClosed(entry, code, reason);
      },
      inbound(messages) {
        if (!live()) return Promise.resolve();
        for (const received of messages) {
          appendInOrder(entry, { id: eventIdFor(entry.deviceId, 'message.received', [received.waMessageId]), type: 'message.received', data: received });
        }
        return entry.eventLog;
      },
      acks(acks) {
        if (!live()) return Promise.resolve();
        for (const ack of acks) {
          // The id is WhatsApp's, so a redelivered receipt is the same event whatever the lookup finds.
          appendInOrder(entry, async () => ({
            id: eventIdFor(entry.deviceId, 'message.ack', [ack.waMessageId, ack.status]),
            type: 'message.ack',
            data: { messageId: await sentMessageId(entry.deviceId, ack.waMessageId), ...ack },
          }));
        }
        return entry.eventLog;
      },
    };
  };

  /**
   * Appends the device's events one after another, in the order its socket reported them. Baileys
   * has acknowledged a message to WhatsApp by the time it reports it, so WhatsApp will not send it
   * again: an append Redis refuses for a moment is tried again, a back-off apart, and only given
   * up on (logged as lost) after EVENT_APPEND_ATTEMPTS. The log itself refuses an event once the
   * lease is another server's, so a paused, replaced owner adds nothing. An append answers once
   * the event is in the store as well (main's onAppended), so `entry.eventLog` settles when the
   * events reported so far are durable: the socket may acknowledge them then.
   */
  const appendInOrder = (entry: Running, eventOrLater: WafleetEvent | (() => Promise<WafleetEvent>)) => {
    entry.eventLog = entry.eventLog.then(async () => {
      // Made (an ack's lookup) in the same turn as the append, so a failed lookup is retried like one.
      const make = typeof eventOrLater === 'function' ? eventOrLater : () => Promise.resolve(eventOrLater);
      let event: WafleetEvent | undefined;
      for (let attempt = 1; ; attempt++) {
        try {
          event ??= await make();
          const outcome = await appendEvent(entry.deviceId, entry.token, event);
          if (outcome === 'stale') entry.log.warn({ type: event.type, eventId: event.id }, 'event refused: the lease is no longer held under this token');
          return;
        } catch (err) {
          if (attempt >= EVENT_APPEND_ATTEMPTS) {
            entry.log.error({ err, type: event?.type, eventId: event?.id }, 'event lost: the log could not be written');
            return;
          }
          await new Promise((r) => setTimeout(r, EVENT_APPEND_BACKOFF_MS * 2 ** (attempt - 1)).unref());
        }
      }
    });
  };

  const onConnected = (entry: Running) => {
    const connectMs = Math.round(clock() - entry.openedAt);
    const linkedNow = entry.qrRefreshes > 0;
    entry.connected = true;
    entry.connectedAt = clock();
    entry.attempts = 0;
    entry.restarts = 0;
    entry.qrRounds = 0;
    entry.codesThisRound = 0;
    entry.justLinked = false;
    if (linkedNow) withdrawCodes(entry);
    entry.qrRefreshes = 0;
    void report(entry, 'connected', { session: entry.session, connectMs });
    event(entry, 'connected', { session: entry.session, connectMs });
    entry.log.info({ session: entry.session, connectMs }, 'device connected');
  };

  const onCode = (entry: Running, kind: 'qr' | 'pairing', value: string, ttlMs: number) => {
    entry.codesThisRound += 1;
    entry.qrRefreshes += 1;
    const round = entry.qrRounds + 1;
    const refresh = entry.qrRefreshes;
    codes
      .publish(entry.deviceId, { serverId, bootId, token: entry.token }, { kind, value, ttlMs, refresh, round })
      .then((expiresAt) => {
        if (expiresAt === null) entry.log.warn({ kind }, 'code not published: lease not held');
      })
      .catch((err) => entry.log.warn({ err, kind }, 'code not published'));
    // The code links a phone to this session: it goes to the device's owner through the event log
    // (a dashboard shows it without polling), never to logs or connection events.
    const expiresAt = new Date(Date.now() + ttlMs).toISOString();
    appendInOrder(
      entry,
      kind === 'qr'
        ? { id: eventIdFor(entry.deviceId, 'device.qr', [value]), type: 'device.qr', data: { qr: value, expiresAt } }
        : { id: eventIdFor(entry.deviceId, 'device.pairing_code', [value]), type: 'device.pairing_code', data: { pairingCode: value, expiresAt } },
    );
    const details = { refresh, round, maxRounds: policy.qrMaxRounds, ttlMs };
    void report(entry, kind === 'qr' ? 'qr' : 'pairing', details);
    event(entry, kind === 'qr' ? 'qr' : 'pairing_code', details);
  };

  const onClosed = (entry: Running, code: number, reason: string) => {
    const wasConnected = entry.connected;
    entry.connected = false;
    const action = closeAction(code);
    // Closed by the guard (self-fence, lease lost): the core stops the device.
    if (action.kind === 'ignore') return;
    const showedCodes = entry.codesThisRound > 0;
    entry.codesThisRound = 0;
    if (showedCodes) withdrawCodes(entry);
    event(entry, 'disconnected', {
      code,
      reason,
      action: action.kind,
      ...(wasConnected ? { connectedForMs: Math.round(clock() - entry.connectedAt) } : {}),
    });
    entry.log.info({ code, reason, action: action.kind }, 'socket closed');

    switch (action.kind) {
      case 'restart':
        // WhatsApp asks for a fresh socket right after a phone accepted a code.
        if (showedCodes) entry.justLinked = true;
        event(entry, 'restart_required', { code, restarts: entry.restarts + 1 });
        entry.restarts += 1;
        if (entry.restarts <= policy.restartLimit) {
          later(entry, 0);
          return;
        }
        break;
      case 'logout':
        void logOut(entry, code, reason);
        return;
      case 'fail':
        event(entry, 'error', { code, reason });
        void retireEntry(entry, { status: 'error', reason: `WhatsApp refused the device (${code}): ${reason}`, code });
        return;
      case 'conflict':
        onConflict(entry, code, reason);
        return;
      case 'backoff':
        if (showedCodes) {
          entry.qrRounds += 1;
          if (entry.qrRounds >= policy.qrMaxRounds) {
            void retireEntry(entry, {
              status: 'disconnected',
              reason: `not linked: ${entry.qrRounds} rounds (${entry.qrRefreshes} codes) shown without a scan`,
              code,
            });
            return;
          }
        }
        break;
    }
    const delayMs = scheduleReconnect(entry, code, reason);
    void report(entry, 'disconnected', { code, reason, nextRetryAt: new Date(Date.now() + delayMs).toISOString() });
  };

  const onConflict = (entry: Running, code: number, reason: string) => {
    const now = clock();
    entry.conflicts = entry.conflicts.filter((at) => now - at < policy.conflictWindowMs);
    entry.conflicts.push(now);
    const count = entry.conflicts.length;
    try {
      guard.check(entry.deviceId, entry.token);
    } catch {
      // Not ours any more: the socket that replaced ours is the rightful one.
      entry.log.info({ code }, 'replaced by another socket after losing the lease; not reconnecting');
      return;
    }
    if (count >= policy.conflictLimit) {
      event(entry, 'conflict', { code, reason, count, windowMs: policy.conflictWindowMs, stopped: true });
      entry.log.error({ count, windowMs: policy.conflictWindowMs }, 'replaced by another socket again and again while holding the lease; stopping');
      void retireEntry(entry, {
        status: 'conflict',
        reason: `replaced by another socket ${count} times within ${policy.conflictWindowMs} ms while holding the lease`,
        code,
      });
      return;
    }
    // Never fight: the other socket keeps the session for now; retry after a back-off, and only
    // while the lease is still ours (re-checked before the reconnect).
    event(entry, 'conflict', { code, reason, count, windowMs: policy.conflictWindowMs });
    const delayMs = scheduleReconnect(entry, code, 'replaced by another socket');
    void report(entry, 'conflict', { code, reason, count, nextRetryAt: new Date(Date.now() + delayMs).toISOString() });
  };

  /** Opens a new socket after a back-off; returns the back-off (ms). */
  const scheduleReconnect = (entry: Running, code: number | null, why: string): number => {
    entry.attempts += 1;
    const { delayMs, ceilingMs } = backoffDelay(entry.attempts, policy, random);
    event(entry, 'reconnecting', { attempt: entry.attempts, delayMs, ceilingMs, code, why });
    entry.log.info({ attempt: entry.attempts, delayMs, code }, 'reconnecting after back-off');
    later(entry, delayMs);
    return delayMs;
  };

  // The core stops every device when the server self-fences, and starts the held ones again when
  // the fence lifts. A device that escaped that stop (it was starting at the moment) would be
  // left held but never opened; it checks again until the fence lifts or the core stops it.
  const waitOutFence = (entry: Running) => later(entry, backoffDelay(1, policy, random).delayMs);

  const later = (entry: Running, delayMs: number) => {
    clearTimeout(entry.retry);
    entry.retry = setTimeout(() => {
      entry.retry = undefined;
      void reconnect(entry);
    }, delayMs);
    entry.retry.unref();
  };

  // No reconnect ever runs without re-checking the lease: locally (self-fence, token), then in
  // Redis, since another server may have taken it since the last renewal.
  const reconnect = async (entry: Running): Promise<void> => {
    if (entry.stopped) return;
    try {
      guard.check(entry.deviceId, entry.token);
    } catch (err) {
      if (err instanceof SelfFencedError) {
        waitOutFence(entry);
        return;
      }
      entry.log.info({ reason: message(err) }, 'not reconnecting: lease no longer held');
      return;
    }
    let holder: { serverId: string; bootId?: string; token: number } | null;
    try {
      holder = await options.leaseHolder(entry.deviceId);
    } catch (err) {
      // Redis unreachable is not a lost lease; the self-fence deadline decides that.
      entry.log.warn({ err }, 'lease check failed; retrying later');
      if (!entry.stopped) scheduleReconnect(entry, null, 'lease check failed');
      return;
    }
    if (entry.stopped) return;
    if (holder && (holder.serverId !== serverId || holder.bootId !== bootId || holder.token !== entry.token)) {
      entry.log.warn({ holder }, 'not reconnecting: another server holds the lease now');
      await stopEntry(entry, 'lease taken by another server');
      return;
    }
    if (!holder) {
      // No lease at all: it expired (the next renewal reports it lost, and the core stops the
      // device) or Redis lost its data (the lease is being re-asserted). Not ours to use now.
      entry.log.warn('lease not in Redis; waiting before reconnecting');
      scheduleReconnect(entry, null, 'lease not in Redis');
      return;
    }
    open(entry);
  };

  const logOut = async (entry: Running, code: number, reason: string) => {
    entry.stopped = true;
    let cleared = { redis: false, store: false };
    try {
      cleared = await entry.auth.clear();
    } catch (err) {
      entry.log.warn({ err }, 'session not cleared');
    }
    if (cleared.redis) event(entry, 'session_cleared', { redis: cleared.redis, store: cleared.store, epoch: entry.token });
    event(entry, 'logged_out', { code, reason });
    entry.log.warn({ code, cleared }, 'logged out by WhatsApp; session cleared');
    await retireEntry(entry, { status: 'logged_out', reason: `logged out (${code}): ${reason}`, code });
  };

  /** Stops the device for good: final status (fenced, so before the lease goes), then retire. */
  const retireEntry = async (entry: Running, retirement: Retirement) => {
    entry.stopped = true;
    clearTimeout(entry.retry);
    await entry.opening?.catch(() => undefined);
    await entry.socket?.close().catch((err) => entry.log.warn({ err }, 'socket close failed'));
    try {
      guard.check(entry.deviceId, entry.token);
    } catch (err) {
      // Not ours any more: the device's fate is its new owner's to decide.
      entry.log.warn({ reason: message(err), status: retirement.status }, 'would stop the device for good, but the lease is gone; just stopping');
      if (devices.get(entry.deviceId) === entry) devices.delete(entry.deviceId);
      event(entry, 'stopped', { reason: `lease lost before stopping for good: ${retirement.reason}` });
      return;
    }
    await report(entry, retirement.status, { reason: retirement.reason, code: retirement.code });
    await entry.auth.close().catch(() => undefined);
    event(entry, 'stopped', { status: retirement.status, reason: retirement.reason, code: retirement.code, final: true });
    entry.log.warn({ status: retirement.status, reason: retirement.reason }, 'device stopped for good');
    try {
      await options.retire(entry.deviceId, entry.token, retirement);
    } catch (err) {
      entry.log.error({ err }, 'device could not be retired');
    }
    // Kept in the map until here, so nothing restarts it while its desired state changes.
    if (devices.get(entry.deviceId) === entry) devices.delete(entry.deviceId);
    for (const listener of retiredListeners) {
      try {
        listener(entry.deviceId, entry.token);
      } catch (err) {
        entry.log.error({ err }, 'a listener of retired devices failed');
      }
    }
  };

  /** The connected socket's send under `token`; throws DeviceNotConnectedError (retry later), or the guard's refusal. */
  const connectedSend = (deviceId: string, token: number): NonNullable<DeviceSocket['send']> => {
    const entry = devices.get(deviceId);
    if (!entry || entry.token !== token) throw new DeviceNotConnectedError(deviceId, 'not running here under this lease');
    const socket = entry.socket;
    if (!entry.connected || !socket?.send) throw new DeviceNotConnectedError(deviceId, 'not connected');
    guard.check(deviceId, token);
    return (message, waMessageId) => socket.send!(message, waMessageId);
  };

  /** Marks the device stopped (its socket's events are ignored from now on); true the first time. */
  const halt = (entry: Running): boolean => {
    const first = !entry.stopped;
    entry.stopped = true;
    clearTimeout(entry.retry);
    if (devices.get(entry.deviceId) === entry) devices.delete(entry.deviceId);
    return first;
  };

  const stopEntry = async (entry: Running, reason: string, socketAlreadyClosed = false): Promise<void> => {
    if (!halt(entry) && !socketAlreadyClosed) return;
    await entry.opening?.catch(() => undefined);
    await entry.socket?.close().catch((err) => entry.log.warn({ err }, 'socket close failed'));
    entry.socket = undefined;
    entry.connected = false;
    if (entry.codesThisRound > 0) withdrawCodes(entry);
    await entry.auth.close().catch((err) => entry.log.warn({ err }, 'auth state not closed cleanly'));
    event(entry, 'stopped', { reason });
    entry.log.info({ reason }, 'device stopped');
  };

  return {
    onRetired(listener) {
      retiredListeners.push(listener);
    },
    start(deviceId, token) {
      const current = devices.get(deviceId);
      if (current && current.token === token) {
        // Running, but idle with no socket: the guard closed it (a fence) and nothing reopens
        // it by itself. Asked to run it, open it again; otherwise this is a repeat, ignored.
        if (!current.stopped && !current.socket && !current.opening && !current.retry) open(current);
        return;
      }
      if (current) void stopEntry(current, 'superseded by a newer token');
      const entry: Running = {
        deviceId,
        token,
        log: log.child({ deviceId, token }),
        auth: authStates.forDevice(deviceId, { serverId, bootId, token, guard: () => guard.check(deviceId, token) }),
        generation: 0,
        stopped: false,
        connected: false,
        status: 'connecting',
        connectedAt: 0,
        openedAt: 0,
        session: 'new',
        attempts: 0,
        restarts: 0,
        conflicts: [],
        qrRounds: 0,
        qrRefreshes: 0,
        codesThisRound: 0,
        justLinked: false,
        eventLog: Promise.resolve(),
        statusChanges: 0,
      };
      devices.set(deviceId, entry);
      open(entry);
    },
    async send(deviceId, token, message, waMessageId) {
      // Checked before the download too: a device that cannot send here fetches nothing.
      connectedSend(deviceId, token);
      const { mediaUrl, ...content } = message;
      // Downloaded here, for both drivers, so no socket ever fetches a user's URL itself.
      const outgoing: SocketMessage = mediaUrl ? { ...content, media: await downloadMedia(mediaUrl) } : content;
      // The download takes a while: the socket, or the lease, may have gone meanwhile.
      await connectedSend(deviceId, token)(outgoing, waMessageId);
    },

    async stop(deviceId, reason) {
      const entry = devices.get(deviceId);
      if (entry) await stopEntry(entry, reason);
    },
    async stopAll(reason) {
      await Promise.all([...devices.values()].map((entry) => stopEntry(entry, reason)));
    },
    async logout(deviceId, token, reason) {
      const running = devices.get(deviceId);
      const entry = running?.token === token ? running : undefined;
      const auth = entry?.auth ?? authStates.forDevice(deviceId, { serverId, bootId, token, guard: () => guard.check(deviceId, token) });
      const deviceLog = entry?.log ?? log.child({ deviceId, token });
      // Halted first, so the socket's own close is not taken for WhatsApp logging it out.
      const halted = entry ? halt(entry) : false;
      if (entry && halted) {
        await entry.opening?.catch(() => undefined);
        const socket = entry.socket;
        entry.socket = undefined;
        await (socket?.logout ? socket.logout() : socket?.close())?.catch((err: unknown) =>
          deviceLog.warn({ err }, 'socket logout failed'),
        );
      }
      const cleared = await auth.clear();
      const target = entry ?? { deviceId, token, log: deviceLog };
      if (cleared.redis) event(target as Running, 'session_cleared', { redis: cleared.redis, store: cleared.store, epoch: token });
      event(target as Running, 'logged_out', { reason, requested: true });
      await report(target as Running, 'logged_out', { reason });
      if (entry && halted) await stopEntry(entry, reason, true);
      return cleared;
    },
    get activeConnections() {
      let n = 0;
      for (const entry of devices.values()) if (entry.connected) n++;
      return n;
    },
    get running() {
      return devices.size;
    },
    statusCounts() {
      const counts: Partial<Record<DeviceStatus, number>> = {};
      for (const entry of devices.values()) counts[entry.status] = (counts[entry.status] ?? 0) + 1;
      return counts;
    },
    isRunning: (deviceId) => devices.has(deviceId),
    describe(deviceId) {
      const entry = devices.get(deviceId);
      if (!entry) return null;
      const now = clock();
      return {
        token: entry.token,
        connected: entry.connected,
        attempts: entry.attempts,
        conflicts: entry.conflicts.filter((at) => now - at < policy.conflictWindowMs).length,
        qrRounds: entry.qrRounds,
        qrRefreshes: entry.qrRefreshes,
      };
    },
  };
}
