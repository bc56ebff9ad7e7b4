/**
 * One asynchronous run shared by several callers (a verification, a collateral
 * fetch), each of whom may give up on its own.
 */

/** A run and how many callers wait for it now. */
export interface SharedRun<T> {
  readonly promise: Promise<T>;
  waiters: number;
}

/**
 * Waits for `run` on behalf of one caller. When the caller's `signal` aborts
 * it stops waiting at once (rejecting with the signal's reason) and
 * `abandoned(waitersLeft)` tells the owner, which decides whether the run
 * itself should stop or be forgotten (a run nobody waits for must not be
 * joined by later callers). The run's own outcome reaches every caller still
 * waiting. `run.promise` must already carry a rejection handler.
 */
export function waitForRun<T>(
  run: SharedRun<T>,
  signal: AbortSignal | undefined,
  abandoned: (waitersLeft: number) => void,
): Promise<T> {
  run.waiters++;
  return new Promise<T>((resolve, reject) => {
    let left = false;
    const leave = (): boolean => {
      if (left) return false;
      left = true;
      signal?.removeEventListener('abort', onAbort);
      run.waiters--;
      return true;
    };
    const onAbort = (): void => {
      if (!leave()) return;
      abandoned(run.waiters);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    run.promise.then(
      (value) => {
        if (leave()) resolve(value);
      },
      (error: unknown) => {
        if (leave()) reject(error);
      },
    );
  });
}
