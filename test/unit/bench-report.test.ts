import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRoundTrips, difference } from '../../harness/bench/probe.js';
import { BENCH_END, BENCH_START, benchMarkdown, compared, percentile, withBenchSection, type BenchResults } from '../../harness/bench/report.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The benchmark's own measuring tools (harness/bench): what they count and compute has to be
// right for its figures to mean anything. The figures themselves are never asserted here.

let t: TestRedis;
beforeAll(async () => {
  t = await useTestRedis();
});
afterAll(async () => {
  await t?.cleanup();
});

describe('bench round-trip counter', () => {
  it('counts a pipeline as one round trip, whatever it carries, and a lone command as one', async () => {
    await t.redis.ping();
    const counter = countRoundTrips(t.redis);
    const before = counter.read();
    const pipeline = t.redis.pipeline();
    for (let i = 0; i < 50; i++) pipeline.set(`{${t.prefix}}:k${i}`, i);
    pipeline.eval('return 1', 0);
    await pipeline.exec();
    expect(difference(counter.read(), before)).toEqual({ roundTrips: 1, commands: 51, scripts: 1 });

    const next = counter.read();
    await t.redis.get(`{${t.prefix}}:k1`);
    await t.redis.get(`{${t.prefix}}:k2`);
    expect(difference(counter.read(), next)).toEqual({ roundTrips: 2, commands: 2, scripts: 0 });
  });
});

describe('bench report', () => {
  it('percentiles are nearest-rank', () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(50);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile(values, 100)).toBe(100);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it('a compared figure carries its ratio and whether its target is met', () => {
    const f = compared('claims/s', 30, '/s', { name: 'SET NX PX', value: 100 }, { text: 'ratio >= 0.3', met: (ratio) => ratio >= 0.3 });
    expect(f.ratio).toBeCloseTo(0.3);
    expect(f.met).toBe(true);
    expect(compared('x', 29, '/s', { name: 'y', value: 100 }, { text: '', met: (ratio) => ratio >= 0.3 }).met).toBe(false);
  });

  it('the README section names every unmet target with its reason', () => {
    const results: BenchResults = {
      command: 'npm run bench',
      quick: false,
      startedAt: '2026-01-01T00:00:00.000Z',
      wallTimeMs: 60_000,
      machine: { cores: 2, cpuModel: 'cpu', memoryGiB: 24, os: 'Linux', node: '20', redisVersion: '7.0.15', redis: 'private', loadAverageAtStart: 0 },
      scenarios: [
        {
          id: 'claim',
          title: 'Claim throughput',
          measuredAt: '2026-01-01T00:00:00.000Z',
          durationMs: 1,
          parameters: {},
          figures: [{ ...compared('claims/s', 10, '/s', { name: 'SET', value: 100 }, { text: 'ratio >= 0.3', met: (r) => r >= 0.3 }), why: 'twelve calls per claim' }],
          notes: [],
        },
      ],
    };
    const section = benchMarkdown(results);
    expect(section.startsWith(BENCH_START) && section.endsWith(BENCH_END)).toBe(true);
    expect(section).toContain('**Claim throughput, claims/s** (ratio >= 0.3): twelve calls per claim');
    expect(withBenchSection(`a\n${BENCH_START}\nold\n${BENCH_END}\nb`, section)).toBe(`a\n${section}\nb`);
  });

  it("the README's performance section is what bench/results.json generates (npm run bench -- --readme)", () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const results = JSON.parse(readFileSync(new URL('../../bench/results.json', import.meta.url), 'utf8')) as BenchResults;
    expect(readme.slice(readme.indexOf(BENCH_START), readme.indexOf(BENCH_END) + BENCH_END.length)).toBe(benchMarkdown(results));
  });
});
