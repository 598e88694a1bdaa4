// The cluster page's renderer (served by src/monitoring/app.ts). It draws the snapshot embedded in
// the page, then fetches /admin/cluster.json with the page's filters every few seconds. Every value
// goes in through textContent, never innerHTML: device and server ids come from Redis and the store.
(() => {
  'use strict';
  const body = document.body;
  const REFRESH_MS = Number(body.dataset.refreshMs) || 3000;
  const JSON_PATH = body.dataset.jsonPath || '/admin/cluster.json';
  const byId = (id) => document.getElementById(id);
  const dash = '\u2013';

  const seconds = (ms) => (ms === null || ms === undefined ? dash : `${(ms / 1000).toFixed(1)} s`);
  const millis = (ms) => (ms === null || ms === undefined ? dash : `${ms} ms`);
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : dash);

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined || text === '' ? dash : String(text);
    if (className) td.className = className;
    return td;
  }

  function badge(text, kind) {
    const td = document.createElement('td');
    const span = document.createElement('span');
    span.className = `badge badge-${kind}`;
    span.textContent = text;
    td.appendChild(span);
    return td;
  }

  function fill(tableId, rows, emptyText, columns) {
    const tbody = byId(tableId).tBodies[0];
    const fresh = document.createElement('tbody');
    if (rows.length === 0) {
      const tr = document.createElement('tr');
      const td = cell(emptyText, 'empty');
      td.colSpan = columns;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    for (const row of rows) fresh.appendChild(row);
    tbody.replaceWith(fresh);
  }

  function serverRow(s) {
    const tr = document.createElement('tr');
    tr.dataset.serverId = s.id;
    tr.dataset.state = s.state;
    const load = s.capacity ? `${s.load} / ${s.capacity} (${Math.round((s.load / s.capacity) * 100)}%)` : String(s.load);
    const heartbeat = s.heartbeatAgeMs === null ? dash : `${seconds(s.heartbeatAgeMs)} ago`;
    tr.append(
      cell(s.name === s.id ? s.id : `${s.id} (${s.name})`, 'mono'),
      badge(s.state, s.state),
      cell(load, 'num'),
      cell(s.leases, 'num'),
      cell(s.priority, 'num'),
      cell(s.region),
      cell(s.draining ? 'yes' : 'no'),
      cell(heartbeat, 'num'),
      cell(millis(s.responseTimeMs), 'num'),
      cell(s.url, 'mono'),
    );
    return tr;
  }

  function leaseRow(l) {
    const tr = document.createElement('tr');
    tr.dataset.deviceId = l.deviceId;
    tr.dataset.serverId = l.serverId;
    tr.dataset.status = l.status;
    tr.append(cell(l.deviceId, 'mono'), cell(l.serverId, 'mono'), cell(l.token, 'num'), cell(seconds(l.ttlMs), 'num'), badge(l.status, l.status));
    return tr;
  }

  function eventRow(e) {
    const tr = document.createElement('tr');
    tr.dataset.type = e.type;
    const details = Object.entries(e.details || {})
      .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(', ');
    tr.append(
      cell(new Date(e.at).toLocaleString()),
      badge(e.label, e.type),
      cell(e.deviceId, 'mono'),
      cell(e.serverId, 'mono'),
      cell(e.token, 'num'),
      cell(details),
    );
    return tr;
  }

  function syncServerOptions(servers, selected) {
    const select = byId('filters').elements.namedItem('server');
    const ids = [...new Set([...servers.map((s) => s.id), ...(selected ? [selected] : [])])].sort();
    const current = [...select.options].slice(1).map((o) => o.value);
    if (current.join('\n') !== ids.join('\n')) {
      while (select.options.length > 1) select.remove(1);
      for (const id of ids) select.add(new Option(id, id));
    }
    select.value = selected || '';
  }

  function render(data) {
    const counts = {};
    for (const s of data.servers) counts[s.state] = (counts[s.state] || 0) + 1;
    byId('server-count').textContent = ['live', 'draining', 'down', 'stopped']
      .filter((state) => counts[state])
      .map((state) => `${counts[state]} ${state}`)
      .join(', ') || 'none';
    fill('servers', data.servers.map(serverRow), 'No server has registered yet.', 10);

    const { leases } = data;
    const filtered = data.filters.server || data.filters.status;
    byId('lease-count').textContent = filtered ? `${leases.matching} of ${leases.total}` : String(leases.total);
    byId('lease-status-summary').textContent = Object.entries(leases.byStatus)
      .map(([status, n]) => `${status}: ${n}`)
      .join(' \u00b7 ');
    fill('leases', leases.items.map(leaseRow), filtered ? 'No lease matches the filters.' : 'No device holds a lease.', 5);
    byId('lease-more').textContent =
      leases.matching > leases.items.length ? `Showing ${leases.items.length} of ${leases.matching}; narrow the filters or raise ?limit= (JSON has them all).` : '';
    syncServerOptions(data.servers, data.filters.server);
    byId('filters').elements.namedItem('status').value = data.filters.status || '';

    byId('event-count').textContent = String(data.events.length);
    byId('store-note').textContent = data.store.available ? '' : `The store cannot be read right now (${data.store.error}); servers and leases come from Redis.`;
    fill('events', data.events.map(eventRow), data.store.available ? 'None recorded yet.' : 'Unavailable.', 6);
    byId('updated').textContent = `updated ${time(data.generatedAt)}`;
    byId('updated').className = '';
  }

  let timer;
  let inFlight = null;
  async function refresh() {
    clearTimeout(timer);
    if (!inFlight) {
      inFlight = (async () => {
        try {
          const res = await fetch(`${JSON_PATH}${location.search}`, { headers: { accept: 'application/json' }, cache: 'no-store' });
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          render(await res.json());
        } catch (err) {
          byId('updated').textContent = `refresh failed (${err.message}); retrying`;
          byId('updated').className = 'stale';
        } finally {
          inFlight = null;
        }
      })();
    }
    await inFlight;
    timer = setTimeout(refresh, REFRESH_MS);
  }

  byId('filters').addEventListener('change', () => {
    const params = new URLSearchParams(location.search);
    for (const name of ['server', 'status']) {
      const value = byId('filters').elements.namedItem(name).value;
      if (value) params.set(name, value);
      else params.delete(name);
    }
    const query = params.toString();
    history.replaceState(null, '', `${location.pathname}${query ? `?${query}` : ''}`);
    byId('json-link').href = `${JSON_PATH}${query ? `?${query}` : ''}`;
    void refresh();
  });
  byId('filters').addEventListener('submit', (event) => event.preventDefault());

  byId('json-link').href = `${JSON_PATH}${location.search}`;
  render(JSON.parse(byId('cluster-data').textContent));
  timer = setTimeout(refresh, REFRESH_MS);
})();
