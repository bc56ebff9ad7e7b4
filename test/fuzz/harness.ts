/**
 * Runs one fuzz target with fast-check and judges every case: the parser may
 * return or throw a RaTlsError whose code the target allows; anything else
 * (a TypeError, a RangeError, an allocation failure, a wrong code, a refused
 * input accepted, a case that runs away) fails the run with a reproducible
 * seed and a shrunk counterexample.
 */
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { isRaTlsError } from '../../src/errors.js';
import type { FuzzTarget } from './targets.js';

/**
 * A case slower than this is a hang (a runaway loop or a super-linear path),
 * not a slow machine: inputs are a few KiB and parse in milliseconds, but a
 * shared 2-core machine at load 40 stretched a CRL signature check past 5 s,
 * so the default leaves a wide margin. FUZZ_HANG_MS overrides it.
 */
export const HANG_MS = Number(process.env['FUZZ_HANG_MS'] ?? 60_000);

export interface FuzzStats {
  readonly target: string;
  readonly cases: number;
  /** Inputs the parser accepted. */
  readonly accepted: number;
  /** Refusals by error code. */
  readonly refused: Readonly<Record<string, number>>;
  readonly slowestMs: number;
}

export interface FuzzRunOptions {
  readonly numRuns: number;
  readonly seed?: number;
  /** Called every `progressEvery` cases (the long run's watchdog listens to it). */
  readonly onProgress?: (cases: number) => void;
  readonly progressEvery?: number;
}

/** Judges one case; returns a reason to fail, or undefined. */
async function judge<T>(
  target: FuzzTarget<T>,
  input: T,
  stats: MutableStats,
): Promise<string | undefined> {
  const started = performance.now();
  let outcome: string | undefined;
  try {
    await target.run(input);
    if (target.mustReject?.(input) === true) outcome = 'a truncated input was accepted';
    else stats.accepted++;
  } catch (error) {
    if (!isRaTlsError(error)) {
      outcome = `threw a non-RaTlsError: ${error instanceof Error ? error.stack : String(error)}`;
    } else if (!target.codes.includes(error.code)) {
      outcome = `unexpected code ${error.code}: ${error.message}`;
    } else {
      stats.refused[error.code] = (stats.refused[error.code] ?? 0) + 1;
      outcome = target.checkError?.(input, error);
    }
  }
  const elapsed = performance.now() - started;
  stats.slowestMs = Math.max(stats.slowestMs, elapsed);
  if (outcome === undefined && elapsed > HANG_MS) {
    outcome = `one case ran ${Math.round(elapsed)} ms (limit ${HANG_MS} ms): a hang`;
  }
  return outcome;
}

interface MutableStats {
  accepted: number;
  refused: Record<string, number>;
  slowestMs: number;
}

/**
 * Runs `numRuns` cases of `target`. Throws (with fast-check's seed, path and
 * shrunk counterexample) at the first bad case.
 */
export async function runFuzzTarget<T>(
  target: FuzzTarget<T>,
  options: FuzzRunOptions,
): Promise<FuzzStats> {
  const stats: MutableStats = { accepted: 0, refused: {}, slowestMs: 0 };
  let cases = 0;
  const every = options.progressEvery ?? 1000;
  // Shrinking re-runs cases; count only the first pass, so the totals are the cases run.
  let shrinking = false;
  const property = fc.asyncProperty(target.input, async (input) => {
    const scratch: MutableStats = shrinking ? { accepted: 0, refused: {}, slowestMs: 0 } : stats;
    const reason = await judge(target, input, scratch);
    if (!shrinking) {
      cases++;
      if (cases % every === 0) options.onProgress?.(cases);
    }
    if (reason !== undefined) {
      shrinking = true;
      throw new Error(`${target.name}: ${reason}`);
    }
  });
  try {
    await fc.assert(property, {
      numRuns: options.numRuns,
      ...(options.seed === undefined ? {} : { seed: options.seed }),
    });
  } catch (error) {
    // fast-check keeps the property's own error as the cause: put its reason up front.
    const cause = error instanceof Error ? error.cause : undefined;
    const reason = cause instanceof Error ? cause.message : 'see the counterexample';
    const report = error instanceof Error ? error.message : String(error);
    throw new Error(`${target.name}: ${reason}\n${report}`, { cause: error });
  }
  return { target: target.name, cases, ...stats };
}
