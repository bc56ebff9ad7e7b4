/**
 * Alters what an engine thread answers, where the verifier receives it: the
 * engines still run on the real quote in their threads; only their real
 * verdict is passed through `alter` (a disagreement, a one-sided refusal).
 * Restored when the test ends.
 */
import { mock, type TestContext } from 'node:test';
import { ThreadedEngine } from '../../src/verification/engines/engine-worker.js';

type Verdict = Awaited<ReturnType<ThreadedEngine['verify']>>;
type Settle = (
  engine: ThreadedEngine['name'],
  outcome: { verdict: Verdict } | { error: unknown },
) => Verdict;

function settleEngines(t: TestContext, settle: Settle): void {
  const original = ThreadedEngine.prototype.verify;
  t.after(() => mock.restoreAll());
  mock.method(
    ThreadedEngine.prototype,
    'verify',
    async function (this: ThreadedEngine, ...args: Parameters<ThreadedEngine['verify']>) {
      let verdict: Verdict;
      try {
        verdict = await original.apply(this, args);
      } catch (error) {
        return settle(this.name, { error });
      }
      return settle(this.name, { verdict });
    },
  );
}

export function alterEngineVerdicts(
  t: TestContext,
  alter: (engine: ThreadedEngine['name'], verdict: Verdict) => Verdict,
): void {
  settleEngines(t, (engine, outcome) => {
    if ('error' in outcome) throw outcome.error;
    return alter(engine, outcome.verdict);
  });
}

/**
 * Turns each engine's real refusal into what `settle` returns (for a quote no
 * engine accepts here, e.g. the v5 fixture); an engine that accepts fails the test.
 */
export function settleEngineRefusals(
  t: TestContext,
  settle: (engine: ThreadedEngine['name'], error: unknown) => Verdict,
): void {
  settleEngines(t, (engine, outcome) => {
    if ('verdict' in outcome) throw new Error(`the ${engine} engine was expected to refuse`);
    return settle(engine, outcome.error);
  });
}
