import { Queue } from 'bullmq';
import type { RedisClient as Redis } from '../../src/shared/redis.js';
import type { ClusterKeys } from '../../src/cluster/keys.js';
import { createLeaseStore, holderId, parseLeaseValue } from '../../src/cluster/lease-store.js';
import { createServerDirectory } from '../../src/cluster/server-directory.js';
import { createClusterStateReader, type ClusterStateDeps, type ServerRow } from '../../src/monitoring/cluster-state.js';
import { storeSyncQueueName, syncShardOf, type SyncRecord } from '../../src/queues/store-sync.js';
import type { Device, LeaseEventType } from '../../src/store/types.js';

// What `npm run status` reports, read from Redis (and, for one device, the store), plus the
// health verdict its exit code carries.
//
// Unhealthy (exit 1) means either:
// - no live server takes devices: no server key (`{wa}:server:<id>`, PX one TTL, refreshed by
//   every heartbeat) exists without `draining`; or
// - a lease is overdue: its holder (a server process) is still listed in `{wa}:holder-deadlines`
//   more than one LEASE_TTL_MS after its deadline (by Redis's clock), with the lease still on
//   record. Every live server sweeps at least once a second and expires a due holder's leases at
//   once, so one left that long means nobody is sweeping: its device runs nowhere and will not be
//   moved. A lease of a dead server within its TTL is not overdue: that is a failover in progress.

/** Overdue leases listed by name; the rest are counted. */
const OVERDUE_SHOWN = 20;
/** Lease events scanned in the store to find one device's (newest first). */
const STORE_EVENTS_SCANNED = 2000;
/** Write-behind jobs of the device's shard read from Redis when the store cannot be reached. */
const QUEUE_JOBS_SCANNED = 500;
const EVENTS_SHOWN = 10;

export interface OverdueLease {
  deviceId: string;
  /** `serverId:token` of the last claim, when Redis still knows it. */
  holder: string | null;
  overdueMs: number;
}

export interface ClusterStatus {
  healthy: boolean;
  problems: string[];
  servers: ServerRow[];
  totals: {
    servers: number;
    live: number;
    draining: number;
    leases: number;
    leasesByStatus: Record<string, number>;
    wanted: number;
    /** Wanted devices that no lease covers right now (placement or failover in progress, or stuck). */
    wantedUnowned: number;
    pendingPlacements: number;
    overdueLeases: number;
  };
  overdue: OverdueLease[];
  /** The rule an overdue lease broke, for the reader. */
  overdueAfterMs: number;
  store: { available: boolean; error: string | null };
}

/** Redis as redis-cli sees it, the store (opened on first use, optional) and the TTL. */
export type StatusDeps = Pick<ClusterStateDeps, 'store' | 'log'> & { redis: Redis; keys: ClusterKeys; ttlMs: number };

async function redisNowMs(redis: Redis): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

