import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadMigrations } from '../../src/store/migrate.js';
import { OPERATIONS } from '../../src/store/operations.js';
import { StoreQueryError, StoreSchemaError, StoreUnavailableError, createStore, type Store, type StoreRecord } from '../../src/store/index.js';

// The supabase adapter against a local HTTP server that answers like PostgREST: what goes over
// the wire (path, named-parameter body, auth headers) and how answers map back.

const KEY = 'test-service-role-key.not-a-secret';
const log = pino({ level: 'silent' });

interface Recorded {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: unknown;
}

interface Answer {
  status: number;
  body?: unknown;
}

const serverRow = {
  id: 'srv-1',
  server_name: 'one',
  server_url: 'http://one:3000',
  server_type: 'vps',
  region: 'eu',
  description: null,
  max_capacity: 100,
  current_load: 3,
  is_active: true,
  is_healthy: true,
  priority: 2,
  last_health_check: '2026-01-02T03:04:05.678+00:00',
  health_check_failures: 0,
  response_time: 12,
  metadata: { zone: 'a' },
  draining: false,
  created_at: '2026-01-01T00:00:00+00:00',
  updated_at: '2026-01-02T03:04:05.678+00:00',
};

const deviceRow = {
  id: '0b9d3c0e-7a43-4a59-9d53-2f1c4e1f7a10',
  user_id: '5e0c9a1e-2b7d-4f43-8b1f-3c2d1e0f9a8b',
  device_name: 'shop',
  phone_number: null,
  status: 'disconnected',
  desired_state: 'stopped',
  connection_method: 'qr',
  phone_for_pairing: null,
  assigned_server_id: 'srv-1',
  lease_epoch: 9,
  webhook_url: null,
  error_message: null,
  last_connected_at: null,
  created_at: '2026-01-01T00:00:00+00:00',
  updated_at: '2026-01-01T00:00:00+00:00',
};

