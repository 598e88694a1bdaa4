// `npm run chaos`: real servers under seeded faults, a history of everything seen, and the checker's
// verdict. See the README's reliability section for what is checked and the figures of a full run.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { checkHistory, formatReport } from '../../harness/chaos/checker.js';
import { parseHistory } from '../../harness/chaos/history.js';
import { runChaos } from '../../harness/chaos/run.js';

const USAGE = `npm run chaos -- [--servers N] [--devices N] [--duration S] [--seed N] [--ttl MS] [--slack MS] [--rate N] [--inbound N] [--drain S] [--history FILE]
npm run chaos -- --check FILE [--ttl MS] [--slack MS]

  --servers   servers at the start (default 5)
  --devices   simulated devices (default 1000)
  --duration  seconds of faults; every fault type is injected at least once (default 600)
  --seed      picks the faults, their targets and the message load (default: the time)
  --ttl       the servers' LEASE_TTL_MS (default 3000)
  --slack     recovery bound beyond the TTL, in ms (default 5000)
  --rate      messages accepted per second over all devices (default 20)
  --inbound   inbound messages injected per second over all devices, with a webhook receiver
              that has faults of its own (default 5; 0: neither)
  --drain     seconds after the faults for inbound events to reach the logs and the webhook
              receiver; it ends as soon as nothing is owed (default 120: an event that failed
              through several receiver faults waits out a doubled back-off)
  --history   where the history goes (default chaos/history-<seed>.jsonl)
  --check     run nothing: check a history written before and print the verdict

Exits 0 when the checker finds no violation, 1 when it does, 2 on a usage error.`;

const { values } = parseArgs({
  options: {
    servers: { type: 'string', default: '5' },
    devices: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '600' },
    seed: { type: 'string' },
    ttl: { type: 'string', default: '3000' },
    slack: { type: 'string', default: '5000' },
    rate: { type: 'string', default: '20' },
    inbound: { type: 'string', default: '5' },
    drain: { type: 'string', default: '120' },
    history: { type: 'string' },
    check: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const int = (name: string, raw: string | undefined, min: number): number => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} must be an integer of at least ${min}\n\n${USAGE}`);
    process.exit(2);
  }
  return n;
};
if (values.check) {
  const result = checkHistory(parseHistory(readFileSync(values.check, 'utf8')), { defaultBoundMs: int('ttl', values.ttl, 1000) + int('slack', values.slack, 0) });
  console.log(formatReport(result));
  process.exit(result.ok ? 0 : 1);
}
const seed = values.seed === undefined ? Date.now() % 1_000_000 : int('seed', values.seed, 0);
const options = {
  servers: int('servers', values.servers, 2),
  devices: int('devices', values.devices, 1),
  durationMs: int('duration', values.duration, 1) * 1000,
  seed,
  ttlMs: int('ttl', values.ttl, 1000),
  slackMs: int('slack', values.slack, 0),
  messagesPerSecond: int('rate', values.rate, 0),
  inboundPerSecond: int('inbound', values.inbound, 0),
  drainMs: int('drain', values.drain, 0) * 1000,
  historyFile: values.history ?? `chaos/history-${seed}.jsonl`,
  progress: (line: string) => console.error(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}`),
};
console.error(
  `chaos: ${options.servers} servers, ${options.devices} devices, ${values.duration} s, seed ${seed}, TTL ${options.ttlMs} ms, ` +
    `${options.messagesPerSecond} messages/s out, ${options.inboundPerSecond} in`,
);

const started = Date.now();
const outcome = await runChaos(options);
console.log(formatReport(outcome.result));
console.log(`history: ${outcome.historyFile}; ${outcome.faults.length} faults in ${Math.round((Date.now() - started) / 1000)} s; seed ${seed}`);
process.exit(outcome.result.ok ? 0 : 1);
