import { RaTlsError } from '../errors.js';

/** Builds the error for an abort whose reason is not a RaTlsError. */
export type BareAbortError = (reason: unknown) => RaTlsError;

/**
 * The one mapping from an abort reason to the error callers see: a reason that
 * is already a RaTlsError (a timeout, `end()`, a closed socket) is kept, so the
 * code says what happened; anything else (a bare `AbortController.abort()`)
 * is `bare(reason)` when given (a verifier says VERIFY_TIMEOUT: its caller
 * gave up waiting), CONNECTION_ENDED otherwise.
 */
export function abortError(reason: unknown, bare?: BareAbortError): RaTlsError {
  if (reason instanceof RaTlsError) return reason;
  return (
    bare?.(reason) ??
    new RaTlsError('CONNECTION_ENDED', 'the operation was cancelled', { cause: reason })
  );
}

/**
 * Settles with `promise`, or rejects with {@link abortError} of the signal's
 * reason (and `bare`) as soon as the signal aborts. The promise keeps running (its owner
 * must stop it through the same signal); its late rejection is swallowed.
 */
export function raceSignal<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  bare?: BareAbortError,
): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => {});
      reject(abortError(signal.reason, bare));
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * One cancellable operation: its signal aborts when any parent signal aborts,
 * when its deadline passes (with the error `onTimeout` builds), or on
 * {@link Scope.abort}. `dispose()` clears the timer and detaches from the
 * parents. Unlike `AbortSignal.any`, nothing stays attached to a long-lived
 * parent (the pool's lifetime signal) once the operation is over, so the
 * per-connection path retains nothing.
 */
export class Scope {
  readonly #controller = new AbortController();
  readonly #parents: AbortSignal[] = [];
  readonly #onParentAbort: (event: Event) => void;
  #timer: NodeJS.Timeout | undefined;
  #deadline = Number.POSITIVE_INFINITY;

  constructor(...parents: (AbortSignal | undefined)[]) {
    this.#onParentAbort = (event) => this.abort((event.target as AbortSignal).reason);
    for (const parent of parents) {
      if (parent === undefined) continue;
      if (parent.aborted) {
        this.abort(parent.reason);
        break;
      }
      parent.addEventListener('abort', this.#onParentAbort, { once: true });
      this.#parents.push(parent);
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /**
   * Aborts with `onTimeout()` after `ms` unless aborted or disposed first;
   * an earlier deadline already set stays in force.
   */
  deadline(ms: number, onTimeout: () => RaTlsError): this {
    const at = Date.now() + ms;
    if (at >= this.#deadline || this.signal.aborted) return this;
    this.#deadline = at;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.abort(onTimeout()), ms);
    return this;
  }

  /** Settles with `promise` or rejects as soon as this scope aborts. */
  race<T>(promise: Promise<T>): Promise<T> {
    return raceSignal(promise, this.signal);
  }

  abort(reason: unknown): void {
    if (!this.signal.aborted) this.#controller.abort(reason);
    this.dispose();
  }

  dispose(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const parent of this.#parents) parent.removeEventListener('abort', this.#onParentAbort);
    this.#parents.length = 0;
  }
}
