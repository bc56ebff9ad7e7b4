/**
 * What running a DCAP engine in its worker thread costs over calling it
 * inline, in one process, on the real Intel TDX v4 fixture with its own
 * collateral (offline):
 *
 *   node --import tsx benchmarks/engine-thread.ts [--dist] [--rounds N] [--calls N]
 *
 * `--dist` uses the built package (npm run build), which is what users run;
 * otherwise the TypeScript sources (the engine threads then load them through
 * tsx). Variants run in interleaved rounds; for each: wall time per call, CPU
 * time of the whole process per call (robust on a busy machine: preemption
 * does not count), and for threaded variants the busy time of the engine
 * threads' event loops per call (where the thread's time goes).
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Worker } from 'node:worker_threads';
import type { EngineName } from '../src/verification/engines/engine.js';
import { FIXTURE_DIR, FIXTURE_NOW } from './first-verification.js';
import { interleave, median, nowMs, quantile } from './lib/stats.js';

type Modules = {
  dcap: typeof import('../src/verification/dcap-verifier.js');
  collateral: typeof import('../src/verification/collateral.js');
  js: typeof import('../src/verification/engines/js-engine.js');
  wasm: typeof import('../src/verification/engines/wasm-engine.js');
  worker: typeof import('../src/verification/engines/engine-worker.js');
};

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}

async function load(dist: boolean): Promise<Modules> {
  const base = dist ? '../dist/src/verification/' : '../src/verification/';
  const ext = dist ? '.js' : '.ts';
  const from = <T>(path: string) => import(`${base}${path}${ext}`) as Promise<T>;
  return {
    dcap: await from('dcap-verifier'),
    collateral: await from('collateral'),
    js: await from('engines/js-engine'),
    wasm: await from('engines/wasm-engine'),
    worker: await from('engines/engine-worker'),
  };
}

/** Busy time (ms) of each engine thread's event loop so far. */
function threadBusy(workers: ReadonlyMap<EngineName, Worker>): Record<string, number> {
  const busy: Record<string, number> = {};
  for (const [engine, worker] of workers) {
    const { active } = worker.performance.eventLoopUtilization();
    busy[engine] = active;
  }
  return busy;
}

/** CPU time (ms) of each thread of this process so far (Linux; 10 ms ticks), by thread id. */
function threadCpu(): Map<string, number> {
  const cpu = new Map<string, number>();
  try {
    for (const tid of readdirSync('/proc/self/task')) {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      cpu.set(tid, (Number(fields[11]) + Number(fields[12])) * 10);
    }
  } catch {
    // Not Linux: the per-thread split is left out.
  }
  return cpu;
}

