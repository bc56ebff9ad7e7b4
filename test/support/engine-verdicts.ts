/**
 * Alters what an engine thread answers, where the verifier receives it: the
 * engines still run on the real quote in their threads; only their real
 * verdict is passed through `alter` (a disagreement, a one-sided refusal).
 * Restored when the test ends.
 */
import { mock, type TestContext } from 'node:test';
import { ThreadedEngine } from '../../src/verification/engines/engine-worker.js';

type Verdict = Awaited<ReturnType<ThreadedEngine['verify']>>;

export function alterEngineVerdicts(
  t: TestContext,
  alter: (engine: ThreadedEngine['name'], verdict: Verdict) => Verdict,
): void {
  const original = ThreadedEngine.prototype.verify;
  t.after(() => mock.restoreAll());
  mock.method(
    ThreadedEngine.prototype,
    'verify',
    async function (this: ThreadedEngine, ...args: Parameters<ThreadedEngine['verify']>) {
      return alter(this.name, await original.apply(this, args));
    },
  );
}
