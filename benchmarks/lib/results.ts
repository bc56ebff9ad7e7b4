/** The shape of a benchmark run's results (benchmarks/results/latest.json). */

/** Units a figure is reported in. */
export type Unit = 'ms' | 'µs' | 'q/s' | 'conn/s' | 'KiB';

/** One measured figure. */
export interface Row {
  /** Stable id, e.g. `connect.raTlsWarm`. */
  readonly id: string;
  /** What was measured, for people. */
  readonly label: string;
  readonly unit: Unit;
  /** Median (of samples, or of per-round results). */
  readonly median: number;
  /** 95th percentile of all samples, where there are samples. */
  readonly p95?: number;
  /** Ratio to {@link ratioTo}, paired per round (higher = more of `unit`). */
  readonly ratio?: number;
  /** p25 and p75 of the per-round ratios: the spread a target is judged from. */
  readonly ratioP25?: number;
  readonly ratioP75?: number;
  /** Label of the baseline the ratio is taken against. */
  readonly ratioTo?: string;
  /** p25 and p75 of the per-round values behind `median`, where a target is judged on it. */
  readonly spreadP25?: number;
  readonly spreadP75?: number;
  /** Samples (or rounds) behind the median. */
  readonly samples: number;
  readonly note?: string;
}

/** A group of rows, one per table in the Markdown. */
export interface Section {
  readonly id: string;
  readonly title: string;
  /** What the rows mean and how they were measured. */
  readonly method: string;
  readonly rows: Row[];
}

/** A target from the issue, checked (never asserted) against this run. */
export interface TargetResult {
  readonly id: string;
  readonly description: string;
  /** `≤ 1.2×`, `≥ 0.97×`, `< 50 µs`, ... */
  readonly target: string;
  readonly measured: number;
  /** p25–p75 of the per-round values behind `measured`, where there are rounds. */
  readonly spread?: readonly [number, number];
  readonly unit: string;
  /** True only when the verdict is `met`. */
  readonly met: boolean;
  /**
   * Judged from the spread where there is one: met when all of p25–p75 meets
   * the target, missed when none does, inconclusive otherwise.
   */
  readonly verdict: 'met' | 'missed' | 'inconclusive';
}

/** One ratio bar of the chart. */
export interface ChartBar {
  readonly label: string;
  readonly ratio: number;
  /** False for context bars that no target applies to: drawn grey. Default true. */
  readonly judged?: boolean;
}

/** One panel of the chart: bars against a target line. */
export interface ChartPanel {
  readonly title: string;
  /** The target ratio, drawn as a line. */
  readonly target: number;
  /** True when a bar at or above the target line meets it (throughput). */
  readonly higherIsBetter: boolean;
  readonly bars: ChartBar[];
}

/** Everything one run measured, and where. */
export interface BenchResults {
  readonly mode: 'quick' | 'full';
  readonly startedAt: string;
  readonly durationSeconds: number;
  readonly machine: {
    readonly cpu: string;
    readonly cores: number;
    readonly memoryGiB: number;
    readonly os: string;
    /** 1-minute load average at the start and the end of the run (0 where unknown). */
    readonly loadAverage?: { readonly start: number; readonly end: number };
  };
  readonly versions: Record<string, string>;
  readonly settings: Record<string, unknown>;
  readonly sections: Section[];
  readonly targets: TargetResult[];
  readonly chart: ChartPanel[];
  /** Suites that crashed (the run still reports the others). */
  readonly errors: string[];
  /** Set by `--only`: the suites this run measured; the other sections are an earlier run's. */
  readonly partial?: readonly string[];
}
