// `npm run bench`: every scenario of issues 8 and 17, each figure beside a baseline measured in the same
// run on the same Redis. See the README's performance section for the flags and the files.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, startEphemeralRedis, type LocalRedis } from '../../harness/local-redis.js';
import { redisInfo } from '../../harness/bench/probe.js';
import { benchMarkdown, textTable, withBenchSection, type BenchResults, type Machine, type ScenarioResult } from '../../harness/bench/report.js';
import type { BenchContext, Scenario } from './context.js';
import { claimScenario } from './scenarios/claim.js';
import { drainScenario } from './scenarios/drain.js';
import { eventsScenario } from './scenarios/events.js';
import { failoverScenario } from './scenarios/failover.js';
import { footprintScenario } from './scenarios/footprint.js';
import { messagesScenario } from './scenarios/messages.js';
import { renewalScenario } from './scenarios/renewal.js';

const SCENARIOS: Scenario[] = [claimScenario, renewalScenario, failoverScenario, drainScenario, messagesScenario, eventsScenario, footprintScenario];
const RESULTS = 'bench/results.json';

const USAGE = `npm run bench -- [--quick] [--only <scenario>[,<scenario>...]] [--out <file>] [--redis-url <url>] [--readme]

  --quick          small sizes (CI), about 90 s; writes bench/results.quick.json
  --only <ids>     some scenarios: ${SCENARIOS.map((s) => s.id).join(', ')}; writes bench/results.partial.json
  --out <file>     write the results there instead
  --redis-url <u>  measure this Redis (default: a redis-server of the bench's own on a free port,
                   so no other client's load is counted in Redis's CPU and memory figures)
  --readme         only rewrite the README's performance section from ${RESULTS}

A full run (no --quick, no --only) writes ${RESULTS} and the README's performance section.`;

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    out: { type: 'string' },
    'redis-url': { type: 'string' },
    readme: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (flags.help) {
  console.log(USAGE);
  process.exit(0);
}

function writeReadme(results: BenchResults): void {
  writeFileSync('README.md', withBenchSection(readFileSync('README.md', 'utf8'), benchMarkdown(results)));
  console.log(`README.md performance section written from ${RESULTS}`);
}

if (flags.readme) {
  writeReadme(JSON.parse(readFileSync(RESULTS, 'utf8')) as BenchResults);
  process.exit(0);
}

const only = flags.only?.split(',').map((id) => id.trim()).filter(Boolean);
const unknown = only?.filter((id) => !SCENARIOS.some((s) => s.id === id)) ?? [];
if (unknown.length > 0) {
  console.error(`unknown scenario ${unknown.join(', ')}; one of ${SCENARIOS.map((s) => s.id).join(', ')}\n\n${USAGE}`);
  process.exit(2);
}
const selected = only ? SCENARIOS.filter((s) => only.includes(s.id)) : SCENARIOS;
const outFile = flags.out ?? (flags.quick ? 'bench/results.quick.json' : only ? 'bench/results.partial.json' : RESULTS);

// Clean-ups run on every way out: the end of a scenario, a failure, Ctrl-C or SIGTERM.
const cleanups: Array<() => Promise<unknown>> = [];
const lastResort = new Set<() => void>();
async function runCleanups(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await Promise.race([cleanup(), new Promise((r) => setTimeout(r, 30_000).unref())]);
    } catch (err) {
      console.error(`clean-up failed: ${(err as Error).message}`);
    }
  }
}
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${signal}: stopping server processes and removing the bench's keys...`);
    void runCleanups().finally(() => process.exit(130));
  });
}
// Whatever is still running when the process exits anyway (a crash) is killed synchronously.
process.on('exit', () => {
  for (const kill of lastResort) {
    try {
      kill();
    } catch {
      // already gone
    }
  }
});

const progress = (message: string) => process.stderr.write(`  ${message}\n`);

