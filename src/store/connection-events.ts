// Every event_type the device runtime may write to device_connection_logs. The table's CHECK in
// migrations/ lists the same values; test/integration/store-contract.test.ts proves they agree.
export const CONNECTION_LOG_EVENT_TYPES = [
  'connecting',
  'connected',
  'disconnected',
  'reconnecting',
  'qr',
  'pairing_code',
  'conflict',
  'logged_out',
  'error',
  'session_restored',
  'session_cleared',
  'restart_required',
  'stopped',
] as const;

export type ConnectionLogEventType = (typeof CONNECTION_LOG_EVENT_TYPES)[number];
