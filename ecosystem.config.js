// pm2 layout of a wafleet cluster on one host: the embedded store host, three servers, each
// with its own SERVER_ID and PORT, and the monitor (BullBoard and the cluster page on
// MONITORING_PORT, 3001 by default). `npm start` runs `pm2 start ecosystem.config.js` after making
// sure Redis answers; `npm stop` removes the apps. Anything set in the environment of the pm2
// command (or in .env) reaches every app; the values below win for the per-server ones.
//
// Named export (not `export default`): pm2 loads this file with require(), and Node returns the
// module namespace, in which pm2 looks for `apps`.

const SERVERS = [
  { id: 'wafleet-1', port: 3000 },
  { id: 'wafleet-2', port: 3010 },
  { id: 'wafleet-3', port: 3020 },
];

// pm2 sends SIGINT, waits kill_timeout, then SIGKILLs. The server's own hard stop
// (SHUTDOWN_TIMEOUT_MS) must come first, so a drain is never cut short by pm2.
const SHUTDOWN_TIMEOUT_MS = 15_000;
const KILL_TIMEOUT_MS = SHUTDOWN_TIMEOUT_MS + 5_000;

const common = {
  // scripts/launch.mjs runs the TypeScript entry in the same process (see its header).
  script: 'scripts/launch.mjs',
  exec_mode: 'fork',
  autorestart: true,
  // A process that dies within min_uptime counts as a failed start; after max_restarts of those
  // pm2 gives up instead of spinning. Restarts back off exponentially from 200 ms.
  min_uptime: '10s',
  max_restarts: 10,
  exp_backoff_restart_delay: 200,
  kill_timeout: KILL_TIMEOUT_MS,
  merge_logs: true,
  time: true,
};

export const apps = [
  {
    ...common,
    name: 'wafleet-store',
    args: ['scripts/store-host.ts'],
    out_file: 'logs/wafleet-store.out.log',
    error_file: 'logs/wafleet-store.err.log',
    // With STORE=postgres or supabase there is nothing to host: the app exits 0 and stays down.
    stop_exit_codes: [0],
  },
  ...SERVERS.map(({ id, port }) => ({
    ...common,
    name: id,
    args: ['src/main.ts'],
    out_file: `logs/${id}.out.log`,
    error_file: `logs/${id}.err.log`,
    env: {
      SERVER_ID: id,
      PORT: String(port),
      SERVER_URL: `http://127.0.0.1:${port}`,
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      // wafleet-store hosts the embedded store; a server never races it for the data directory.
      PGLITE_HOST_MODE: 'client',
      // WhatsApp itself cannot be reached from every machine that runs this demo cluster; the
      // simulated driver behaves like it. Start with DEVICE_DRIVER=baileys to link real phones.
      DEVICE_DRIVER: process.env.DEVICE_DRIVER ?? 'simulated',
    },
  })),
  {
    ...common,
    name: 'wafleet-monitor',
    args: ['src/monitor.ts'],
    out_file: 'logs/wafleet-monitor.out.log',
    error_file: 'logs/wafleet-monitor.err.log',
    // It needs ADMIN_PASSWORD (in .env or the environment); without one it exits 1 and says why,
    // and `npm start` leaves it out rather than let pm2 restart it in vain.
    env: { SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) },
  },
];