async function machine(redis: Redis, redisLabel: string): Promise<Machine> {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()}`,
    node: process.versions.node,
    redisVersion: (await redisInfo(redis, 'server')).redis_version ?? 'unknown',
    redis: redisLabel,
    loadAverageAtStart: os.loadavg()[0]!,
  };
}

async function main(): Promise<number> {
  const startedAt = new Date();
  let redisUrl = flags['redis-url'];
  let redisLabel = redisUrl ? new URL(redisUrl).host : 'private';
  if (!redisUrl) {
    const local: LocalRedis = await startEphemeralRedis(await freePort());
    cleanups.push(() => local.stop());
    if (local.pid) lastResort.add(() => process.kill(local.pid!, 'SIGKILL'));
    redisUrl = `redis://127.0.0.1:${local.port}`;
    redisLabel = 'private';
  }
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  cleanups.push(async () => redis.disconnect());
  // Every held device runs a BullMQ worker with a connection of its own (footprint: 10,000, plus
  // each server's own); Redis refuses a limit above what its file descriptors allow.
  const maxClients = await redis
    .config('SET', 'maxclients', '15000')
    .then(() => 15_000)
    .catch(async () => Number(((await redis.config('GET', 'maxclients')) as string[])[1]));
  const results: BenchResults = {
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    quick: flags.quick,
    startedAt: startedAt.toISOString(),
    wallTimeMs: 0,
    machine: await machine(redis, redisLabel),
    scenarios: [],
  };
  if (maxClients < 12_000) console.log(`note: Redis takes at most ${maxClients} clients; the footprint run with 10,000 devices needs about 10,050`);
  const m = results.machine;
  console.log(
    `wafleet bench${flags.quick ? ' (quick)' : ''}: ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, Redis ${m.redisVersion} ` +
      `(${redisLabel === 'private' ? `a redis-server of its own at ${redisUrl}` : redisLabel}), load average ${m.loadAverageAtStart.toFixed(2)}`,
  );

  let failed = 0;
  for (const scenario of selected) {
    if (interrupted) break;
    console.log(`\n== ${scenario.title} (${scenario.id})`);
    const scenarioCleanups = cleanups.length;
    const ctx: BenchContext = {
      quick: flags.quick,
      redisUrl,
      redis,
      progress,
      defer: (cleanup) => void cleanups.push(cleanup),
      output: { parameters: {}, figures: [], notes: [] },
    };
    const started = Date.now();
    const result: ScenarioResult = {
      id: scenario.id,
      title: scenario.title,
      measuredAt: new Date().toISOString(),
      durationMs: 0,
      parameters: {},
      figures: [],
      notes: [],
    };
    try {
      const output = await scenario.run(ctx);
      Object.assign(result, { parameters: output.parameters, figures: output.figures, notes: output.notes ?? [] });
    } catch (err) {
      failed += 1;
      Object.assign(result, { parameters: ctx.output.parameters, figures: ctx.output.figures, notes: ctx.output.notes });
      result.error = (err as Error).stack ?? String(err);
      console.error(`scenario ${scenario.id} failed: ${result.error}`);
    } finally {
      // This scenario's clean-ups, newest first; the runner's own stay for the end.
      const own = cleanups.splice(scenarioCleanups);
      for (const cleanup of own.reverse()) {
        try {
          await cleanup();
        } catch (err) {
          console.error(`clean-up failed: ${(err as Error).message}`);
        }
      }
    }
    result.durationMs = Date.now() - started;
    results.scenarios.push(result);
    if (result.figures.length > 0) console.log(textTable(result));
    for (const note of result.notes) console.log(`note: ${note}`);
    console.log(`(${(result.durationMs / 1000).toFixed(1)} s)`);
  }

  results.wallTimeMs = Date.now() - startedAt.getTime();
  await runCleanups();
  if (interrupted) return 130;
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwrote ${outFile}; wall time ${(results.wallTimeMs / 1000).toFixed(0)} s`);
  if (outFile === RESULTS && !only && !flags.quick) writeReadme(results);
  const unmet = results.scenarios.flatMap((s) => s.figures.filter((f) => f.met === false).map((f) => `${s.title}: ${f.name}`));
  if (unmet.length > 0) console.log(`targets not met: ${unmet.join('; ')}`);
  return failed > 0 ? 1 : 0;
}

main()
  .then((code) => process.exit(code))
  .catch(async (err) => {
    console.error(err);
    await runCleanups();
    process.exit(1);
  });
