// The one catalogue of store operations: which SQL function each Store method calls and with
// which named parameters. The SQL adapters build their statements from it and the supabase
// adapter its RPC calls, so the two cannot drift apart; migrations/ defines the functions.

/** PostgreSQL types of the parameters; the SQL adapters cast to them so overloads never guess. */
export type ParamType = 'text' | 'text[]' | 'uuid[]' | 'integer' | 'bigint' | 'uuid' | 'jsonb' | 'boolean' | 'timestamptz';

export interface OperationSpec {
  readonly fn: string;
  readonly params: Readonly<Record<string, ParamType>>;
  /** `rows`: a set of table rows; `scalar`: one value; `void`: nothing. */
  readonly returns: 'rows' | 'scalar' | 'void';
}

/** A server's registration and its admin edits share these parameters. */
const SERVER_PARAMS = {
  p_id: 'text',
  p_server_name: 'text',
  p_server_url: 'text',
  p_server_type: 'text',
  p_region: 'text',
  p_max_capacity: 'integer',
  p_priority: 'integer',
} as const satisfies Record<string, ParamType>;

export const OPERATIONS = {
  registerServer: {
    fn: 'wafleet_register_server',
    returns: 'rows',
    params: { ...SERVER_PARAMS, p_description: 'text', p_metadata: 'jsonb' },
  },
  recordServerHealth: {
    fn: 'wafleet_record_server_health',
    returns: 'void',
    params: { p_server_id: 'text', p_current_load: 'integer', p_response_time: 'integer' },
  },
  markServerInactive: { fn: 'wafleet_mark_server_inactive', returns: 'void', params: { p_server_id: 'text' } },
  getServer: { fn: 'wafleet_get_server', returns: 'rows', params: { p_server_id: 'text' } },
  listServers: { fn: 'wafleet_list_servers', returns: 'rows', params: {} },
  // The freshness window keeps the SQL default (60 s); the seed called it without arguments.
  getBestAvailableServer: { fn: 'get_best_available_server', returns: 'scalar', params: {} },
  createDevice: {
    fn: 'wafleet_create_device',
    returns: 'rows',
    params: {
      p_user_id: 'uuid',
      p_device_name: 'text',
      p_connection_method: 'text',
      p_phone_for_pairing: 'text',
      p_webhook_url: 'text',
    },
  },
  getDevice: { fn: 'wafleet_get_device', returns: 'rows', params: { p_device_id: 'uuid' } },
  recordAssignment: {
    fn: 'wafleet_record_assignment',
    returns: 'scalar',
    params: { p_device_id: 'uuid', p_server_id: 'text', p_epoch: 'bigint' },
  },
  appendServerLog: {
    fn: 'wafleet_append_server_log',
    returns: 'void',
    params: { p_server_id: 'text', p_level: 'text', p_event: 'text', p_message: 'text', p_details: 'jsonb' },
  },
  appendLeaseEvent: {
    fn: 'wafleet_append_lease_event',
    returns: 'void',
    params: { p_device_id: 'uuid', p_server_id: 'text', p_event_type: 'text', p_epoch: 'bigint', p_details: 'jsonb' },
  },
  appendConnectionLog: {
    fn: 'wafleet_append_connection_log',
    returns: 'void',
    params: { p_device_id: 'uuid', p_server_id: 'text', p_event_type: 'text', p_details: 'jsonb' },
  },
  applyRecords: { fn: 'wafleet_apply_records', returns: 'scalar', params: { p_records: 'jsonb' } },
  listWantedDevices: {
    fn: 'wafleet_list_wanted_devices',
    returns: 'rows',
    params: { p_after: 'uuid', p_limit: 'integer' },
  },
  listLeaseEpochs: {
    fn: 'wafleet_list_lease_epochs',
    returns: 'rows',
    params: { p_after: 'uuid', p_limit: 'integer' },
  },
  setDesiredState: {
    fn: 'wafleet_set_desired_state',
    returns: 'rows',
    params: { p_device_id: 'uuid', p_desired_state: 'text' },
  },
  updateDeviceStatus: {
    fn: 'wafleet_update_device_status',
    returns: 'scalar',
    params: { p_device_id: 'uuid', p_status: 'text', p_epoch: 'bigint', p_error_message: 'text' },
  },
  nextTokenEpoch: {
    fn: 'wafleet_next_token_epoch',
    returns: 'scalar',
    params: { p_redis_run_id: 'text', p_server_id: 'text' },
  },
  saveSession: {
    fn: 'wafleet_save_session',
    returns: 'scalar',
    params: { p_device_id: 'uuid', p_creds: 'jsonb', p_keys: 'jsonb', p_epoch: 'bigint' },
  },
  getSession: { fn: 'wafleet_get_session', returns: 'rows', params: { p_device_id: 'uuid' } },
  clearSession: { fn: 'wafleet_clear_session', returns: 'scalar', params: { p_device_id: 'uuid', p_epoch: 'bigint' } },
  createApiKey: {
    fn: 'wafleet_create_api_key',
    returns: 'rows',
    params: { p_user_id: 'uuid', p_name: 'text', p_key_hash: 'text' },
  },
  findApiKey: { fn: 'wafleet_find_api_key', returns: 'rows', params: { p_key_hash: 'text' } },
  revokeApiKey: { fn: 'wafleet_revoke_api_key', returns: 'scalar', params: { p_id: 'uuid' } },
  listDevices: { fn: 'wafleet_list_devices', returns: 'rows', params: { p_user_id: 'uuid', p_limit: 'integer' } },
  deleteDevice: { fn: 'wafleet_delete_device', returns: 'scalar', params: { p_device_id: 'uuid' } },
  configureServer: { fn: 'wafleet_configure_server', returns: 'rows', params: SERVER_PARAMS },
  deleteServer: { fn: 'wafleet_delete_server', returns: 'scalar', params: { p_id: 'text' } },
  recordHealthCheck: {
    fn: 'wafleet_record_health_check',
    returns: 'rows',
    params: { p_id: 'text', p_healthy: 'boolean', p_response_time: 'integer' },
  },
  deviceStatusCounts: { fn: 'wafleet_device_status_counts', returns: 'rows', params: {} },
  recentLeaseEvents: { fn: 'wafleet_recent_lease_events', returns: 'rows', params: { p_limit: 'integer' } },
  acceptMessage: {
    fn: 'wafleet_accept_message',
    returns: 'rows',
    params: {
      p_id: 'uuid',
      p_device_id: 'uuid',
      p_idempotency_key: 'text',
      p_idempotency_ms: 'bigint',
      p_recipient: 'text',
      p_type: 'text',
      p_text: 'text',
      p_media_url: 'text',
      p_caption: 'text',
      p_file_name: 'text',
    },
  },
  getMessage: { fn: 'wafleet_get_message', returns: 'rows', params: { p_id: 'uuid' } },
  listPendingMessages: {
    fn: 'wafleet_list_pending_messages',
    returns: 'rows',
    params: { p_after_device: 'uuid', p_after_seq: 'bigint', p_limit: 'integer' },
  },
  listEvents: {
    fn: 'wafleet_list_events',
    returns: 'rows',
    params: { p_device_id: 'uuid', p_after_sequence: 'bigint', p_limit: 'integer', p_since: 'timestamptz' },
  },
  listRecentEvents: {
    fn: 'wafleet_list_recent_events',
    returns: 'rows',
    params: { p_device_ids: 'uuid[]', p_since: 'timestamptz', p_per_device: 'integer' },
  },
  listEventCursors: { fn: 'wafleet_list_event_cursors', returns: 'rows', params: { p_after: 'uuid', p_limit: 'integer' } },
  pruneEvents: { fn: 'wafleet_prune_events', returns: 'scalar', params: { p_before: 'timestamptz', p_limit: 'integer' } },
  putWebhook: {
    fn: 'wafleet_put_webhook',
    returns: 'rows',
    params: { p_device_id: 'uuid', p_url: 'text', p_events: 'text[]', p_secret_ciphertext: 'text' },
  },
  getWebhook: { fn: 'wafleet_get_webhook', returns: 'rows', params: { p_device_id: 'uuid' } },
  deleteWebhook: { fn: 'wafleet_delete_webhook', returns: 'scalar', params: { p_device_id: 'uuid' } },
  schemaVersion: { fn: 'wafleet_schema_version', returns: 'scalar', params: {} },
} as const satisfies Record<string, OperationSpec>;

