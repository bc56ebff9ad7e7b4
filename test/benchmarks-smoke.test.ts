import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { renderSvg } from '../benchmarks/lib/render.js';
import type { BenchResults } from '../benchmarks/lib/results.js';
import { interleave, median, pairedRatio, quantile } from '../benchmarks/lib/stats.js';

const run = promisify(execFile);

test('given noisy samples, the median and p95 ignore a single outlier', () => {
  const samples = [10, 11, 9, 10, 500];
  assert.equal(median(samples), 10);
  assert.equal(quantile([1, 2, 3, 4, 5], 0.95), 4.8);
});

test('given per-round results, the ratio pairs rounds so a slow round hits both sides', () => {
  // Round 2 ran on a machine twice as slow for both variants.
  const candidate = [90, 45, 91];
  const baseline = [100, 50, 100];
  assert.equal(pairedRatio(candidate, baseline), 0.9);
});

test('given three variants, interleaved rounds alternate their order', async () => {
  const order: string[] = [];
  const results = await interleave(2, ['a', 'b', 'c'] as const, async (variant, round) => {
    order.push(`${variant}${round}`);
    return round;
  });
  assert.deepEqual(order, ['a0', 'b0', 'c0', 'c1', 'b1', 'a1']);
  assert.deepEqual(results.b, [0, 1]);
});

test('given a missed target, the chart draws that bar as missed and escapes labels', () => {
  const svg = renderSvg(
    [
      {
        title: 'Throughput <ratio>',
        target: 0.97,
        higherIsBetter: true,
        bars: [
          { label: 'fast & fine', ratio: 1.01 },
          { label: 'slow', ratio: 0.5 },
        ],
      },
    ],
    'caption',
  );
  assert.match(svg, /^<svg /);
  assert.match(svg, /Throughput &lt;ratio&gt;/);
  assert.match(svg, /fast &amp; fine/);
  assert.equal(svg.match(/class="met"/g)?.length, 1);
  assert.equal(svg.match(/class="missed"/g)?.length, 1);
});

test('given the local stack, the quick benchmark run measures every suite and writes its results', async () => {
  const out = await mkdtemp(join(tmpdir(), 'pg-ra-tls-bench-'));
  try {
    const script = fileURLToPath(new URL('../benchmarks/run.ts', import.meta.url));
    await run(process.execPath, ['--import', 'tsx', script, '--quick', '--out', out], {
      timeout: 170_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    const results = JSON.parse(await readFile(join(out, 'latest.json'), 'utf8')) as BenchResults;
    assert.deepEqual(results.errors, []);
    assert.deepEqual(results.sections.map((section) => section.id).sort(), [
      'checkout',
      'connect',
      'import',
      'memory',
      'scaling',
      'throughput',
      'verification',
    ]);
    for (const section of results.sections) {
      for (const row of section.rows) {
        assert.ok(Number.isFinite(row.median), `${row.id} has no figure`);
      }
    }
    assert.ok(results.targets.length >= 5);
    assert.match(await readFile(join(out, 'chart.svg'), 'utf8'), /<svg /);
    assert.match(await readFile(join(out, 'latest.md'), 'utf8'), /## Targets/);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
