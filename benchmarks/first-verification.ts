/**
 * Measures the first DCAP verification of a fresh process: run as
 * `node --import tsx benchmarks/first-verification.ts <js|both|warm0|warm200|warmed>`,
 * it imports the verifier, verifies the real Intel TDX v4 fixture against its
 * own collateral (no network) at a time inside the collateral's window, and
 * prints one JSON line: import time, first call (engine loading and JIT
 * included), second call and, in the warm modes, the median of six more (this
 * process's steady state). `warm0` and `warm200` (engine 'both') start the
 * verifier's warm-up first, as creating a pool does, and verify at once or
 * 200 ms later; `warmed` verifies as soon as both engine threads report their
 * warm-up over, and also prints how long that took (wall and CPU).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

/** One fresh process's timings, ms. */
export interface FirstVerification {
  readonly engine: string;
  /** Importing the built package (the engines load in their threads). */
  readonly importMs: number;
  /** Constructing the verifier and the first verify() call. */
  readonly firstMs: number;
  readonly secondMs: number;
  /** Median of 6 verifications after the second (warm modes only): this process's steady state. */
  readonly steadyMs?: number;
  /** `warmed` only: from warmUp() to both engine threads' warm-up being over. */
  readonly warmUpMs?: number;
  /** `warmed` only: CPU time of the whole process (all threads) over that time. */
  readonly warmUpCpuMs?: number;
}

/** Inside the intel-tdx-v4 collateral's validity window (test/fixtures/README.md). */
export const FIXTURE_NOW = new Date(1751328000 * 1000);
/** The fixture directory every verification benchmark uses. */
export const FIXTURE_DIR = new URL('../test/fixtures/intel-tdx-v4/', import.meta.url);

async function main(engine: string): Promise<void> {
  const modes = ['js', 'both', 'warm0', 'warm200', 'warmed'];
  if (!modes.includes(engine)) {
    throw new Error(`usage: first-verification.ts <${modes.join('|')}>, got ${engine}`);
  }
  const warmUpDelay =
    engine === 'warm0' ? 0 : engine === 'warm200' ? 200 : engine === 'warmed' ? -1 : undefined;
  const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE_DIR)));
  const collateral = JSON.parse(readFileSync(new URL('collateral.json', FIXTURE_DIR), 'utf8'));
  const importStarted = performance.now();
  // The built package as users get it (npm run bench builds it: the bundle, whose
  // engine threads start from dist/bundle/engine-thread.js): under tsx, each engine
  // thread would compile the TypeScript sources itself, which a user never pays.
  // The 'warmed' mode asks the threads when their warm-up is over, which only the
  // module that started them can: it loads tsc's unbundled build (its import time
  // is not what that mode measures).
  const bundled = warmUpDelay === undefined || warmUpDelay >= 0;
  const built = bundled ? '../dist/bundle/index.js' : '../dist/src/verification/dcap-verifier.js';
  const { DcapVerifier } = (await import(built)) as typeof import('../src/index.js');
  const threads = '../dist/src/verification/engines/engine-worker.js';
  const { engineThreadStatus } = bundled
    ? { engineThreadStatus: undefined }
    : ((await import(threads)) as typeof import('../src/verification/engines/engine-worker.js'));
  const importMs = performance.now() - importStarted;
  let warmUp: Pick<FirstVerification, 'warmUpMs' | 'warmUpCpuMs'> = {};
  let firstStarted = performance.now();
  const verifier = new DcapVerifier({
    engine: warmUpDelay === undefined ? (engine as 'js' | 'both') : 'both',
    collateral,
  });
  if (warmUpDelay !== undefined) {
    // What creating a pool does; the query comes warmUpDelay ms later.
    const cpuBefore = process.cpuUsage();
    void verifier.warmUp();
    if (warmUpDelay >= 0) await new Promise((resolve) => setTimeout(resolve, warmUpDelay));
    else {
      await Promise.all(
        (['js', 'wasm'] as const).map((name) => engineThreadStatus!(name, { afterWarmUp: true })),
      );
      const cpu = process.cpuUsage(cpuBefore);
      warmUp = {
        warmUpMs: performance.now() - firstStarted,
        warmUpCpuMs: (cpu.user + cpu.system) / 1000,
      };
    }
    firstStarted = performance.now();
  }
  await verifier.verify(quote, { now: FIXTURE_NOW });
  const firstMs = performance.now() - firstStarted;
  const secondStarted = performance.now();
  await verifier.verify(quote, { now: FIXTURE_NOW });
  const secondMs = performance.now() - secondStarted;
  const later: number[] = [];
  for (let i = 0; warmUpDelay !== undefined && i < 6; i++) {
    const started = performance.now();
    await verifier.verify(quote, { now: FIXTURE_NOW });
    later.push(performance.now() - started);
  }
  later.sort((a, b) => a - b);
  const result: FirstVerification = {
    engine,
    importMs,
    firstMs,
    secondMs,
    ...(later.length === 0 ? {} : { steadyMs: (later[2]! + later[3]!) / 2 }),
    ...warmUp,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv[2] ?? '').catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