export async function readClusterStatus(deps: StatusDeps): Promise<ClusterStatus> {
  const { redis, keys, ttlMs } = deps;
  const snapshot = await createClusterStateReader({
    leases: createLeaseStore({ redis, keys }),
    servers: createServerDirectory({ redis, keys }),
    store: deps.store,
    log: deps.log,
  }).read({ limit: 0 });
  const now = await redisNowMs(redis);
  const [overdueHolders, wanted, pendingPlacements] = await Promise.all([
    redis.zrangebyscore(keys.holderDeadlines, '-inf', now - ttlMs, 'WITHSCORES'),
    redis.smembers(keys.wanted),
    redis.zcard(keys.placements),
  ]);
  const leaseStore = createLeaseStore({ redis, keys });
  const overdueAll: OverdueLease[] = [];
  for (let i = 0; i < overdueHolders.length; i += 2) {
    const overdueMs = now - Number(overdueHolders[i + 1]);
    for (const { deviceId, holder } of await leaseStore.leasesOf(overdueHolders[i]!)) overdueAll.push({ deviceId, holder, overdueMs });
  }
  const overdueCount = overdueAll.length;
  const overdue = overdueAll.slice(0, OVERDUE_SHOWN);

  let wantedUnowned = 0;
  for (let start = 0; start < wanted.length; start += 1000) {
    const chunk = wanted.slice(start, start + 1000);
    wantedUnowned += chunk.length - (await redis.exists(...chunk.map((id) => keys.lease(id))));
  }

  const live = snapshot.servers.filter((s) => s.state === 'live').length;
  const draining = snapshot.servers.filter((s) => s.state === 'draining').length;
  const problems: string[] = [];
  if (live === 0) {
    problems.push(draining > 0 ? `no live server takes devices (${draining} draining)` : 'no live server');
  }
  if (overdueCount > 0) {
    problems.push(`${overdueCount} lease${overdueCount === 1 ? '' : 's'} past their deadline by more than ${ttlMs / 1000} s and not swept: nobody is sweeping`);
  }
  const leasesByStatus: Record<string, number> = {};
  for (const [status, n] of Object.entries(snapshot.leases.byStatus)) if (n) leasesByStatus[status] = n;
  return {
    healthy: problems.length === 0,
    problems,
    servers: snapshot.servers,
    totals: {
      servers: snapshot.servers.length,
      live,
      draining,
      leases: snapshot.leases.total,
      leasesByStatus,
      wanted: wanted.length,
      wantedUnowned,
      pendingPlacements,
      overdueLeases: overdueCount,
    },
    overdue,
    overdueAfterMs: ttlMs,
    store: snapshot.store,
  };
}

export interface DeviceEvent {
  at: string;
  type: LeaseEventType;
  serverId: string | null;
  token: number;
  details: Record<string, unknown>;
}

export interface DeviceStatusReport {
  deviceId: string;
  /** Nothing about the device anywhere: no key in Redis, no row in the store. */
  known: boolean;
  lease: { serverId: string; bootId?: string; token: number; ttlMs: number; ownerLive: boolean } | null;
  /** Last fencing token handed out for the device (the next claim gets a higher one). */
  fence: number | null;
  /** Deadline of the lease (Redis clock) relative to now, ms; negative once past. */
  deadlineInMs: number | null;
  /** The holder the sweep last saw, with the boot of the process that held it. */
  lastHolder: { serverId: string; bootId?: string; token: number } | null;
  live: { status: string; serverId: string | null; token: number | null; updatedAt: string | null; detail: string | null } | null;
  wanted: boolean;
  placement: { target: string | null; reservationLeftMs: number } | null;
  store: { available: boolean; error: string | null; device: Device | null };
  events: { source: 'store' | 'redis' | 'none'; items: DeviceEvent[] };
}

