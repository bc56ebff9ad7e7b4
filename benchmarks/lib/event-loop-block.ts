/**
 * The longest event-loop block while some work runs: how long any other
 * callback of the process (a query's result, a timer) could have waited for
 * the main thread.
 *
 * A probe re-arms itself with setImmediate, so it runs once per turn of the
 * loop; the gap from the end of one run to the start of the next is the time
 * the loop spent elsewhere (our callbacks, microtasks, GC, I/O polling). Each
 * run then sleeps 0.1 ms (Atomics.wait, not counted): a probe that never
 * sleeps is a third busy thread beside the two engine threads on a 2-core
 * machine, and the scheduler takes the core from it for whole time slices
 * (3–4 ms), which a busy probe counts as blocks that no code of ours caused
 * (measured: a median of 1 ms with a p75 of 4 ms on a quiet machine, of
 * 28–45 ms at load 16, where the sleeping probe saw 0.2–3 ms).
 */
import { nowMs } from './stats.js';

const SLEEP_MS = 0.1;
const cell = new Int32Array(new SharedArrayBuffer(4));

/** Runs `work` once and resolves to the longest gap between two turns of the loop meanwhile (ms). */
export async function longestEventLoopBlock(work: () => Promise<unknown>): Promise<number> {
  let last = nowMs();
  let longest = 0;
  let running = true;
  const tick = () => {
    longest = Math.max(longest, nowMs() - last);
    if (!running) return;
    Atomics.wait(cell, 0, 0, SLEEP_MS);
    last = nowMs();
    setImmediate(tick);
  };
  setImmediate(tick);
  await work();
  running = false;
  longest = Math.max(longest, nowMs() - last);
  return longest;
}
