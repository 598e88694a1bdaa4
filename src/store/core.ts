import type { Logger } from 'pino';
import { OPERATIONS, type CallOperation } from './operations.js';
import { asRows, mapApiKey, mapDevice, mapEvent, mapLeaseEvent, mapMessage, mapServer, mapSession, mapWebhook, toDate, toNumber } from './rows.js';
import type { ApplyRecordsReport, DeviceStatus, MigrationReport, Store, StoredMessage } from './types.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface CatalogueStoreParts {
  kind: Store['kind'];
  call: CallOperation;
  migrate(): Promise<MigrationReport>;
  /** Ordered cleanups; each runs even if an earlier one failed. */
  cleanups: Array<() => Promise<void>>;
  log: Logger;
}

/**
 * Every Store method, written once over `call`. Adapters differ only in how they run a catalogue
 * operation (SQL over a connection, or a PostgREST RPC) and how they migrate.
 */
export function createCatalogueStore({ kind, call, migrate, cleanups, log }: CatalogueStoreParts): Store {
  let closing: Promise<void> | undefined;

  return {
    kind,
    migrate,

    async registerServer(server) {
      const rows = asRows(
        await call('registerServer', {
          p_id: server.id,
          p_server_name: server.serverName,
          p_server_url: server.serverUrl,
          p_server_type: server.serverType,
          p_region: server.region,
          p_max_capacity: server.maxCapacity,
          p_priority: server.priority,
          p_description: server.description ?? null,
          p_metadata: server.metadata ?? {},
        }),
      );
      return mapServer(one(rows, OPERATIONS.registerServer.fn));
    },

    async recordServerHealth(serverId, currentLoad, responseTimeMs) {
      await call('recordServerHealth', {
        p_server_id: serverId,
        p_current_load: currentLoad,
        p_response_time: responseTimeMs == null ? null : Math.round(responseTimeMs),
      });
    },

    async markServerInactive(serverId) {
      await call('markServerInactive', { p_server_id: serverId });
    },

    async getServer(serverId) {
      const rows = asRows(await call('getServer', { p_server_id: serverId }));
      return rows[0] ? mapServer(rows[0]) : null;
    },

    async listServers() {
      return asRows(await call('listServers', {})).map(mapServer);
    },

    async getBestAvailableServer() {
      const id = await call('getBestAvailableServer', {});
      return typeof id === 'string' ? id : null;
    },

    async createDevice(device) {
      const rows = asRows(
        await call('createDevice', {
          p_user_id: device.userId,
          p_device_name: device.deviceName,
          p_connection_method: device.connectionMethod,
          p_phone_for_pairing: device.phoneForPairing ?? null,
          p_webhook_url: device.webhookUrl ?? null,
        }),
      );
      return mapDevice(one(rows, OPERATIONS.createDevice.fn));
    },

    async getDevice(deviceId) {
      // Ids come from URLs; an id that cannot exist is "not found", not a database error.
      if (!UUID.test(deviceId)) return null;
      const rows = asRows(await call('getDevice', { p_device_id: deviceId }));
      return rows[0] ? mapDevice(rows[0]) : null;
    },

    async recordAssignment(deviceId, serverId, epoch) {
      const accepted = await call('recordAssignment', { p_device_id: deviceId, p_server_id: serverId, p_epoch: epoch });
      return accepted === true;
    },

    async updateDeviceStatus(deviceId, status, epoch, errorMessage) {
      const accepted = await call('updateDeviceStatus', {
        p_device_id: deviceId,
        p_status: status,
        p_epoch: epoch,
        p_error_message: errorMessage ?? null,
      });
      return accepted === true;
    },

    async setDesiredState(deviceId, desiredState) {
      if (!UUID.test(deviceId)) return null;
      const rows = asRows(await call('setDesiredState', { p_device_id: deviceId, p_desired_state: desiredState }));
      return rows[0] ? mapDevice(rows[0]) : null;
    },

    async listWantedDevices(after, limit) {
      const rows = asRows(await call('listWantedDevices', { p_after: after, p_limit: limit }));
      return rows.map((row) => String(row.device_id));
    },

    async listLeaseEpochs(after, limit) {
      const rows = asRows(await call('listLeaseEpochs', { p_after: after, p_limit: limit }));
      return rows.map((row) => ({ deviceId: String(row.device_id), leaseEpoch: Number(row.lease_epoch) }));
    },

    async nextTokenEpoch(redisRunId, serverId) {
      return toNumber(await call('nextTokenEpoch', { p_redis_run_id: redisRunId, p_server_id: serverId }));
    },

    async saveSession(deviceId, creds, keys, epoch) {
      const saved = await call('saveSession', { p_device_id: deviceId, p_creds: creds ?? {}, p_keys: keys, p_epoch: epoch });
      return saved === true;
    },

    async getSession(deviceId) {
      if (!UUID.test(deviceId)) return null;
      const rows = asRows(await call('getSession', { p_device_id: deviceId }));
      return rows[0] ? mapSession(rows[0]) : null;
    },

    async clearSession(deviceId, epoch) {
      const cleared = await call('clearSession', { p_device_id: deviceId, p_epoch: epoch });
      return cleared === true;
    },

    async createApiKey(userId, name, keyHash) {
      const rows = asRows(await call('createApiKey', { p_user_id: userId, p_name: name, p_key_hash: keyHash }));
      return mapApiKey(one(rows, OPERATIONS.createApiKey.fn));
    },

    async findApiKey(keyHash) {
      const rows = asRows(await call('findApiKey', { p_key_hash: keyHash }));
      return rows[0] ? mapApiKey(rows[0]) : null;
    },

    async revokeApiKey(id) {
      if (!UUID.test(id)) return false;
      return (await call('revokeApiKey', { p_id: id })) === true;
    },

    async listDevices(userId, limit) {
      return asRows(await call('listDevices', { p_user_id: userId, p_limit: limit })).map(mapDevice);
    },

    async deleteDevice(deviceId) {
      if (!UUID.test(deviceId)) return false;
      return (await call('deleteDevice', { p_device_id: deviceId })) === true;
    },

    async configureServer(serverId, configuration) {
      const rows = asRows(
        await call('configureServer', {
          p_id: serverId,
          p_server_name: configuration.serverName ?? null,
          p_server_url: configuration.serverUrl ?? null,
          p_server_type: configuration.serverType ?? null,
          p_region: configuration.region ?? null,
          p_max_capacity: configuration.maxCapacity ?? null,
          p_priority: configuration.priority ?? null,
        }),
      );
      return mapServer(one(rows, OPERATIONS.configureServer.fn));
    },

    async deleteServer(serverId) {
      return (await call('deleteServer', { p_id: serverId })) === true;
    },

    async recordHealthCheck(serverId, healthy, responseTimeMs) {
      const rows = asRows(
        await call('recordHealthCheck', {
          p_id: serverId,
          p_healthy: healthy,
          p_response_time: responseTimeMs == null ? null : Math.round(responseTimeMs),
        }),
      );
      return rows[0] ? mapServer(rows[0]) : null;
    },

    async deviceStatusCounts() {
      const counts: Partial<Record<DeviceStatus, number>> = {};
      for (const row of asRows(await call('deviceStatusCounts', {}))) counts[row.status as DeviceStatus] = Number(row.devices);
      return counts;
    },

    async recentLeaseEvents(limit) {
      return asRows(await call('recentLeaseEvents', { p_limit: limit })).map(mapLeaseEvent);
    },

    async acceptMessage(message) {
      const rows = asRows(
        await call('acceptMessage', {
          p_id: message.id,
          p_device_id: message.deviceId,
          p_idempotency_key: message.idempotencyKey,
          p_idempotency_ms: message.idempotencyMs,
          p_recipient: message.to,
          p_type: message.type,
          p_text: message.text ?? null,
          p_media_url: message.mediaUrl ?? null,
          p_caption: message.caption ?? null,
          p_file_name: message.fileName ?? null,
        }),
      );
      const row = one(rows, OPERATIONS.acceptMessage.fn);
      return {
        id: String(row.message_id),
        created: row.created === true,
        status: row.message_status as StoredMessage['status'],
        acceptedAt: toDate(row.message_accepted_at),
      };
    },

    async getMessage(messageId) {
      if (!UUID.test(messageId)) return null;
      const rows = asRows(await call('getMessage', { p_id: messageId }));
      return rows[0] ? mapMessage(rows[0]) : null;
    },

    async listPendingMessages(after, limit) {
      const rows = asRows(await call('listPendingMessages', { p_after_device: after?.deviceId ?? null, p_after_seq: after?.seq ?? null, p_limit: limit }));
      return rows.map(mapMessage);
    },

    async listEvents(deviceId, afterSequence, limit, since) {
      if (!UUID.test(deviceId)) return [];
      const rows = asRows(
        await call('listEvents', { p_device_id: deviceId, p_after_sequence: afterSequence, p_limit: limit, p_since: since?.toISOString() ?? null }),
      );
      return rows.map(mapEvent);
    },

    async listRecentEvents(deviceIds, since, perDevice) {
      const ids = deviceIds.filter((id) => UUID.test(id));
      if (ids.length === 0) return [];
      return asRows(await call('listRecentEvents', { p_device_ids: ids, p_since: since.toISOString(), p_per_device: perDevice })).map(mapEvent);
    },

    async listEventCursors(after, limit) {
      const rows = asRows(await call('listEventCursors', { p_after: after, p_limit: limit }));
      return rows.map((row) => ({ deviceId: String(row.device_id), lastSequence: toNumber(row.last_sequence), webhookSequence: toNumber(row.webhook_sequence) }));
    },

    async pruneEvents(olderThan, limit) {
      return toNumber(await call('pruneEvents', { p_before: olderThan.toISOString(), p_limit: limit }));
    },

    async putWebhook(webhook) {
      if (!UUID.test(webhook.deviceId)) return null;
      const rows = asRows(
        await call('putWebhook', { p_device_id: webhook.deviceId, p_url: webhook.url, p_events: webhook.events, p_secret_ciphertext: webhook.secretCiphertext }),
      );
      return rows[0] ? mapWebhook(rows[0]) : null;
    },

    async getWebhook(deviceId) {
      if (!UUID.test(deviceId)) return null;
      const rows = asRows(await call('getWebhook', { p_device_id: deviceId }));
      return rows[0] ? mapWebhook(rows[0]) : null;
    },

    async deleteWebhook(deviceId) {
      if (!UUID.test(deviceId)) return false;
      return (await call('deleteWebhook', { p_device_id: deviceId })) === true;
    },

    async applyRecords(records) {
      if (records.length === 0) return { applied: 0, duplicate: 0, fenced: 0, rejected: 0, errors: [] };
      const report = (await call('applyRecords', { p_records: records })) as Partial<ApplyRecordsReport> | null;
      return {
        applied: Number(report?.applied ?? 0),
        duplicate: Number(report?.duplicate ?? 0),
        fenced: Number(report?.fenced ?? 0),
        rejected: Number(report?.rejected ?? 0),
        errors: Array.isArray(report?.errors) ? report.errors : [],
      };
    },

    async appendServerLog(entry) {
      await call('appendServerLog', {
        p_server_id: entry.serverId,
        p_level: entry.level,
        p_event: entry.event,
        p_message: entry.message,
        p_details: entry.details ?? {},
      });
    },

    async appendLeaseEvent(entry) {
      await call('appendLeaseEvent', {
        p_device_id: entry.deviceId,
        p_server_id: entry.serverId,
        p_event_type: entry.eventType,
        p_epoch: entry.epoch,
        p_details: entry.details ?? {},
      });
    },

    async appendConnectionLog(entry) {
      await call('appendConnectionLog', {
        p_device_id: entry.deviceId,
        p_server_id: entry.serverId,
        p_event_type: entry.eventType,
        p_details: entry.details ?? {},
      });
    },

    async ping() {
      await call('schemaVersion', {});
    },

    close() {
      closing ??= (async () => {
        for (const cleanup of cleanups) {
          try {
            await cleanup();
          } catch (err) {
            log.warn({ err }, 'store cleanup failed');
          }
        }
      })();
      return closing;
    },
  };
}

function one(rows: Record<string, unknown>[], fn: string) {
  const row = rows[0];
  if (!row) throw new TypeError(`${fn} returned no row`);
  return row;
}
