import type { LeaseStore } from '../cluster/lease-store.js';
import type { ServerDirectory } from '../cluster/server-directory.js';
import type { Logger } from '../shared/logger.js';
import { within } from './deadline.js';
import { DEVICE_STATUSES, type BackendServer, type LeaseEventType, type Store } from '../store/types.js';

// What the cluster page shows, read the way an operator would with redis-cli: live servers from
// their adverts, leases from the deadline index, their owners, tokens and PTTL, and the latest
// failovers, drains and rebalances from the store's device_lease_events. Redis is read with
// SCAN-family commands and pipelines only: never KEYS, which blocks Redis on a large keyspace.

/** live: heartbeating; draining: handing its devices over; down: stopped heartbeating without draining (died); stopped: left cleanly. */
export const SERVER_STATES = ['live', 'draining', 'down', 'stopped'] as const;
export type ServerState = (typeof SERVER_STATES)[number];

/**
 * A lease's status is its device's live status as the lease holder reported it; `expired` is a
 * lease past its TTL that no sweep has handled yet (a failover in progress); `unknown` is a
 * holder that has not reported yet.
 */
export const LEASE_STATUSES = [...DEVICE_STATUSES, 'expired', 'unknown'] as const;
export type LeaseStatus = (typeof LEASE_STATUSES)[number];

/** The lease events the page lists; claims and releases are routine and would drown them. */
export const NOTABLE_EVENT_TYPES = ['expire', 'drain', 'rebalance', 'lost'] as const satisfies readonly LeaseEventType[];
const EVENT_LABELS: Record<(typeof NOTABLE_EVENT_TYPES)[number], string> = {
  expire: 'failover',
  drain: 'drain',
  rebalance: 'rebalance',
  lost: 'lost',
};
/** Recent events read from the store to find the notable ones among the routine claims. */
const EVENTS_SCANNED = 1000;
export const EVENTS_SHOWN = 50;
/** A page view waits this long for the store, then shows Redis's half alone. */
const STORE_READ_TIMEOUT_MS = 3000;

export interface ServerRow {
  id: string;
  name: string;
  state: ServerState;
  url: string | null;
  region: string | null;
  priority: number | null;
  capacity: number | null;
  /** Leases held plus capacity reserved for placements not yet claimed, as placement counts it. */
  load: number;
  leases: number;
  draining: boolean;
  lastHeartbeatAt: string | null;
  heartbeatAgeMs: number | null;
  responseTimeMs: number | null;
  startedAt: string | null;
}

export interface LeaseRow {
  deviceId: string;
  serverId: string;
  token: number;
  /** PTTL of the lease key; 0 for an expired lease awaiting its sweep. */
  ttlMs: number;
  status: LeaseStatus;
}

export interface EventRow {
  id: number;
  at: string;
  type: LeaseEventType;
  label: string;
  deviceId: string;
  serverId: string | null;
  token: number;
  details: Record<string, unknown>;
}

export interface ClusterFilters {
  server?: string | undefined;
  status?: LeaseStatus | undefined;
  limit: number;
}

export interface ClusterSnapshot {
  generatedAt: string;
  filters: { server: string | null; status: LeaseStatus | null; limit: number };
  servers: ServerRow[];
  leases: {
    /** Every lease in Redis, filters aside. */
    total: number;
    byStatus: Partial<Record<LeaseStatus, number>>;
    /** Leases the filters match; `items` holds the first `limit` of them. */
    matching: number;
    items: LeaseRow[];
  };
  events: EventRow[];
  /** The store is read for server records and events only; the page works without it. */
  store: { available: boolean; error: string | null };
}

export interface ClusterStateDeps {
  leases: Pick<LeaseStore, 'readMany' | 'indexedDevices'>;
  servers: ServerDirectory;
  store: () => Promise<Store>;
  log: Logger;
  now?: () => number;
}

export interface ClusterStateReader {
  read(filters: ClusterFilters): Promise<ClusterSnapshot>;
}

