import type { AttestationReport } from '../attest/report.js';
import { type SharedRun, waitForRun } from '../util/shared-run.js';

/** Options of {@link VerificationCache}. */
export interface VerificationCacheOptions {
  /** How long a report is reused (ms): `reattestEvery`. */
  readonly maxAgeMs: number;
  /** Clock (ms since epoch). Default `Date.now`. */
  readonly now?: () => number;
  /**
   * Which verdicts this cache shares, read at every call: caches whose scope
   * is the same string see each other's verdicts and runs in flight, process
   * wide. It must name everything a verdict depends on besides the
   * certificate: the verifier, the policy and the clock (see
   * AttestedConnector). Default: a scope of this cache's own.
   */
  readonly scope?: () => string;
}

/** The outcome of {@link VerificationCache.verify}. */
export interface CachedVerification {
  readonly report: AttestationReport;
  /** True when the report came from the cache or from a verification already in flight. */
  readonly cacheHit: boolean;
}

interface StoredVerdict {
  readonly report: AttestationReport;
  /** min(verifiedAt + the storing cache's maxAgeMs, validUntil). */
  readonly expiresAt: number;
}

/** One verification run, whose cache started it, and how many callers wait for it. */
interface Run extends SharedRun<AttestationReport> {
  promise: Promise<AttestationReport>;
  readonly owner: VerificationCache;
  readonly controller: AbortController;
}

/**
 * The process-wide verdicts: fingerprint → scope → verdict. A new pool (or
 * client) to a server this process already verified under the same verifier,
 * policy and clock reuses the verdict instead of verifying again.
 */
const verdicts = new Map<string, Map<string, StoredVerdict>>();
const inflight = new Map<string, Run>();
let ownScopes = 0;
/** Increases at every clearVerdicts(): runs started before it are not stored. */
let generation = 0;
/** Stores since the last sweep of expired verdicts. */
let storesSinceSweep = 0;
const SWEEP_EVERY = 64;

/**
 * Forgets every verdict of the process (closeSharedDefaults); runs in flight
 * still settle for their callers but are not stored.
 */
export function clearVerdicts(): void {
  verdicts.clear();
  inflight.clear();
  generation++;
}

/**
 * How much the process-wide store holds, dead entries included: the
 * fingerprints with at least one verdict, and the verdicts over all scopes.
 * For tests that hold the store's memory bound (expired verdicts leave it).
 * @internal
 */
export function storedVerdictCounts(): {
  readonly fingerprints: number;
  readonly verdicts: number;
} {
  let count = 0;
  for (const byScope of verdicts.values()) count += byScope.size;
  return { fingerprints: verdicts.size, verdicts: count };
}

/**
 * Attestation reports keyed by certificate fingerprint (SHA-256 of the DER),
 * shared process wide between caches of the same scope. A report is reused
 * while younger than `maxAgeMs` (its `verifiedAt` counts) and before its
 * evidence expires (its `validUntil`: a fresh verification would then fail,
 * e.g. COLLATERAL_EXPIRED, so a cached verdict must not outlive it), so a warm
 * connect costs one TLS handshake and no DCAP work; concurrent verifications
 * of one fingerprint share a single run. Failures are not cached; a run of
 * another cache that fails (e.g. its pool ended) is not this cache's failure,
 * which then verifies on its own.
 */
export class VerificationCache {
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #scope: () => string;

  constructor(options: VerificationCacheOptions) {
    this.#maxAgeMs = options.maxAgeMs;
    this.#now = options.now ?? Date.now;
    const own = `own:${++ownScopes}`;
    this.#scope = options.scope ?? (() => own);
  }

  /** The cached report for `fingerprint` if it is still fresh. */
  get(fingerprint: string): AttestationReport | undefined {
    return this.#lookup(fingerprint, this.#scope());
  }

  /**
   * A fresh cached report, else the in-flight run for the fingerprint, else
   * `run()` (stored on success). The scope is read once, when called: `run`
   * must judge under what that scope names. A caller whose `signal` aborts
   * stops waiting (rejecting with its reason); once no caller waits for a
   * run, the run's own signal aborts and later callers start a fresh run
   * instead of joining one that already outlasted a caller's patience (e.g.
   * behind a stalled PCCS).
   */
  verify(
    fingerprint: string,
    run: (signal: AbortSignal) => Promise<AttestationReport>,
    signal?: AbortSignal,
  ): Promise<CachedVerification> {
    return this.#verifyIn(this.#scope(), fingerprint, run, signal);
  }

