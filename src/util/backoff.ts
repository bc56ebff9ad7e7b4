/**
 * Jittered exponential backoff for calls to a failing service (a PCCS, the
 * guest agent): after each consecutive failure the next attempt waits longer,
 * up to a bound, with random jitter so that many clients do not retry in step.
 * Holds no timers: callers ask {@link Backoff.ready} before calling.
 */

/** Options of {@link Backoff}. */
export interface BackoffOptions {
  /** Pause after the first failure (ms); doubles per consecutive failure. */
  readonly initialMs: number;
  /** Longest pause (ms): the bound on how long recovery can go unnoticed. */
  readonly maxMs: number;
  /** Clock (ms). Default `performance.now`. */
  readonly now?: () => number;
  /** Uniform random in [0, 1). Default `Math.random`. */
  readonly random?: () => number;
}

/** Consecutive-failure backoff with "equal jitter": each pause lies in [d/2, d). */
export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #now: () => number;
  readonly #random: () => number;
  #failures = 0;
  #readyAt = 0;

  constructor(options: BackoffOptions) {
    this.#initialMs = options.initialMs;
    this.#maxMs = options.maxMs;
    this.#now = options.now ?? (() => performance.now());
    this.#random = options.random ?? Math.random;
  }

  /** True when no failure is recent enough to wait for. */
  ready(): boolean {
    return this.#failures === 0 || this.#now() >= this.#readyAt;
  }

  /** Milliseconds until {@link ready} turns true (0 when it is). */
  get remainingMs(): number {
    return this.ready() ? 0 : Math.ceil(this.#readyAt - this.#now());
  }

  /** Consecutive failures so far. */
  get failures(): number {
    return this.#failures;
  }

  /** Records a failure and starts the next (longer) pause. */
  failed(): void {
    this.#failures++;
    const ceiling = Math.min(this.#maxMs, this.#initialMs * 2 ** Math.min(this.#failures - 1, 30));
    this.#readyAt = this.#now() + ceiling / 2 + this.#random() * (ceiling / 2);
  }

  /** Records a success: the next failure starts from the initial pause again. */
  succeeded(): void {
    this.#failures = 0;
    this.#readyAt = 0;
  }
}
