/**
 * Collateral kept per platform (FMSPC and PCK CA) so that a warm verification
 * makes no PCCS request (PROTOCOL.md §3).
 */
import {
  type CollateralWindow,
  collateralWindow,
  type NormalizedCollateral,
} from './collateral.js';
import type { PckCa } from './pck-info.js';

/** Where a {@link CollateralCache} gets collateral it does not hold. */
export type CollateralSource = (pck: {
  readonly fmspc: string;
  readonly ca: PckCa;
}) => Promise<NormalizedCollateral>;

interface CacheEntry {
  readonly collateral: NormalizedCollateral;
  readonly window: CollateralWindow;
}

/**
 * Collateral per FMSPC (and PCK CA), kept until its earliest nextUpdate.
 * Concurrent requests for one FMSPC share one fetch; a failed fetch is not
 * cached. Holds no timers.
 */
export class CollateralCache {
  readonly #source: CollateralSource;
  readonly #entries = new Map<string, CacheEntry>();
  readonly #inFlight = new Map<string, Promise<CacheEntry>>();

  constructor(source: CollateralSource) {
    this.#source = source;
  }

  /**
   * Collateral for `pck` that is valid at `now` (ms since epoch) if one is
   * cached, else freshly fetched (which the caller must still check against
   * `now`: a PCCS may serve stale collateral).
   */
  async get(
    pck: { readonly fmspc: string; readonly ca: PckCa },
    now: number,
  ): Promise<{ collateral: NormalizedCollateral; window: CollateralWindow }> {
    const key = `${pck.ca}:${pck.fmspc.toLowerCase()}`;
    const cached = this.#entries.get(key);
    if (cached !== undefined && cached.window.notBefore <= now && now < cached.window.nextUpdate) {
      return cached;
    }
    let pending = this.#inFlight.get(key);
    if (pending === undefined) {
      pending = this.#fetch(key, pck);
      this.#inFlight.set(key, pending);
    }
    return pending;
  }

  /** Forgets every cached collateral set. */
  clear(): void {
    this.#entries.clear();
  }

  async #fetch(
    key: string,
    pck: { readonly fmspc: string; readonly ca: PckCa },
  ): Promise<CacheEntry> {
    try {
      const collateral = await this.#source(pck);
      const entry = { collateral, window: collateralWindow(collateral) };
      this.#entries.set(key, entry);
      return entry;
    } finally {
      this.#inFlight.delete(key);
    }
  }
}