export type OperationName = keyof typeof OPERATIONS;

/** Every named parameter of the operation, each present (null for "not given"). */
export type OperationArgs<N extends OperationName> = {
  readonly [K in keyof (typeof OPERATIONS)[N]['params']]: unknown;
};

/** `rows` operations resolve to the rows, `scalar` ones to the value, `void` ones to undefined. */
export type CallOperation = <N extends OperationName>(name: N, args: OperationArgs<N>) => Promise<unknown>;

/**
 * `select * from fn(p_a => $1::text, ...)`: named notation, like PostgREST, so parameter order
 * in the catalogue never matters.
 */
export function operationSql(spec: OperationSpec): string {
  const args = Object.entries(spec.params)
    .map(([name, type], i) => `${name} => $${i + 1}::${type}`)
    .join(', ');
  const call = `${spec.fn}(${args})`;
  return spec.returns === 'rows' ? `select * from ${call}` : `select ${call} as value`;
}

/** Positional values for operationSql; jsonb goes as text because pg would turn arrays into PG arrays. */
export function operationValues(spec: OperationSpec, args: Readonly<Record<string, unknown>>): unknown[] {
  return Object.entries(spec.params).map(([name, type]) => {
    const value = args[name] ?? null;
    return type === 'jsonb' && value !== null ? JSON.stringify(value) : value;
  });
}