export async function readDeviceStatus(deps: StatusDeps & { bullRedis: () => Redis }, deviceId: string): Promise<DeviceStatusReport> {
  const { redis, keys } = deps;
  const results = ((await redis
    .multi()
    .get(keys.lease(deviceId))
    .pttl(keys.lease(deviceId))
    .get(keys.fence(deviceId))
    .hget(keys.holders, deviceId)
    .hgetall(keys.deviceStatus(deviceId))
    .sismember(keys.wanted, deviceId)
    .zscore(keys.placements, deviceId)
    .hget(keys.placementTargets, deviceId)
    .exec()) ?? []) as Array<[Error | null, unknown]>;
  const [leaseValue, pttl, fence, lastHolder, live, wanted, placementUntil, target] = results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
  // The lease's deadline is its holder's: one per process, never before any of its leases expires.
  const recorded = typeof lastHolder === 'string' ? parseLeaseValue(lastHolder) : null;
  const deadline = recorded ? await redis.zscore(keys.holderDeadlines, holderId(recorded.serverId, recorded.bootId)) : null;
  const now = await redisNowMs(redis);
  const holder = typeof leaseValue === 'string' ? parseLeaseValue(leaseValue) : null;
  const ownerLive = holder ? (await redis.exists(keys.server(holder.serverId))) === 1 : false;
  const status = (live ?? {}) as Record<string, string>;

  let storeDevice: Device | null = null;
  let storeError: string | null = null;
  let events: DeviceStatusReport['events'] = { source: 'none', items: [] };
  try {
    const store = await deps.store();
    storeDevice = await store.getDevice(deviceId);
    const recent = await store.recentLeaseEvents(STORE_EVENTS_SCANNED);
    events = {
      source: 'store',
      items: recent
        .filter((e) => e.deviceId === deviceId)
        .slice(0, EVENTS_SHOWN)
        .map((e) => ({ at: e.createdAt.toISOString(), type: e.eventType, serverId: e.serverId, token: e.epoch, details: e.details })),
    };
  } catch (err) {
    storeError = (err as Error).message;
    events = { source: 'redis', items: await eventsFromWriteBehind(deps.bullRedis(), keys, deviceId) };
  }

  const report: DeviceStatusReport = {
    deviceId,
    known: false,
    lease: holder ? { ...holder, ttlMs: Math.max(0, Number(pttl)), ownerLive } : null,
    fence: fence === null || fence === undefined ? null : Number(fence),
    deadlineInMs: deadline === null || deadline === undefined ? null : Number(deadline) - now,
    lastHolder: typeof lastHolder === 'string' ? parseLeaseValue(lastHolder) : null,
    live: status.status
      ? {
          status: status.status,
          serverId: status.serverId ?? null,
          token: status.token ? Number(status.token) : null,
          updatedAt: status.updatedAt ? new Date(Number(status.updatedAt)).toISOString() : null,
          detail: status.detail || null,
        }
      : null,
    wanted: Number(wanted) === 1,
    placement: placementUntil === null || placementUntil === undefined ? null : { target: (target as string | null) ?? null, reservationLeftMs: Number(placementUntil) - now },
    store: { available: storeError === null, error: storeError, device: storeDevice },
    events,
  };
  report.known = Boolean(report.lease || report.fence !== null || report.live || report.wanted || report.placement || storeDevice || events.items.length > 0);
  return report;
}

/**
 * With the store out of reach, the device's recent lease events may still be in Redis: the
 * write-behind queue keeps the jobs that carry them (pending until the store is back, and
 * completed ones for an hour).
 */
async function eventsFromWriteBehind(redis: Redis, keys: ClusterKeys, deviceId: string): Promise<DeviceEvent[]> {
  const queue = new Queue(storeSyncQueueName(syncShardOf(deviceId)), { connection: redis, prefix: keys.bullPrefix });
  try {
    const jobs = await queue.getJobs(['active', 'wait', 'prioritized', 'delayed', 'completed', 'failed'], 0, QUEUE_JOBS_SCANNED - 1);
    const events: DeviceEvent[] = [];
    for (const job of jobs) {
      for (const record of ((job?.data as { records?: SyncRecord[] } | undefined)?.records ?? [])) {
        if (record.kind === 'lease_event' && record.deviceId === deviceId) {
          events.push({ at: record.at, type: record.eventType, serverId: record.serverId, token: record.epoch, details: record.details ?? {} });
        }
      }
    }
    return events.sort((a, b) => b.at.localeCompare(a.at)).slice(0, EVENTS_SHOWN);
  } catch {
    return [];
  } finally {
    await queue.close().catch(() => undefined);
  }
}

