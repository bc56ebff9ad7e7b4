/**
 * Measures the first DCAP verification of a fresh process: run as
 * `node --import tsx benchmarks/first-verification.ts <js|both>`, it
 * imports the verifier, verifies the real Intel TDX v4 fixture against its own
 * collateral (no network) at a time inside the collateral's window, and
 * prints one JSON line: import time, first call (engine loading and JIT
 * included) and second call.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

/** One fresh process's timings, ms. */
export interface FirstVerification {
  readonly engine: string;
  /** Importing pg-ra-tls's verifier module (and both engines' JS). */
  readonly importMs: number;
  /** Constructing the verifier and the first verify() call. */
  readonly firstMs: number;
  readonly secondMs: number;
}

/** Inside the intel-tdx-v4 collateral's validity window (test/fixtures/README.md). */
export const FIXTURE_NOW = new Date(1751328000 * 1000);
/** The fixture directory every verification benchmark uses. */
export const FIXTURE_DIR = new URL('../test/fixtures/intel-tdx-v4/', import.meta.url);

async function main(engine: string): Promise<void> {
  if (engine !== 'js' && engine !== 'both') {
    throw new Error(`usage: first-verification.ts <js|both>, got ${engine}`);
  }
  const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE_DIR)));
  const collateral = JSON.parse(readFileSync(new URL('collateral.json', FIXTURE_DIR), 'utf8'));
  const importStarted = performance.now();
  const { DcapVerifier } = await import('../src/verification/dcap-verifier.js');
  const importMs = performance.now() - importStarted;
  const firstStarted = performance.now();
  const verifier = new DcapVerifier({ engine, collateral });
  await verifier.verify(quote, { now: FIXTURE_NOW });
  const firstMs = performance.now() - firstStarted;
  const secondStarted = performance.now();
  await verifier.verify(quote, { now: FIXTURE_NOW });
  const secondMs = performance.now() - secondStarted;
  const result: FirstVerification = { engine, importMs, firstMs, secondMs };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv[2] ?? '').catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
