import type { AttestationReport } from '../attest/report.js';

/** Options of {@link VerificationCache}. */
export interface VerificationCacheOptions {
  /** How long a report is reused (ms): `reattestEvery`. */
  readonly maxAgeMs: number;
  /** Clock (ms since epoch). Default `Date.now`. */
  readonly now?: () => number;
}

/** The outcome of {@link VerificationCache.verify}. */
export interface CachedVerification {
  readonly report: AttestationReport;
  /** True when the report came from the cache or from a verification already in flight. */
  readonly cacheHit: boolean;
}

/**
 * Attestation reports keyed by certificate fingerprint (SHA-256 of the DER).
 * A report is reused while younger than `maxAgeMs` (its `verifiedAt` counts)
 * and before its evidence expires (its `validUntil`: a fresh verification
 * would then fail, e.g. COLLATERAL_EXPIRED, so a cached verdict must not
 * outlive it), so a warm connect costs one TLS handshake and no DCAP work; concurrent
 * verifications of one fingerprint share a single run. Failures are not cached.
 * `clear()` (a policy change) also discards results of runs still in flight.
 */
export class VerificationCache {
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #reports = new Map<string, AttestationReport>();
  readonly #inflight = new Map<string, Promise<AttestationReport>>();
  #generation = 0;

  constructor(options: VerificationCacheOptions) {
    this.#maxAgeMs = options.maxAgeMs;
    this.#now = options.now ?? Date.now;
  }

  /** The cached report for `fingerprint` if it is still fresh. */
  get(fingerprint: string): AttestationReport | undefined {
    const report = this.#reports.get(fingerprint);
    if (report === undefined) return undefined;
    if (!this.#fresh(report)) {
      this.#reports.delete(fingerprint);
      return undefined;
    }
    return report;
  }

  /** A fresh cached report, else the in-flight run for the fingerprint, else `run()` (stored on success). */
  async verify(
    fingerprint: string,
    run: () => Promise<AttestationReport>,
  ): Promise<CachedVerification> {
    const cached = this.get(fingerprint);
    if (cached !== undefined) return { report: cached, cacheHit: true };
    const pending = this.#inflight.get(fingerprint);
    if (pending !== undefined) return { report: await pending, cacheHit: true };

    const generation = this.#generation;
    const promise = run();
    this.#inflight.set(fingerprint, promise);
    try {
      const report = await promise;
      if (generation === this.#generation && this.#fresh(report)) {
        this.#reports.set(fingerprint, report);
      }
      return { report, cacheHit: false };
    } finally {
      if (this.#inflight.get(fingerprint) === promise) this.#inflight.delete(fingerprint);
    }
  }

  /** Forgets one fingerprint (e.g. after its re-attestation failed). */
  delete(fingerprint: string): void {
    this.#reports.delete(fingerprint);
    this.#inflight.delete(fingerprint);
  }

  /** Forgets everything, including runs in flight (they still settle for their callers). */
  clear(): void {
    this.#generation++;
    this.#reports.clear();
    this.#inflight.clear();
  }

  /** Reusable until min(verifiedAt + maxAgeMs, validUntil). */
  #fresh(report: AttestationReport): boolean {
    const now = this.#now();
    if (now - report.verifiedAt >= this.#maxAgeMs) return false;
    return report.validUntil === undefined || now < report.validUntil;
  }

  /** Number of cached reports (fresh or not yet evicted). */
  get size(): number {
    return this.#reports.size;
  }
}