// ---- text output ----

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || i === 1 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function formatClusterStatus(status: ClusterStatus, where: string): string {
  const rows = status.servers.map((s) => [
    s.id,
    s.state,
    s.draining ? 'yes' : 'no',
    String(s.leases),
    s.capacity === null ? '-' : String(s.capacity),
    s.heartbeatAgeMs === null ? '-' : `${seconds(s.heartbeatAgeMs)} ago`,
    s.responseTimeMs === null ? '-' : `${s.responseTimeMs} ms`,
    s.region ?? '-',
  ]);
  const t = status.totals;
  const byStatus = Object.entries(t.leasesByStatus).map(([k, n]) => `${n} ${k}`).join(', ');
  const out = [
    `wafleet cluster at ${where}`,
    '',
    rows.length > 0 ? table(['server', 'state', 'draining', 'leases', 'capacity', 'heartbeat', 'response', 'region'], rows) : '(no server has registered in Redis)',
    '',
    `servers   ${t.live} live, ${t.draining} draining, ${t.servers - t.live - t.draining} down or stopped`,
    `leases    ${t.leases}${byStatus ? ` (${byStatus})` : ''}`,
    `devices   ${t.wanted} wanted to run, ${t.wantedUnowned} without a lease, ${t.pendingPlacements} placements pending`,
    `overdue   ${t.overdueLeases} leases past their deadline by more than ${seconds(status.overdueAfterMs)}`,
  ];
  for (const o of status.overdue) out.push(`          ${o.deviceId}  last holder ${o.holder ?? '?'}  ${seconds(o.overdueMs)} past its deadline`);
  if (!status.store.available) out.push(`store     not reachable (${status.store.error}); Redis alone was read`);
  out.push('', status.healthy ? 'healthy' : `UNHEALTHY: ${status.problems.join('; ')}`);
  return out.join('\n');
}

export function formatDeviceStatus(d: DeviceStatusReport): string {
  if (!d.known) return `device ${d.deviceId}: unknown (nothing in Redis${d.store.available ? ' or the store' : '; the store was not reachable'})`;
  const rows: Array<[string, string]> = [];
  rows.push(['owner', d.lease ? `${d.lease.serverId} (${d.lease.ownerLive ? 'live' : 'not live: its lease runs out and the sweep moves the device'})` : 'none (no lease)']);
  rows.push(['fence token', d.lease ? `${d.lease.token} (last handed out: ${d.fence ?? '-'})` : `- (last handed out: ${d.fence ?? 'none'})`]);
  rows.push(['TTL', d.lease ? `${seconds(d.lease.ttlMs)} left` : '-']);
  if (d.deadlineInMs !== null) rows.push(['deadline', d.deadlineInMs >= 0 ? `in ${seconds(d.deadlineInMs)}` : `${seconds(-d.deadlineInMs)} ago (not swept yet)`]);
  if (!d.lease && d.lastHolder) rows.push(['last holder', `${d.lastHolder.serverId} (token ${d.lastHolder.token})`]);
  if (d.live) {
    const by = d.live.serverId ? `, reported by ${d.live.serverId} with token ${d.live.token}` : '';
    rows.push(['status', `${d.live.status}${by}${d.live.updatedAt ? ` at ${d.live.updatedAt}` : ''}`]);
  }
  rows.push(['wanted', d.wanted ? 'yes (desired state running)' : 'no']);
  if (d.placement) {
    rows.push(['placement', `${d.placement.target ?? 'no server yet'}, ${d.placement.reservationLeftMs >= 0 ? `claim due within ${seconds(d.placement.reservationLeftMs)}` : 'due again'}`]);
  }
  const s = d.store.device;
  if (!d.store.available) rows.push(['store', `not reachable (${d.store.error})`]);
  else if (!s) rows.push(['store', 'no such device in the store']);
  else rows.push(['store', `"${s.deviceName}", status ${s.status}, desired ${s.desiredState}, assigned ${s.assignedServerId ?? 'nowhere'}, epoch ${s.leaseEpoch}`]);
  const width = Math.max(...rows.map(([k]) => k.length));
  const out = [`device ${d.deviceId}`, ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)];
  const from = d.events.source === 'store' ? 'from the store' : d.events.source === 'redis' ? 'from the write-behind queue in Redis' : '';
  out.push('', `recent lease events${from ? ` (${from}, newest first)` : ''}:`);
  if (d.events.items.length === 0) out.push('  none found');
  for (const e of d.events.items) out.push(`  ${e.at}  ${e.type.padEnd(9)}  ${(e.serverId ?? '-').padEnd(12)}  token ${e.token}`);
  return out.join('\n');
}
