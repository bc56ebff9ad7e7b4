/**
 * Statistics for noisy machines: medians and percentiles of samples, and
 * interleaved A/B rounds whose per-round ratios are paired before the median
 * is taken, so a slow phase of the machine hits baseline and candidate alike.
 */

/** The q-quantile (0..1) of `values` by linear interpolation; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const position = (sorted.length - 1) * Math.min(Math.max(q, 0), 1);
  const lower = Math.floor(position);
  const upper = Math.ceil(position);
  const low = sorted[lower]!;
  const high = sorted[upper]!;
  return low + (high - low) * (position - lower);
}

/** The median of `values`; NaN when empty. */
export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** The 95th percentile of `values`; NaN when empty. */
export function p95(values: readonly number[]): number {
  return quantile(values, 0.95);
}

/**
 * Runs `rounds` rounds over `variants`, each round in the reverse order of
 * the previous one (A B C, C B A, ...), so that neither warm-up nor a drift of
 * the machine favours whichever variant runs first. Returns each variant's
 * per-round results, in round order.
 */
export async function interleave<K extends string, T>(
  rounds: number,
  variants: readonly K[],
  run: (variant: K, round: number) => Promise<T>,
): Promise<Record<K, T[]>> {
  const results = Object.fromEntries(variants.map((variant) => [variant, [] as T[]])) as Record<
    K,
    T[]
  >;
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const variant of order) results[variant].push(await run(variant, round));
  }
  return results;
}

/** The median over rounds of candidate[i] / baseline[i] (paired per round). */
export function pairedRatio(candidate: readonly number[], baseline: readonly number[]): number {
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(candidate.length, baseline.length); i++) {
    const base = baseline[i]!;
    if (base > 0) ratios.push(candidate[i]! / base);
  }
  return median(ratios);
}

/** The per-round ratios candidate[i] / baseline[i] (rounds with a zero baseline left out). */
export function roundRatios(candidate: readonly number[], baseline: readonly number[]): number[] {
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(candidate.length, baseline.length); i++) {
    const base = baseline[i]!;
    if (base > 0) ratios.push(candidate[i]! / base);
  }
  return ratios;
}

/** A paired ratio with its spread over rounds: median and p25–p75 of the per-round ratios. */
export function ratioWithSpread(
  candidate: readonly number[],
  baseline: readonly number[],
): { ratio: number; ratioP25: number; ratioP75: number } {
  const ratios = roundRatios(candidate, baseline);
  return {
    ratio: median(ratios),
    ratioP25: quantile(ratios, 0.25),
    ratioP75: quantile(ratios, 0.75),
  };
}

/** The median over rounds of candidate[i] - baseline[i] (paired per round). */
export function pairedDifference(
  candidate: readonly number[],
  baseline: readonly number[],
): number {
  const differences: number[] = [];
  for (let i = 0; i < Math.min(candidate.length, baseline.length); i++) {
    differences.push(candidate[i]! - baseline[i]!);
  }
  return median(differences);
}

/** Milliseconds since an arbitrary origin, sub-microsecond resolution. */
export function nowMs(): number {
  return performance.now();
}