  async #verifyIn(
    scope: string,
    fingerprint: string,
    run: (signal: AbortSignal) => Promise<AttestationReport>,
    signal: AbortSignal | undefined,
  ): Promise<CachedVerification> {
    signal?.throwIfAborted();
    const cached = this.#lookup(fingerprint, scope);
    if (cached !== undefined) return { report: cached, cacheHit: true };
    const key = `${scope}\n${fingerprint}`;
    const pending = inflight.get(key);
    if (pending !== undefined) {
      try {
        return { report: await wait(key, pending, signal), cacheHit: true };
      } catch (error) {
        if (pending.owner === this || signal?.aborted === true) throw error;
        // Another cache's run failed for its own reasons (its pool ended, its
        // verifyTimeout): this cache's verdict is its own to reach.
        if (inflight.get(key) === pending) inflight.delete(key);
        return this.#verifyIn(scope, fingerprint, run, signal);
      }
    }

    const started = generation;
    const flight: Run = {
      owner: this,
      controller: new AbortController(),
      waiters: 0,
      promise: undefined as never,
    };
    flight.promise = (async () => {
      try {
        const report = await run(flight.controller.signal);
        if (started === generation) this.#store(fingerprint, scope, report);
        return report;
      } finally {
        if (inflight.get(key) === flight) inflight.delete(key);
      }
    })();
    // Waiters that gave up no longer observe the run; it must not reject unhandled.
    flight.promise.catch(() => undefined);
    inflight.set(key, flight);
    return { report: await wait(key, flight, signal), cacheHit: false };
  }

  /**
   * Forgets one fingerprint in this cache's scope (e.g. after its
   * re-attestation failed), for every cache sharing that scope.
   */
  delete(fingerprint: string): void {
    const scope = this.#scope();
    const byScope = verdicts.get(fingerprint);
    byScope?.delete(scope);
    if (byScope?.size === 0) verdicts.delete(fingerprint);
    inflight.delete(`${scope}\n${fingerprint}`);
  }

  /** Number of fresh reports this cache's scope holds. */
  get size(): number {
    const scope = this.#scope();
    let count = 0;
    for (const fingerprint of verdicts.keys()) {
      if (this.#lookup(fingerprint, scope) !== undefined) count++;
    }
    return count;
  }

  #lookup(fingerprint: string, scope: string): AttestationReport | undefined {
    const byScope = verdicts.get(fingerprint);
    const stored = byScope?.get(scope);
    if (byScope === undefined || stored === undefined) return undefined;
    if (this.#now() >= stored.expiresAt) {
      byScope.delete(scope);
      if (byScope.size === 0) verdicts.delete(fingerprint);
      return undefined;
    }
    // Too old for this cache's reattestEvery, perhaps not for another's.
    return this.#now() - stored.report.verifiedAt < this.#maxAgeMs ? stored.report : undefined;
  }

  #store(fingerprint: string, scope: string, report: AttestationReport): void {
    const expiresAt = Math.min(
      report.verifiedAt + this.#maxAgeMs,
      report.validUntil ?? Number.POSITIVE_INFINITY,
    );
    // Its evidence expired (or this cache's limit passed) while it was verified.
    if (this.#now() >= expiresAt) return;
    const stored = { report, expiresAt };
    let byScope = verdicts.get(fingerprint);
    if (byScope === undefined) {
      byScope = new Map();
      verdicts.set(fingerprint, byScope);
    }
    byScope.set(scope, stored);
    if (++storesSinceSweep >= SWEEP_EVERY) this.#sweep();
  }

  /** Drops expired verdicts of every scope, so certificates seen once do not accumulate. */
  #sweep(): void {
    storesSinceSweep = 0;
    const now = this.#now();
    for (const [fingerprint, byScope] of verdicts) {
      for (const [scope, stored] of byScope) {
        if (now >= stored.expiresAt) byScope.delete(scope);
      }
      if (byScope.size === 0) verdicts.delete(fingerprint);
    }
  }
}

/**
 * Waits for `flight` on behalf of one caller; the last waiter to give up
 * aborts the run itself and removes it, so nobody joins a run nobody is
 * waiting for.
 */
function wait(
  key: string,
  flight: Run,
  signal: AbortSignal | undefined,
): Promise<AttestationReport> {
  return waitForRun(flight, signal, (waitersLeft) => {
    if (waitersLeft > 0) return;
    if (inflight.get(key) === flight) inflight.delete(key);
    flight.controller.abort(signal!.reason);
  });
}
