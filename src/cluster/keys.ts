// Every Redis key wafleet uses, built from one injected prefix. All of them share the hash tag
// `{prefix}`, so a Lua script may touch several of them on Redis Cluster (one slot).

export interface ClusterKeys {
  readonly prefix: string;
  /** string `serverId:token`, PX TTL: the device's owner and fencing token */
  lease(deviceId: string): string;
  /** integer: last fencing token handed out for the device; never goes down */
  fence(deviceId: string): string;
  /**
   * sorted set holder (`serverId@bootId`) -> deadline (ms, Redis TIME), never before any of the
   * holder's leases expires: one entry per process, moved once per heartbeat; the sweep reads it
   */
  readonly holderDeadlines: string;
  /** hash deviceId -> `serverId:token` of the last claim, so an expired lease still names its owner */
  readonly holders: string;
  /** hash, PX TTL: a live server's advertised state */
  server(serverId: string): string;
  /**
   * hash `bootId`, `url`, PX TTL: the boot (process start) that claimed the server id while it
   * starts, until its heartbeat names it in `server`; a second process with the same id is
   * refused while either names a boot that still has a connection to Redis
   */
  serverClaim(serverId: string): string;
  /** set: devices held by the server */
  owned(serverId: string): string;
  /** set: every server id that has ever heartbeated and not left; placement iterates it */
  readonly servers: string;
  /** sorted set deviceId -> reservation deadline: capacity reserved on the server, not yet claimed */
  reserved(serverId: string): string;
  /** sorted set deviceId -> reservation deadline, over all servers; the sweep re-places expired ones */
  readonly placements: string;
  /** hash deviceId -> serverId the device was placed on */
  readonly placementTargets: string;
  /** stream: the server's inbox (placements to claim, release requests) */
  inbox(serverId: string): string;
  /** string: proves Redis still has wafleet's data; missing means Redis lost it */
  readonly marker: string;
  /**
   * string: the run id of the Redis (the master, under Sentinel or Cluster) on which the fences
   * were last re-seeded; a different run id now means Redis restarted or failed over since, and
   * may have lost the newest fence increments, so nothing may claim until they are re-seeded
   */
  readonly incarnation: string;
  /** string, PX TTL: while it exists nobody claims (set after Redis lost its data) */
  readonly claimEmbargo: string;
  /**
   * string, PX TTL, extended while held (redlock): the one server re-seeding after Redis lost
   * its data; the others wait for it instead of reading the whole store as well
   */
  readonly reseedLock: string;
  /**
   * integer: every token granted is above it. Each re-seed after Redis lost its data raises it
   * to the store's new incarnation epoch times 2^32, so no token of an earlier Redis incarnation
   * (whose record may never have reached the store) is ever granted again
   */
  readonly tokenFloor: string;
  /** hash, fenced: a device's live status as its owner last reported it */
  deviceStatus(deviceId: string): string;
  /** Simulated WhatsApp (the `simulated` connector): the device's open socket, PX keep-alive */
  simSocket(deviceId: string): string;
  /** Simulated WhatsApp: hash deviceId -> conflicts (440 kicks), plus field `total` */
  readonly simConflicts: string;
  /** Simulated WhatsApp: hash deviceId -> sockets opened */
  readonly simConnects: string;
  /** Simulated WhatsApp: pub/sub channel on which kicked sockets learn of it */
  readonly simKickChannel: string;
  /** Simulated WhatsApp: pub/sub channel (message: deviceId) on which a device's socket learns it has something pending */
  readonly simInboundChannel: string;
  /**
   * Simulated WhatsApp: stream, capped and PX-bounded, of what it holds for the device until a
   * socket acknowledges it: messages sent to the device and receipts of messages it sent
   */
  simPending(deviceId: string): string;
  /** Simulated WhatsApp: counter that makes the ids of messages sent to devices unique */
  readonly simInboundSeq: string;
  /** set: devices whose desired state is `running`; placement places nothing else */
  readonly wanted: string;
  /** string counter with PX: requests in the current window of a rate limit */
  rateLimit(scope: string, subject: string): string;
  /** hash: an outbound message's record (status, timestamps, WhatsApp id); kept for the retention period */
  message(messageId: string): string;
  /** sorted set messageId -> send time (ms): the device's sends in its rate window */
  sendTimes(deviceId: string): string;
  /** Hash deviceId -> messages per minute, for devices whose limit differs from the default. */
  readonly rateOverrides: string;
  /** BullMQ's key prefix: its queues share the hash tag, so they live in the same slot */
  readonly bullPrefix: string;
  /**
   * One key of BullMQ's own layout for a queue, `<bullPrefix>:<queue>:<part>`: a list or set
   * (`wait`, `active`, `delayed`, ...) or a job's lock (`<jobId>:lock`). Read raw where BullMQ
   * has no call for it (reclaiming a dead owner's active job, counting many queues at once).
   */
  bullQueue(queueName: string, part: BullQueuePart): string;
  /** redlock lock of a singleton duty (reconcile, rebalance) */
  singletonLock(duty: string): string;
  /** Pattern matching every wafleet key under this prefix, for redis-cli --scan. */
  readonly all: string;
  /**
   * hash: the hot copy of a device's Baileys auth state; field `creds` and one field per Signal
   * key, `<type>:<id>`, each a BufferJSON string; written only by fenced scripts
   */
  authState(deviceId: string): string;
  /** string JSON `{qr, expiresAt, refresh, round}`, PX TTL: the device's latest QR code */
  qrCode(deviceId: string): string;
  /** string JSON `{pairingCode, expiresAt, round}`, PX TTL: the device's latest pairing code */
  pairingCode(deviceId: string): string;
  /**
   * string: the last sequence number handed to an event of the device (events' numbers are
   * gap-free per device); kept while the device exists, so an idle device's numbering goes on
   * where it was; deleted with the device
   */
  eventSeq(deviceId: string): string;
  /**
   * string: the device's last sequence the store is known to have (its write-behind applied);
   * webhooks deliver no further, so a number a receiver saw survives Redis losing its data;
   * deleted with the device
   */
  eventStored(deviceId: string): string;
  /**
   * stream of the device's events, entry id `<sequence>-0`, PX retention (refreshed with every
   * event); capped at a maximum length, and entries older than the retention are trimmed as new
   * ones arrive
   */
  events(deviceId: string): string;
  /**
   * string, PX dedup window: the sequence the event with this id got; while it lives, the same
   * event appended again (a redelivery after failover, a retried append) is dropped
   */
  eventId(eventId: string): string;
  /**
   * Webhook delivery keeps each target of a device apart (`target`: `device`, its own webhook, or
   * `operator`, WEBHOOK_URL), so one target failing never holds the other back.
   *
   * string, expiring with the device's event numbering (`eventSeq`): the last event sequence of
   * the device handed to this target (delivered, not subscribed to, or moved to its own retry)
   */
  webhookCursor(deviceId: string, target: string): string;
  /**
   * string, PX: the one delivery run working this target of the device (a random holder id,
   * renewed while it works), or `paused.<id>` for one retry interval after an event failed
   */
  webhookPump(deviceId: string, target: string): string;
  /** string, PX event retention: set when the target has events its delivery has not looked at yet */
  webhookWake(deviceId: string, target: string): string;
  /** list JSON, capped, PX a week: the target's dead-lettered deliveries, newest first */
  webhookFailures(deviceId: string, target: string): string;
  /**
   * sorted set sequence -> sequence, PX retry window: the target's events past its cursor still
   * being retried on their own; the progress written to the store stays below the first of them
   */
  webhookRetrying(deviceId: string, target: string): string;
  /**
   * string JSON `{url, events, sealed}` (the secret still encrypted; `sealed` null for an older
   * `webhookUrl`), or `none`, PX about a minute: the device's own webhook read through from the
   * store (SET NX); overwritten with the new target (or `none`) when the webhook is put or
   * deleted, so every server sees the change at once and no read-through puts the old one back
   */
  webhookTarget(deviceId: string): string;
  /** string, PX message retention: our message id of the device's sent message with this WhatsApp id (acks name the latter) */
  sentMessage(deviceId: string, waMessageId: string): string;
  /** Simulated WhatsApp: set of WhatsApp message ids the device has delivered (drops repeats) */
  simSeen(deviceId: string): string;
  /** Simulated WhatsApp: list of the device's delivered messages, oldest first (JSON) */
  simLog(deviceId: string): string;
  /** Simulated WhatsApp: hash deviceId -> times a phone linked the device (a new QR was needed) */
  readonly simPairings: string;
  /**
   * Simulated WhatsApp: stream of what it saw (socket opened/closed, message delivered or dropped
   * as a repeat), stamped by Redis; the chaos run's history reads it (capped, about 100,000)
   */
  readonly simHistory: string;
  /**
   * string JSON, PX TTL of a few heartbeats: the server's metrics (prom-client's
   * getMetricsAsJSON), from which the monitoring port's /metrics aggregates every live server
   */
  metrics(serverId: string): string;
}

