import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttestationReport } from '../src/attest/report.js';
import { VerificationCache } from '../src/connection/verification-cache.js';

const MINUTE = 60_000;

/** Only the fields the cache reads matter; the rest is a frozen stand-in. */
function report(verifiedAt: number, validUntil?: number): AttestationReport {
  return Object.freeze({
    fingerprint: 'ab'.repeat(32),
    verifiedAt,
    warnings: [],
    ...(validUntil === undefined ? {} : { validUntil }),
  }) as unknown as AttestationReport;
}

describe('VerificationCache lifetime', () => {
  it('reuses a verdict until its evidence expires, even when reattestEvery is longer', async () => {
    let clock = 1_000_000;
    const cache = new VerificationCache({ maxAgeMs: 60 * MINUTE, now: () => clock });
    let runs = 0;
    const run = async () => {
      runs++;
      return report(clock, clock + 4_000);
    };

    assert.equal((await cache.verify('fp', run)).cacheHit, false);
    clock += 3_999;
    assert.equal((await cache.verify('fp', run)).cacheHit, true);
    assert.equal(runs, 1);

    // The collateral behind it expired: a fresh verification must decide.
    clock += 1;
    assert.equal(cache.get('fp'), undefined);
    assert.equal((await cache.verify('fp', run)).cacheHit, false);
    assert.equal(runs, 2);
  });

  it('still expires a verdict after maxAgeMs when its evidence lasts longer', async () => {
    let clock = 1_000_000;
    const cache = new VerificationCache({ maxAgeMs: MINUTE, now: () => clock });
    await cache.verify('fp', async () => report(clock, clock + 30 * MINUTE));

    clock += MINUTE - 1;
    assert.notEqual(cache.get('fp'), undefined);
    clock += 1;
    assert.equal(cache.get('fp'), undefined);
  });

  it('does not store a verdict whose evidence had already expired when it settled', async () => {
    let clock = 1_000_000;
    const cache = new VerificationCache({ maxAgeMs: MINUTE, now: () => clock });
    const result = await cache.verify('fp', async () => {
      const made = report(clock, clock + 10);
      clock += 10;
      return made;
    });

    assert.equal(result.cacheHit, false);
    assert.equal(cache.size, 0);
  });

  it('keeps a verdict without validUntil (e.g. a custom verifier) for maxAgeMs', async () => {
    let clock = 1_000_000;
    const cache = new VerificationCache({ maxAgeMs: MINUTE, now: () => clock });
    await cache.verify('fp', async () => report(clock));

    clock += MINUTE - 1;
    assert.equal((await cache.verify('fp', async () => report(clock))).cacheHit, true);
  });
});