async function main(): Promise<void> {
  const dist = process.argv.includes('--dist');
  const rounds = option('--rounds', 6);
  const calls = option('--calls', 30);
  const m = await load(dist);
  const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE_DIR)));
  const rawCollateral = JSON.parse(readFileSync(new URL('collateral.json', FIXTURE_DIR), 'utf8'));
  const collateral = m.collateral.normalizeCollateral(rawCollateral, 'BAD_CONFIG');
  const seconds = FIXTURE_NOW.getTime() / 1000;

  const inlineJs = new m.js.JsEngine();
  const inlineWasm = new m.wasm.WasmEngine();
  const threadedJs = new m.worker.ThreadedEngine('js');
  const verifierJs = new m.dcap.DcapVerifier({ engine: 'js', collateral: rawCollateral });
  const verifierBoth = new m.dcap.DcapVerifier({ engine: 'both', collateral: rawCollateral });

  const variants = {
    'inline js engine': () => inlineJs.verify(quote, collateral, seconds),
    'inline wasm engine': () => inlineWasm.verify(quote, collateral, seconds),
    'inline both, one after the other': async () => {
      await inlineWasm.verify(quote, collateral, seconds);
      await inlineJs.verify(quote, collateral, seconds);
    },
    'threaded js engine': () => threadedJs.verify(quote, collateral, seconds),
    "DcapVerifier 'js'": () => verifierJs.verify(quote, { now: FIXTURE_NOW }),
    "DcapVerifier 'both'": () => verifierBoth.verify(quote, { now: FIXTURE_NOW }),
  } as const;
  type Variant = keyof typeof variants;
  const names = Object.keys(variants) as Variant[];

  // Warm every path (JIT, WASM tiers, the threads) before timing; the
  // threads that appear meanwhile are the engine threads.
  const before = threadCpu();
  for (const name of names) for (let i = 0; i < 30; i++) await variants[name]();
  const engineTids = [...threadCpu().keys()].filter((tid) => !before.has(tid));
  const mainTid = String(process.pid);

  interface Round {
    readonly wallMs: number;
    readonly cpuMs: number;
    readonly mainCpuMs: number;
    readonly engineCpuMs: number;
    readonly threadMs: Record<string, number>;
  }
  const results = await interleave(rounds, names, async (name): Promise<Round> => {
    const busyBefore = threadBusy(m.worker.engineWorkers());
    const threadsBefore = threadCpu();
    const cpuBefore = process.cpuUsage();
    const walls: number[] = [];
    for (let i = 0; i < calls; i++) {
      const callStarted = nowMs();
      await variants[name]();
      walls.push(nowMs() - callStarted);
    }
    const cpu = process.cpuUsage(cpuBefore);
    const threadsAfter = threadCpu();
    const busyAfter = threadBusy(m.worker.engineWorkers());
    const threadMs: Record<string, number> = {};
    for (const engine of Object.keys(busyAfter)) {
      const delta = busyAfter[engine]! - (busyBefore[engine] ?? 0);
      if (delta > 0.01 * calls) threadMs[engine] = delta / calls;
    }
    const spent = (tid: string) => (threadsAfter.get(tid) ?? 0) - (threadsBefore.get(tid) ?? 0);
    return {
      wallMs: median(walls),
      cpuMs: (cpu.user + cpu.system) / 1000 / calls,
      mainCpuMs: spent(mainTid) / calls,
      engineCpuMs: engineTids.reduce((sum, tid) => sum + spent(tid), 0) / calls,
      threadMs,
    };
  });

  const baseline = results['inline js engine'];
  const spread = (values: number[]) =>
    `${median(values).toFixed(1)} (${quantile(values, 0.25).toFixed(1)}–${quantile(values, 0.75).toFixed(1)})`;
  process.stdout.write(
    `${dist ? 'built package' : 'TypeScript sources under tsx'}; ${rounds} rounds × ${calls} calls; ms per verification, ` +
      'median (p25–p75) over rounds, ×ratio to inline js in the same round\n',
  );
  for (const name of names) {
    const rows = results[name];
    const wallRatio = rows.map((row, i) => row.wallMs / baseline[i]!.wallMs);
    const cpuRatio = rows.map((row, i) => row.cpuMs / baseline[i]!.cpuMs);
    const threads = [...new Set(rows.flatMap((row) => Object.keys(row.threadMs)))]
      .map(
        (engine) =>
          `${engine} loop busy ${median(rows.map((r) => r.threadMs[engine] ?? 0)).toFixed(1)}`,
      )
      .join(', ');
    process.stdout.write(
      `${name.padEnd(34)} wall ${spread(rows.map((r) => r.wallMs))} ×${median(wallRatio).toFixed(2)} | ` +
        `CPU ${spread(rows.map((r) => r.cpuMs))} ×${median(cpuRatio).toFixed(2)}: ` +
        `main ${median(rows.map((r) => r.mainCpuMs)).toFixed(1)}, engine threads ${median(rows.map((r) => r.engineCpuMs)).toFixed(1)}` +
        `${threads === '' ? '' : ` | ${threads}`}\n`,
    );
  }
  verifierJs.close();
  verifierBoth.close();
  await m.worker.stopEngineThreads();
}

await main();