describe('supabase adapter request shapes', () => {
  let server: Server;
  let url: string;
  let requests: Recorded[];
  const answers = new Map<string, Answer>();

  beforeAll(async () => {
    server = createServer((req, res) => {
      let raw = '';
      req.on('data', (chunk) => (raw += chunk));
      req.on('end', () => {
        const path = req.url ?? '';
        requests.push({ method: req.method ?? '', path, headers: req.headers, body: raw ? JSON.parse(raw) : undefined });
        const answer = answers.get(path.replace('/rest/v1/rpc/', '')) ?? { status: 404, body: { code: 'PGRST202', message: 'not found' } };
        if (answer.body === undefined) {
          res.writeHead(answer.status).end();
        } else {
          res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body));
        }
      });
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((done) => server.close(done));
  });

  beforeEach(() => {
    requests = [];
    answers.clear();
  });

  async function open(databaseUrl?: string): Promise<Store> {
    return createStore({ kind: 'supabase', url, serviceRoleKey: KEY, databaseUrl }, { log });
  }

  /** Asserts the one request made: POST /rest/v1/rpc/<fn>, service-role headers, this body. */
  function expectRpc(fn: string, body: Record<string, unknown>) {
    expect(requests).toHaveLength(1);
    const [request] = requests;
    expect(request).toMatchObject({ method: 'POST', path: `/rest/v1/rpc/${fn}`, body });
    expect(request!.headers.apikey).toBe(KEY);
    expect(request!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(request!.headers['content-type']).toMatch(/application\/json/);
  }

  it('registerServer sends every named parameter and maps the row', async () => {
    const store = await open();
    answers.set('wafleet_register_server', { status: 200, body: [serverRow] });
    const server = await store.registerServer({
      id: 'srv-1',
      serverName: 'one',
      serverUrl: 'http://one:3000',
      serverType: 'vps',
      region: 'eu',
      maxCapacity: 100,
      priority: 2,
      metadata: { zone: 'a' },
    });
    expectRpc('wafleet_register_server', {
      p_id: 'srv-1',
      p_server_name: 'one',
      p_server_url: 'http://one:3000',
      p_server_type: 'vps',
      p_region: 'eu',
      p_max_capacity: 100,
      p_priority: 2,
      p_description: null,
      p_metadata: { zone: 'a' },
    });
    expect(server).toEqual({
      id: 'srv-1',
      serverName: 'one',
      serverUrl: 'http://one:3000',
      serverType: 'vps',
      region: 'eu',
      maxCapacity: 100,
      currentLoad: 3,
      isActive: true,
      isHealthy: true,
      priority: 2,
      lastHealthCheck: new Date('2026-01-02T03:04:05.678Z'),
      healthCheckFailures: 0,
      responseTime: 12,
      metadata: { zone: 'a' },
      draining: false,
      createdAt: new Date('2026-01-01T00:00:00Z'),
      updatedAt: new Date('2026-01-02T03:04:05.678Z'),
    });
  });

  it('void operations send their parameters and accept 204', async () => {
    const store = await open();
    const cases: Array<[string, () => Promise<void>, Record<string, unknown>]> = [
      [
        'wafleet_record_server_health',
        () => store.recordServerHealth('srv-1', 4, 17.6),
        { p_server_id: 'srv-1', p_current_load: 4, p_response_time: 18 },
      ],
      ['wafleet_mark_server_inactive', () => store.markServerInactive('srv-1'), { p_server_id: 'srv-1' }],
      [
        'wafleet_append_server_log',
        () => store.appendServerLog({ serverId: 'srv-1', level: 'info', event: 'started', message: 'up' }),
        { p_server_id: 'srv-1', p_level: 'info', p_event: 'started', p_message: 'up', p_details: {} },
      ],
      [
        'wafleet_append_lease_event',
        () => store.appendLeaseEvent({ deviceId: deviceRow.id, serverId: null, eventType: 'expire', epoch: 4, details: { by: 'sweep' } }),
        { p_device_id: deviceRow.id, p_server_id: null, p_event_type: 'expire', p_epoch: 4, p_details: { by: 'sweep' } },
      ],
      [
        'wafleet_append_connection_log',
        () => store.appendConnectionLog({ deviceId: deviceRow.id, serverId: 'srv-1', eventType: 'qr' }),
        { p_device_id: deviceRow.id, p_server_id: 'srv-1', p_event_type: 'qr', p_details: {} },
      ],
    ];
    for (const [fn, run, body] of cases) {
      requests = [];
      answers.set(fn, { status: 204 });
      await run();
      expectRpc(fn, body);
    }
  });

  it('reads servers and devices, and maps empty answers to null', async () => {
    const store = await open();
    answers.set('wafleet_get_server', { status: 200, body: [] });
    expect(await store.getServer('srv-x')).toBeNull();
    expectRpc('wafleet_get_server', { p_server_id: 'srv-x' });

    requests = [];
    answers.set('wafleet_list_servers', { status: 200, body: [serverRow, { ...serverRow, id: 'srv-2', response_time: null }] });
    const servers = await store.listServers();
    expectRpc('wafleet_list_servers', {});
    expect(servers.map((s) => [s.id, s.responseTime])).toEqual([
      ['srv-1', 12],
      ['srv-2', null],
    ]);

    requests = [];
    answers.set('wafleet_get_device', { status: 200, body: [deviceRow] });
    const device = await store.getDevice(deviceRow.id);
    expectRpc('wafleet_get_device', { p_device_id: deviceRow.id });
    expect(device).toMatchObject({ id: deviceRow.id, assignedServerId: 'srv-1', leaseEpoch: 9, createdAt: new Date('2026-01-01T00:00:00Z') });

    requests = [];
    answers.set('wafleet_create_device', { status: 200, body: [deviceRow] });
    await store.createDevice({ userId: deviceRow.user_id, deviceName: 'shop', connectionMethod: 'qr' });
    expectRpc('wafleet_create_device', {
      p_user_id: deviceRow.user_id,
      p_device_name: 'shop',
      p_connection_method: 'qr',
      p_phone_for_pairing: null,
      p_webhook_url: null,
    });
  });

  it('scalar operations: best server, fenced assignment, ping', async () => {
    const store = await open();
    answers.set('get_best_available_server', { status: 200, body: 'srv-1' });
    expect(await store.getBestAvailableServer()).toBe('srv-1');
    expectRpc('get_best_available_server', {});

    requests = [];
    answers.set('get_best_available_server', { status: 200, body: null });
    expect(await store.getBestAvailableServer()).toBeNull();

    requests = [];
    answers.set('wafleet_record_assignment', { status: 200, body: false });
    expect(await store.recordAssignment(deviceRow.id, 'srv-1', 41)).toBe(false);
    expectRpc('wafleet_record_assignment', { p_device_id: deviceRow.id, p_server_id: 'srv-1', p_epoch: 41 });

    requests = [];
    answers.set('wafleet_schema_version', { status: 200, body: 1 });
    await store.ping();
    expectRpc('wafleet_schema_version', {});
  });

  it('lease-core operations: fenced status, wanted state, reconcile and re-seed pages, token epochs', async () => {
    const store = await open();
    answers.set('wafleet_update_device_status', { status: 200, body: true });
    expect(await store.updateDeviceStatus(deviceRow.id, 'connected', 12)).toBe(true);
    expectRpc('wafleet_update_device_status', { p_device_id: deviceRow.id, p_status: 'connected', p_epoch: 12, p_error_message: null });

    requests = [];
    answers.set('wafleet_set_desired_state', { status: 200, body: [{ ...deviceRow, desired_state: 'running' }] });
    expect(await store.setDesiredState(deviceRow.id, 'running')).toMatchObject({ id: deviceRow.id, desiredState: 'running' });
    expectRpc('wafleet_set_desired_state', { p_device_id: deviceRow.id, p_desired_state: 'running' });

    requests = [];
    answers.set('wafleet_list_wanted_devices', { status: 200, body: [{ device_id: deviceRow.id }] });
    expect(await store.listWantedDevices(null, 500)).toEqual([deviceRow.id]);
    expectRpc('wafleet_list_wanted_devices', { p_after: null, p_limit: 500 });

    requests = [];
    answers.set('wafleet_list_lease_epochs', { status: 200, body: [{ device_id: deviceRow.id, lease_epoch: 9 }] });
    expect(await store.listLeaseEpochs(deviceRow.user_id, 2)).toEqual([{ deviceId: deviceRow.id, leaseEpoch: 9 }]);
    expectRpc('wafleet_list_lease_epochs', { p_after: deviceRow.user_id, p_limit: 2 });

    requests = [];
    answers.set('wafleet_next_token_epoch', { status: 200, body: 7 });
    expect(await store.nextTokenEpoch('3f1c0a', 'srv-1')).toBe(7);
    expectRpc('wafleet_next_token_epoch', { p_redis_run_id: '3f1c0a', p_server_id: 'srv-1' });
  });

  it('session snapshot operations', async () => {
    const store = await open();
    answers.set('wafleet_save_session', { status: 200, body: true });
    expect(await store.saveSession(deviceRow.id, { me: 1 }, { 'pre-key': {} }, 4)).toBe(true);
    expectRpc('wafleet_save_session', { p_device_id: deviceRow.id, p_creds: { me: 1 }, p_keys: { 'pre-key': {} }, p_epoch: 4 });

    requests = [];
    const row = { device_id: deviceRow.id, creds: { me: 1 }, keys: {}, epoch: 4, cleared: false, created_at: deviceRow.created_at, updated_at: deviceRow.updated_at };
    answers.set('wafleet_get_session', { status: 200, body: [row] });
    expect(await store.getSession(deviceRow.id)).toMatchObject({ deviceId: deviceRow.id, creds: { me: 1 }, epoch: 4, cleared: false });
    expectRpc('wafleet_get_session', { p_device_id: deviceRow.id });

    requests = [];
    answers.set('wafleet_clear_session', { status: 200, body: false });
    expect(await store.clearSession(deviceRow.id, 3)).toBe(false);
    expectRpc('wafleet_clear_session', { p_device_id: deviceRow.id, p_epoch: 3 });
  });

  it('write-behind batches go as one RPC with the records as JSON, and the report is read back', async () => {
    const store = await open();
    const records: StoreRecord[] = [
      { kind: 'assignment', at: '2026-01-01T00:00:00.000Z', deviceId: deviceRow.id, serverId: 'srv-1', epoch: 2 },
      { kind: 'server_log', id: deviceRow.id, at: '2026-01-01T00:00:01.000Z', serverId: 'srv-1', level: 'info', event: 'x', message: 'y' },
    ];
    answers.set('wafleet_apply_records', { status: 200, body: { applied: 1, duplicate: 0, fenced: 1, rejected: 0, errors: [] } });
    expect(await store.applyRecords(records)).toEqual({ applied: 1, duplicate: 0, fenced: 1, rejected: 0, errors: [] });
    expectRpc('wafleet_apply_records', { p_records: records });
  });

  it('HTTP API operations: API keys, device listing and deletion, server admin, cluster overview', async () => {
    const store = await open();
    const hash = 'a'.repeat(64);
    const keyRow = { id: deviceRow.id, user_id: deviceRow.user_id, name: 'ci', key_hash: hash, created_at: deviceRow.created_at, revoked_at: null };
    const cases: Array<[string, Answer, () => Promise<unknown>, Record<string, unknown>, unknown]> = [
      ['wafleet_create_api_key', { status: 200, body: [keyRow] }, () => store.createApiKey(deviceRow.user_id, 'ci', hash), { p_user_id: deviceRow.user_id, p_name: 'ci', p_key_hash: hash }, { id: deviceRow.id, userId: deviceRow.user_id, name: 'ci', createdAt: new Date(deviceRow.created_at) }],
      ['wafleet_find_api_key', { status: 200, body: [] }, () => store.findApiKey(hash), { p_key_hash: hash }, null],
      ['wafleet_revoke_api_key', { status: 200, body: true }, () => store.revokeApiKey(deviceRow.id), { p_id: deviceRow.id }, true],
      ['wafleet_list_devices', { status: 200, body: [deviceRow] }, async () => (await store.listDevices(null, 5)).length, { p_user_id: null, p_limit: 5 }, 1],
      ['wafleet_delete_device', { status: 200, body: false }, () => store.deleteDevice(deviceRow.id), { p_device_id: deviceRow.id }, false],
      ['wafleet_configure_server', { status: 200, body: [serverRow] }, async () => (await store.configureServer('srv-1', { priority: 3 })).id, { p_id: 'srv-1', p_server_name: null, p_server_url: null, p_server_type: null, p_region: null, p_max_capacity: null, p_priority: 3 }, 'srv-1'],
      ['wafleet_delete_server', { status: 200, body: true }, () => store.deleteServer('srv-1'), { p_id: 'srv-1' }, true],
      ['wafleet_record_health_check', { status: 200, body: [] }, () => store.recordHealthCheck('srv-1', true, 4.6), { p_id: 'srv-1', p_healthy: true, p_response_time: 5 }, null],
      ['wafleet_device_status_counts', { status: 200, body: [{ status: 'connected', devices: 3 }] }, () => store.deviceStatusCounts(), {}, { connected: 3 }],
      ['wafleet_recent_lease_events', { status: 200, body: [] }, () => store.recentLeaseEvents(7), { p_limit: 7 }, []],
    ];
    for (const [fn, answer, run, body, expected] of cases) {
      requests = [];
      answers.set(fn, answer);
      expect(await run()).toEqual(expected);
      expectRpc(fn, body);
    }
  });

  it('outbound message operations: accept, read, pending pages (PostgREST JSON rows)', async () => {
    const store = await open();
    const messageRow = {
      id: deviceRow.user_id, seq: 12, device_id: deviceRow.id, idempotency_key: 'k-1', recipient: '4915112345678', type: 'text', body_text: 'hi',
      media_url: null, caption: null, file_name: null, status: 'queued', accepted_at: deviceRow.created_at, finished_at: null, wa_message_id: null, error: null,
      delivered_at: deviceRow.updated_at, read_at: null,
    };
    const stored = { id: deviceRow.user_id, seq: 12, deviceId: deviceRow.id, idempotencyKey: 'k-1', to: '4915112345678', type: 'text', text: 'hi', mediaUrl: null, caption: null, fileName: null, status: 'queued', acceptedAt: new Date(deviceRow.created_at), finishedAt: null, waMessageId: null, error: null, deliveredAt: new Date(deviceRow.updated_at), readAt: null };
    const cases: Array<[string, Answer, () => Promise<unknown>, Record<string, unknown>, unknown]> = [
      [
        'wafleet_accept_message',
        { status: 200, body: [{ message_id: deviceRow.user_id, created: false, message_status: 'queued', message_accepted_at: deviceRow.created_at }] },
        () => store.acceptMessage({ id: deviceRow.id, deviceId: deviceRow.id, idempotencyKey: 'k-1', idempotencyMs: 60_000, to: '4915112345678', type: 'text', text: 'hi' }),
        { p_id: deviceRow.id, p_device_id: deviceRow.id, p_idempotency_key: 'k-1', p_idempotency_ms: 60_000, p_recipient: '4915112345678', p_type: 'text', p_text: 'hi', p_media_url: null, p_caption: null, p_file_name: null },
        { id: deviceRow.user_id, created: false, status: 'queued', acceptedAt: new Date(deviceRow.created_at) },
      ],
      ['wafleet_get_message', { status: 200, body: [messageRow] }, () => store.getMessage(deviceRow.user_id), { p_id: deviceRow.user_id }, stored],
      ['wafleet_list_pending_messages', { status: 200, body: [messageRow] }, () => store.listPendingMessages({ deviceId: deviceRow.id, seq: 11 }, 3), { p_after_device: deviceRow.id, p_after_seq: 11, p_limit: 3 }, [stored]],
    ];
    for (const [fn, answer, run, body, expected] of cases) {
      requests = [];
      answers.set(fn, answer);
      expect(await run()).toEqual(expected);
      expectRpc(fn, body);
    }
  });

  it('inbound event operations: list after a sequence or since a time, cursors, prune (PostgREST JSON rows)', async () => {
    const store = await open();
    const eventRow = { device_id: deviceRow.id, sequence: 8, id: 'ev-8', type: 'message.received', data: { text: 'hi' }, created_at: deviceRow.created_at };
    const since = new Date(deviceRow.created_at);
    const cases: Array<[string, Answer, () => Promise<unknown>, Record<string, unknown>, unknown]> = [
      [
        'wafleet_list_events',
        { status: 200, body: [eventRow] },
        () => store.listEvents(deviceRow.id, 7, 50, since),
        { p_device_id: deviceRow.id, p_after_sequence: 7, p_limit: 50, p_since: since.toISOString() },
        [{ deviceId: deviceRow.id, sequence: 8, id: 'ev-8', type: 'message.received', data: { text: 'hi' }, createdAt: since }],
      ],
      [
        'wafleet_list_recent_events',
        { status: 200, body: [eventRow] },
        () => store.listRecentEvents([deviceRow.id, 'not-a-uuid'], since, 500),
        { p_device_ids: [deviceRow.id], p_since: since.toISOString(), p_per_device: 500 },
        [{ deviceId: deviceRow.id, sequence: 8, id: 'ev-8', type: 'message.received', data: { text: 'hi' }, createdAt: since }],
      ],
      [
        'wafleet_list_event_cursors',
        { status: 200, body: [{ device_id: deviceRow.id, last_sequence: 8, webhook_sequence: 5 }] },
        () => store.listEventCursors(null, 100),
        { p_after: null, p_limit: 100 },
        [{ deviceId: deviceRow.id, lastSequence: 8, webhookSequence: 5 }],
      ],
      ['wafleet_prune_events', { status: 200, body: 3 }, () => store.pruneEvents(since, 1000), { p_before: since.toISOString(), p_limit: 1000 }, 3],
    ];
    for (const [fn, answer, run, body, expected] of cases) {
      requests = [];
      answers.set(fn, answer);
      expect(await run()).toEqual(expected);
      expectRpc(fn, body);
    }
  });

  it('device webhook operations: put (events as a JSON array PostgREST makes text[]), get, delete', async () => {
    const store = await open();
    const row = { device_id: deviceRow.id, url: 'https://hooks.example/a', events: ['message.received'], secret_ciphertext: 'v1.a.b.c', updated_at: deviceRow.created_at };
    const webhook = { deviceId: deviceRow.id, url: 'https://hooks.example/a', events: ['message.received'], secretCiphertext: 'v1.a.b.c', updatedAt: new Date(deviceRow.created_at) };
    const cases: Array<[string, Answer, () => Promise<unknown>, Record<string, unknown>, unknown]> = [
      [
        'wafleet_put_webhook',
        { status: 200, body: [row] },
        () => store.putWebhook({ deviceId: deviceRow.id, url: 'https://hooks.example/a', events: ['message.received'], secretCiphertext: 'v1.a.b.c' }),
        { p_device_id: deviceRow.id, p_url: 'https://hooks.example/a', p_events: ['message.received'], p_secret_ciphertext: 'v1.a.b.c' },
        webhook,
      ],
      ['wafleet_get_webhook', { status: 200, body: [{ ...row, events: null }] }, () => store.getWebhook(deviceRow.id), { p_device_id: deviceRow.id }, { ...webhook, events: null }],
      ['wafleet_get_webhook', { status: 200, body: [] }, () => store.getWebhook(deviceRow.id), { p_device_id: deviceRow.id }, null],
      ['wafleet_delete_webhook', { status: 200, body: true }, () => store.deleteWebhook(deviceRow.id), { p_device_id: deviceRow.id }, true],
    ];
    for (const [fn, answer, run, body, expected] of cases) {
      requests = [];
      answers.set(fn, answer);
      expect(await run()).toEqual(expected);
      expectRpc(fn, body);
    }
  });

  it('every catalogue operation is exercised above', () => {
    // A new operation must get a request-shape case here before it ships.
    expect(Object.values(OPERATIONS).map((op) => op.fn).sort()).toEqual(
      [
        'get_best_available_server',
        'wafleet_append_connection_log',
        'wafleet_append_lease_event',
        'wafleet_append_server_log',
        'wafleet_accept_message',
        'wafleet_apply_records',
        'wafleet_clear_session',
        'wafleet_configure_server',
        'wafleet_create_api_key',
        'wafleet_create_device',
        'wafleet_delete_device',
        'wafleet_delete_server',
        'wafleet_delete_webhook',
        'wafleet_device_status_counts',
        'wafleet_find_api_key',
        'wafleet_get_device',
        'wafleet_get_message',
        'wafleet_get_server',
        'wafleet_get_session',
        'wafleet_get_webhook',
        'wafleet_list_devices',
        'wafleet_list_event_cursors',
        'wafleet_list_events',
        'wafleet_list_lease_epochs',
        'wafleet_list_pending_messages',
        'wafleet_list_recent_events',
        'wafleet_list_servers',
        'wafleet_list_wanted_devices',
        'wafleet_mark_server_inactive',
        'wafleet_next_token_epoch',
        'wafleet_prune_events',
        'wafleet_put_webhook',
        'wafleet_recent_lease_events',
        'wafleet_record_assignment',
        'wafleet_record_health_check',
        'wafleet_record_server_health',
        'wafleet_register_server',
        'wafleet_revoke_api_key',
        'wafleet_save_session',
        'wafleet_schema_version',
        'wafleet_set_desired_state',
        'wafleet_update_device_status',
      ].sort(),
    );
  });

  it('maps database errors to StoreQueryError with the SQLSTATE', async () => {
    const store = await open();
    answers.set('wafleet_register_server', {
      status: 400,
      body: { code: '23514', message: 'new row violates check constraint "backend_servers_id_format"', details: null, hint: null },
    });
    const error = await store
      .registerServer({ id: 'admin', serverName: 'x', serverUrl: 'http://x', serverType: 'vps', region: 'eu', maxCapacity: 1, priority: 0 })
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(StoreQueryError);
    expect(error).toMatchObject({ sqlState: '23514', code: 'store_query_failed' });
  });

  it('reports an unreachable project as StoreUnavailableError without the key', async () => {
    const store = await createStore({ kind: 'supabase', url: 'http://127.0.0.1:9', serviceRoleKey: KEY }, { log });
    const error = await store.ping().catch((err: unknown) => err);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).not.toContain(KEY);
  });

  describe('migrate() without a direct connection', () => {
    it('passes when the schema is current', async () => {
      const migrations = await loadMigrations();
      const store = await open();
      answers.set('wafleet_schema_version', { status: 200, body: Math.max(...migrations.map((m) => m.version)) });
      expect(await store.migrate()).toEqual({ applied: [], alreadyApplied: migrations.map((m) => m.name) });
    });

    it('tells the operator to run npm run migrate when the schema is behind or missing', async () => {
      const store = await open();
      answers.set('wafleet_schema_version', { status: 200, body: 0 });
      await expect(store.migrate()).rejects.toThrow(StoreSchemaError);
      answers.delete('wafleet_schema_version'); // PostgREST: 404 PGRST202, function not found
      const error = await store.migrate().catch((err: unknown) => err);
      expect(error).toBeInstanceOf(StoreSchemaError);
      expect((error as Error).message).toMatch(/npm run migrate/);
      expect((error as Error).message).toMatch(/DATABASE_URL/);
    });
  });
});
