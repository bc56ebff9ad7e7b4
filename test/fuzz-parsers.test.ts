/**
 * Bounded property-based fuzzing of every parser that reads untrusted input
 * (issue 10, "keep them closed"). A few hundred structured cases per parser on
 * every `npm test`, with a fixed seed so a failure reproduces; `npm run fuzz`
 * runs the same targets for ≥ 100,000 cases each with fresh seeds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runFuzzTarget } from './fuzz/harness.js';
import { FUZZ_TARGETS } from './fuzz/targets.js';

const RUNS = Number(process.env['FUZZ_BOUNDED_RUNS'] ?? 240);
const SEED = Number(process.env['FUZZ_SEED'] ?? 0x5eed);

describe('fuzz: parsers only ever refuse with their own RaTlsError codes', () => {
  for (const target of FUZZ_TARGETS) {
    const numRuns = Math.max(20, Math.round(RUNS / (target.cost ?? 1)));
    test(
      `${target.name}: ${numRuns} structured cases`,
      target.knownOpen === undefined ? {} : { todo: `known defect: ${target.knownOpen}` },
      async () => {
        const stats = await runFuzzTarget(target, { numRuns, seed: SEED });
        assert.equal(stats.cases, numRuns);
        // The generators must reach both outcomes: a run in which every case is
        // refused at the first byte (or every case passes) tests nothing deep.
        const refused = Object.values(stats.refused).reduce((a, b) => a + b, 0);
        assert.ok(refused > 0, `${target.name}: no case was refused: ${JSON.stringify(stats)}`);
        assert.ok(
          stats.accepted > 0,
          `${target.name}: no case was accepted: ${JSON.stringify(stats)}`,
        );
      },
    );
  }
});
