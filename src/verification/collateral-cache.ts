/**
 * Collateral kept per platform (FMSPC and PCK CA) so that a warm verification
 * makes no PCCS request (docs/protocol.md §3), refreshed often enough that a
 * revocation is seen within `maxAgeMs`, and fetched so that a stalled or
 * failing PCCS can neither hold later verifications hostage nor be hammered.
 */
import { describeCause, RaTlsError } from '../errors.js';
import { Backoff } from '../util/backoff.js';
import { type SharedRun, waitForRun } from '../util/shared-run.js';
import {
  type CollateralWindow,
  collateralWindow,
  type NormalizedCollateral,
} from './collateral.js';
import type { PckCa } from './pck-info.js';

/**
 * Where a {@link CollateralCache} gets collateral it does not hold. `signal`
 * aborts when nobody waits for the fetch any more.
 */
export type CollateralSource = (
  pck: { readonly fmspc: string; readonly ca: PckCa },
  signal: AbortSignal,
) => Promise<NormalizedCollateral>;

/** One collateral set as the cache serves it. */
export interface CachedCollateral {
  readonly collateral: NormalizedCollateral;
  readonly window: CollateralWindow;
  /**
   * Until when (ms since epoch, verification time) this set is served: its
   * earliest nextUpdate, or `maxAgeMs` after it was fetched if that is sooner.
   */
  readonly usableUntil: number;
}

/** Default {@link CollateralCacheOptions.maxAgeMs}: 24 hours. */
export const DEFAULT_COLLATERAL_MAX_AGE_MS = 24 * 3_600_000;

/** Options of {@link CollateralCache}. */
export interface CollateralCacheOptions {
  /** Longest time a fetched set is served (ms). Default 24 h. */
  readonly maxAgeMs?: number;
  /** Monotonic clock for the backoff (ms). Default `performance.now`. */
  readonly clock?: () => number;
  /** Pause after the first failed fetch (ms), doubled per failure. Default 500. */
  readonly backoffInitialMs?: number;
  /** Longest pause between fetches while the source fails (ms). Default 15 s. */
  readonly backoffMaxMs?: number;
}

interface InFlight extends SharedRun<CachedCollateral> {
  promise: Promise<CachedCollateral>;
  readonly controller: AbortController;
}

/**
 * Collateral per FMSPC (and PCK CA), served until its earliest nextUpdate or
 * `maxAgeMs` after its fetch, whichever comes first. Concurrent requests for
 * one FMSPC share one fetch; a caller that gives up (its signal aborts)
 * detaches that fetch, so later callers start a fresh one instead of joining a
 * stalled one, and a fetch nobody waits for is aborted. After a failed fetch,
 * requests fail at once with that failure for a jittered, growing pause (see
 * {@link Backoff}). Failures are never cached as collateral. Holds no timers.
 */
export class CollateralCache {
  readonly #source: CollateralSource;
  readonly #maxAgeMs: number;
  readonly #backoff: Backoff;
  readonly #entries = new Map<string, CachedCollateral>();
  readonly #inFlight = new Map<string, InFlight>();
  #lastFailure: unknown;

  constructor(source: CollateralSource, options: CollateralCacheOptions = {}) {
    this.#source = source;
    this.#maxAgeMs = options.maxAgeMs ?? DEFAULT_COLLATERAL_MAX_AGE_MS;
    this.#backoff = new Backoff({
      initialMs: options.backoffInitialMs ?? 500,
      maxMs: options.backoffMaxMs ?? 15_000,
      ...(options.clock === undefined ? {} : { now: options.clock }),
    });
  }

  /**
   * Collateral for `pck` that is usable at `now` (ms since epoch) if one is
   * cached, else freshly fetched (which the caller must still check against
   * `now`: a PCCS may serve stale collateral). Rejects with `signal.reason`
   * when `signal` aborts first.
   */
  async get(
    pck: { readonly fmspc: string; readonly ca: PckCa },
    now: number,
    signal?: AbortSignal,
  ): Promise<CachedCollateral> {
    signal?.throwIfAborted();
    const key = `${pck.ca}:${pck.fmspc.toLowerCase()}`;
    const cached = this.#entries.get(key);
    if (cached !== undefined && cached.window.notBefore <= now && now < cached.usableUntil) {
      return cached;
    }
    let flight = this.#inFlight.get(key);
    if (flight === undefined) {
      if (!this.#backoff.ready()) throw this.#backedOff();
      flight = this.#start(key, pck, now);
    }
    return this.#wait(key, flight, signal);
  }

  /** Forgets every cached collateral set (fetches in flight still settle for their callers). */
  clear(): void {
    this.#entries.clear();
  }

  /**
   * Forgets everything and aborts every fetch in flight, so no PCCS socket
   * outlives the cache; their waiters reject at once.
   */
  close(): void {
    this.#entries.clear();
    for (const flight of this.#inFlight.values()) flight.controller.abort();
    this.#inFlight.clear();
  }

  #start(key: string, pck: { readonly fmspc: string; readonly ca: PckCa }, now: number): InFlight {
    const controller = new AbortController();
    const flight: InFlight = {
      controller,
      waiters: 0,
      promise: Promise.resolve() as Promise<never>,
    };
    flight.promise = (async () => {
      try {
        const collateral = await this.#source(pck, controller.signal);
        const window = collateralWindow(collateral);
        const entry: CachedCollateral = {
          collateral,
          window,
          usableUntil: Math.min(window.nextUpdate, now + this.#maxAgeMs),
        };
        this.#entries.set(key, entry);
        this.#backoff.succeeded();
        this.#lastFailure = undefined;
        return entry;
      } catch (error) {
        // A fetch aborted because everyone gave up says nothing about the source.
        if (!controller.signal.aborted) {
          this.#lastFailure = error;
          this.#backoff.failed();
        }
        throw error;
      } finally {
        if (this.#inFlight.get(key) === flight) this.#inFlight.delete(key);
      }
    })();
    // Waiters that gave up no longer observe the promise; it must not reject unhandled.
    flight.promise.catch(() => undefined);
    this.#inFlight.set(key, flight);
    return flight;
  }

  #wait(key: string, flight: InFlight, signal: AbortSignal | undefined): Promise<CachedCollateral> {
    return waitForRun(flight, signal, (waitersLeft) => {
      // Whoever comes next must not join a fetch that already outlasted a caller's patience.
      if (this.#inFlight.get(key) === flight) this.#inFlight.delete(key);
      // (Aborting a fetch that has already settled changes nothing.)
      if (waitersLeft === 0) flight.controller.abort();
    });
  }

  #backedOff(): RaTlsError {
    const last = this.#lastFailure;
    const retryInMs = this.#backoff.remainingMs;
    const note = `not retried for another ${retryInMs} ms after ${this.#backoff.failures} consecutive failure(s)`;
    if (last instanceof RaTlsError) {
      return new RaTlsError(last.code, `${last.message} (${note})`, {
        cause: last,
        details: { ...last.details, retryInMs },
      });
    }
    return new RaTlsError(
      'COLLATERAL_UNAVAILABLE',
      `Collateral could not be fetched: ${describeCause(last)} (${note})`,
      { cause: last, details: { retryInMs } },
    );
  }
}
