import { LEASE_STATUSES, type ClusterSnapshot } from './cluster-state.js';

// The cluster page: a static shell, the snapshot it was served with as a JSON data island, and
// assets/cluster.js, which renders that snapshot and then the JSON endpoint's every few seconds
// (with textContent only, so nothing read from Redis or the store is ever parsed as HTML). No
// framework and no CDN: the page must work on a machine without internet access.

export const ADMIN_BASE = '/admin';
export const CLUSTER_PAGE_PATH = `${ADMIN_BASE}/cluster`;
export const CLUSTER_JSON_PATH = `${ADMIN_BASE}/cluster.json`;
export const CLUSTER_ASSETS_PATH = `${ADMIN_BASE}/cluster/assets`;
export const QUEUES_PATH = `${ADMIN_BASE}/queues`;

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

/**
 * JSON safe inside <script type="application/json">: no `</script>`, no `<!--`, and no line
 * separators that older parsers treat as line ends.
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

export function renderClusterPage(snapshot: ClusterSnapshot, options: { refreshMs: number }): string {
  const statusOptions = LEASE_STATUSES.map((s) => `<option value="${escapeHtml(s)}">${escapeHtml(s)}</option>`).join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>wafleet cluster</title>
<link rel="stylesheet" href="${CLUSTER_ASSETS_PATH}/cluster.css">
</head>
<body data-refresh-ms="${escapeHtml(String(options.refreshMs))}" data-json-path="${escapeHtml(CLUSTER_JSON_PATH)}">
<header>
  <h1>wafleet cluster</h1>
  <nav><a href="${QUEUES_PATH}">Queues (BullBoard)</a><a id="json-link" href="${CLUSTER_JSON_PATH}">JSON</a></nav>
  <span id="updated" role="status"></span>
</header>
<noscript><p class="note">This page draws itself with JavaScript; the same data is at <a href="${CLUSTER_JSON_PATH}">${CLUSTER_JSON_PATH}</a>.</p></noscript>
<main>
<section>
  <h2>Servers <span id="server-count" class="count"></span></h2>
  <table id="servers">
    <thead><tr><th>server</th><th>state</th><th>load / capacity</th><th>leases</th><th>priority</th><th>region</th><th>draining</th><th>last heartbeat</th><th>response</th><th>url</th></tr></thead>
    <tbody></tbody>
  </table>
</section>
<section>
  <h2>Leases <span id="lease-count" class="count"></span></h2>
  <form id="filters">
    <label>server <select name="server"><option value="">all</option></select></label>
    <label>status <select name="status"><option value="">all</option>${statusOptions}</select></label>
  </form>
  <p id="lease-status-summary" class="note"></p>
  <table id="leases">
    <thead><tr><th>device</th><th>owner</th><th>token</th><th>time left</th><th>status</th></tr></thead>
    <tbody></tbody>
  </table>
  <p id="lease-more" class="note"></p>
</section>
<section>
  <h2>Failovers, drains and rebalances <span id="event-count" class="count"></span></h2>
  <p id="store-note" class="note"></p>
  <table id="events">
    <thead><tr><th>time</th><th>event</th><th>device</th><th>server</th><th>token</th><th>details</th></tr></thead>
    <tbody></tbody>
  </table>
</section>
</main>
<script id="cluster-data" type="application/json">${jsonForScript(snapshot)}</script>
<script src="${CLUSTER_ASSETS_PATH}/cluster.js" defer></script>
</body>
</html>
`;
}