export function createClusterStateReader(deps: ClusterStateDeps): ClusterStateReader {
  const { leases: leaseStore, servers: directory, log } = deps;
  const now = deps.now ?? Date.now;
  let storeWarned = false;

  /** Runs a store read; a store outage leaves the Redis half of the page intact. */
  const fromStore = async <T>(read: (store: Store) => Promise<T>): Promise<{ value: T | null; error: string | null }> => {
    try {
      const value = await within(
        deps.store().then((store) => read(store)),
        STORE_READ_TIMEOUT_MS,
        'the store',
      );
      storeWarned = false;
      return { value, error: null };
    } catch (err) {
      const message = (err as Error).message;
      if (!storeWarned) log.warn({ err }, 'cluster page: the store cannot be read; showing Redis state only');
      storeWarned = true;
      return { value: null, error: message };
    }
  };

  const readServers = async (records: BackendServer[]): Promise<ServerRow[]> => {
    const announced = new Set(await directory.announced());
    const byId = new Map(records.map((r) => [r.id, r]));
    const ids = [...new Set([...announced, ...byId.keys()])];
    const states = await directory.read(ids);
    const at = now();
    return states
      .map(({ id, advert, leases, reserved }): ServerRow => {
        const record = byId.get(id);
        if (advert) {
          return {
            id,
            name: record?.serverName ?? id,
            state: advert.draining ? 'draining' : 'live',
            url: advert.url ?? record?.serverUrl ?? null,
            region: advert.region ?? record?.region ?? null,
            priority: advert.priority ?? record?.priority ?? null,
            capacity: advert.capacity ?? record?.maxCapacity ?? null,
            load: leases + reserved,
            leases,
            draining: advert.draining,
            lastHeartbeatAt: new Date(advert.heartbeatAt).toISOString(),
            heartbeatAgeMs: Math.max(0, at - advert.heartbeatAt),
            responseTimeMs: advert.responseTimeMs,
            startedAt: advert.startedAt === null ? null : new Date(advert.startedAt).toISOString(),
          };
        }
        // No advert: its key expired (it died, or lost Redis) or it drained and left. A server
        // still in the announced set, or still active in the record, never said goodbye.
        const lastSeen = record?.lastHealthCheck ?? null;
        return {
          id,
          name: record?.serverName ?? id,
          state: announced.has(id) || record?.isActive ? 'down' : 'stopped',
          url: record?.serverUrl ?? null,
          region: record?.region ?? null,
          priority: record?.priority ?? null,
          capacity: record?.maxCapacity ?? null,
          load: leases + reserved,
          leases,
          draining: record?.draining ?? false,
          lastHeartbeatAt: lastSeen?.toISOString() ?? null,
          heartbeatAgeMs: lastSeen ? Math.max(0, at - lastSeen.getTime()) : null,
          responseTimeMs: record?.responseTime ?? null,
          startedAt: null,
        };
      })
      .sort((a, b) => SERVER_STATES.indexOf(a.state) - SERVER_STATES.indexOf(b.state) || a.id.localeCompare(b.id));
  };

  const readLeases = async (): Promise<LeaseRow[]> => {
    // Every claim indexes its lease in the deadline set; a lease past its deadline stays there
    // until a sweep expires it, which is exactly the failover an operator wants to see.
    const readings = await leaseStore.readMany(await leaseStore.indexedDevices());
    const rows: LeaseRow[] = [];
    for (const { deviceId, lease, status, lastHolder } of readings) {
      if (lease) {
        // A status written under an older token belongs to the previous holder.
        const current = status && status.token === lease.token && (LEASE_STATUSES as readonly string[]).includes(status.status);
        rows.push({ deviceId, serverId: lease.serverId, token: lease.token, ttlMs: Math.max(lease.ttlMs, 0), status: current ? (status.status as LeaseStatus) : 'unknown' });
      } else if (lastHolder) {
        rows.push({ deviceId, serverId: lastHolder.serverId, token: lastHolder.token, ttlMs: 0, status: 'expired' });
      }
    }
    return rows.sort((a, b) => a.serverId.localeCompare(b.serverId) || a.deviceId.localeCompare(b.deviceId));
  };

  return {
    async read(filters) {
      const [records, events] = await Promise.all([
        fromStore((store) => store.listServers()),
        fromStore((store) => store.recentLeaseEvents(EVENTS_SCANNED)),
      ]);
      const [servers, leases] = await Promise.all([readServers(records.value ?? []), readLeases()]);
      const byStatus: Partial<Record<LeaseStatus, number>> = {};
      for (const lease of leases) byStatus[lease.status] = (byStatus[lease.status] ?? 0) + 1;
      const matching = leases.filter((l) => (!filters.server || l.serverId === filters.server) && (!filters.status || l.status === filters.status));
      const notable = (events.value ?? [])
        .filter((e) => (NOTABLE_EVENT_TYPES as readonly string[]).includes(e.eventType))
        .slice(0, EVENTS_SHOWN)
        .map((e) => ({
          id: e.id,
          at: e.createdAt.toISOString(),
          type: e.eventType,
          label: EVENT_LABELS[e.eventType as keyof typeof EVENT_LABELS],
          deviceId: e.deviceId,
          serverId: e.serverId,
          token: e.epoch,
          details: e.details,
        }));
      const storeError = records.error ?? events.error;
      return {
        generatedAt: new Date(now()).toISOString(),
        filters: { server: filters.server ?? null, status: filters.status ?? null, limit: filters.limit },
        servers,
        leases: { total: leases.length, byStatus, matching: matching.length, items: matching.slice(0, filters.limit) },
        events: notable,
        store: { available: storeError === null, error: storeError },
      };
    },
  };
}
