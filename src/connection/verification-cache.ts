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

/** One verification run and how many callers wait for it. */
interface Flight {
  promise: Promise<AttestationReport>;
  readonly controller: AbortController;
  waiters: number;
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
  readonly #inflight = new Map<string, Flight>();
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

  /**
   * A fresh cached report, else the in-flight run for the fingerprint, else
   * `run()` (stored on success). A caller whose `signal` aborts stops waiting
   * (rejecting with its reason); once no caller waits for a run, the run's
   * own signal aborts and later callers start a fresh run instead of joining
   * one that already outlasted a caller's patience (e.g. behind a stalled
   * PCCS).
   */
  async verify(
    fingerprint: string,
    run: (signal: AbortSignal) => Promise<AttestationReport>,
    signal?: AbortSignal,
  ): Promise<CachedVerification> {
    signal?.throwIfAborted();
    const cached = this.get(fingerprint);
    if (cached !== undefined) return { report: cached, cacheHit: true };
    const pending = this.#inflight.get(fingerprint);
    if (pending !== undefined) {
      return { report: await this.#wait(fingerprint, pending, signal), cacheHit: true };
    }

    const generation = this.#generation;
    const controller = new AbortController();
    const flight: Flight = { controller, waiters: 0, promise: Promise.resolve() as never };
    flight.promise = (async () => {
      try {
        const report = await run(controller.signal);
        if (generation === this.#generation && this.#fresh(report)) {
          this.#reports.set(fingerprint, report);
        }
        return report;
      } finally {
        if (this.#inflight.get(fingerprint) === flight) this.#inflight.delete(fingerprint);
      }
    })();
    // Waiters that gave up no longer observe the run; it must not reject unhandled.
    flight.promise.catch(() => undefined);
    this.#inflight.set(fingerprint, flight);
    return { report: await this.#wait(fingerprint, flight, signal), cacheHit: false };
  }

  #wait(fingerprint: string, flight: Flight, signal: AbortSignal | undefined) {
    flight.waiters++;
    return new Promise<AttestationReport>((resolve, reject) => {
      let left = false;
      const leave = (): boolean => {
        if (left) return false;
        left = true;
        signal?.removeEventListener('abort', onAbort);
        flight.waiters--;
        return true;
      };
      const onAbort = (): void => {
        if (!leave()) return;
        if (flight.waiters === 0) {
          if (this.#inflight.get(fingerprint) === flight) this.#inflight.delete(fingerprint);
          flight.controller.abort(signal!.reason);
        }
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      flight.promise.then(
        (report) => {
          if (leave()) resolve(report);
        },
        (error: unknown) => {
          if (leave()) reject(error);
        },
      );
    });
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