/** The parts of a BullMQ queue's key layout wafleet reads or writes itself. */
export type BullQueuePart = 'wait' | 'paused' | 'prioritized' | 'active' | 'delayed' | 'failed' | 'completed' | 'stalled' | 'marker' | `${string}:lock`;

export const DEFAULT_KEY_PREFIX = 'wa';

export function createClusterKeys(prefix: string = DEFAULT_KEY_PREFIX): ClusterKeys {
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(prefix)) throw new Error(`invalid key prefix ${JSON.stringify(prefix)}`);
  const tag = `{${prefix}}`;
  return Object.freeze({
    prefix,
    lease: (deviceId: string) => `${tag}:lease:${deviceId}`,
    fence: (deviceId: string) => `${tag}:fence:${deviceId}`,
    holderDeadlines: `${tag}:holder-deadlines`,
    holders: `${tag}:holders`,
    server: (serverId: string) => `${tag}:server:${serverId}`,
    serverClaim: (serverId: string) => `${tag}:server-claim:${serverId}`,
    owned: (serverId: string) => `${tag}:owned:${serverId}`,
    servers: `${tag}:servers`,
    reserved: (serverId: string) => `${tag}:reserved:${serverId}`,
    placements: `${tag}:placements`,
    placementTargets: `${tag}:placement-targets`,
    inbox: (serverId: string) => `${tag}:inbox:${serverId}`,
    marker: `${tag}:marker`,
    incarnation: `${tag}:incarnation`,
    claimEmbargo: `${tag}:claim-embargo`,
    reseedLock: `${tag}:reseed-lock`,
    tokenFloor: `${tag}:token-floor`,
    deviceStatus: (deviceId: string) => `${tag}:device:${deviceId}`,
    simSocket: (deviceId: string) => `${tag}:sim:socket:${deviceId}`,
    simConflicts: `${tag}:sim:conflicts`,
    simConnects: `${tag}:sim:connects`,
    simKickChannel: `${tag}:sim:kick`,
    simInboundChannel: `${tag}:sim:inbound`,
    simPending: (deviceId: string) => `${tag}:sim:pending:${deviceId}`,
    simInboundSeq: `${tag}:sim:inbound-seq`,
    wanted: `${tag}:wanted`,
    rateLimit: (scope: string, subject: string) => `${tag}:ratelimit:${scope}:${subject}`,
    message: (messageId: string) => `${tag}:msg:${messageId}`,
    sendTimes: (deviceId: string) => `${tag}:sends:${deviceId}`,
    rateOverrides: `${tag}:rate-limits`,
    bullPrefix: `${tag}:bull`,
    bullQueue: (queueName: string, part: BullQueuePart) => `${tag}:bull:${queueName}:${part}`,
    singletonLock: (duty: string) => `${tag}:lock:${duty}`,
    all: `${tag}:*`,
    authState: (deviceId: string) => `${tag}:auth:${deviceId}`,
    qrCode: (deviceId: string) => `${tag}:qr:${deviceId}`,
    pairingCode: (deviceId: string) => `${tag}:pairing:${deviceId}`,
    eventSeq: (deviceId: string) => `${tag}:event-seq:${deviceId}`,
    eventStored: (deviceId: string) => `${tag}:event-stored:${deviceId}`,
    events: (deviceId: string) => `${tag}:events:${deviceId}`,
    eventId: (eventId: string) => `${tag}:event-id:${eventId}`,
    webhookCursor: (deviceId: string, target: string) => `${tag}:webhook:cursor:${target}:${deviceId}`,
    webhookPump: (deviceId: string, target: string) => `${tag}:webhook:pump:${target}:${deviceId}`,
    webhookWake: (deviceId: string, target: string) => `${tag}:webhook:wake:${target}:${deviceId}`,
    webhookFailures: (deviceId: string, target: string) => `${tag}:webhook:failures:${target}:${deviceId}`,
    webhookRetrying: (deviceId: string, target: string) => `${tag}:webhook:retrying:${target}:${deviceId}`,
    webhookTarget: (deviceId: string) => `${tag}:webhook:target:${deviceId}`,
    sentMessage: (deviceId: string, waMessageId: string) => `${tag}:sent:${deviceId}:${waMessageId}`,
    simPairings: `${tag}:sim:pairings`,
    simHistory: `${tag}:sim:history`,
    simSeen: (deviceId: string) => `${tag}:sim:seen:${deviceId}`,
    simLog: (deviceId: string) => `${tag}:sim:log:${deviceId}`,
    metrics: (serverId: string) => `${tag}:metrics:${serverId}`,
  });
}
