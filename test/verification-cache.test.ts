import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttestationReport } from '../src/attest/report.js';
import { closeSharedDefaults } from '../src/connection/shared-defaults.js';
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

describe('VerificationCache sharing', () => {
  it('shares verdicts between caches of one scope only', async () => {
    let clock = 1_000_000;
    const now = () => clock;
    const a = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'sharing:a' });
    const b = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'sharing:a' });
    const other = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'sharing:b' });
    const unscoped = new VerificationCache({ maxAgeMs: MINUTE, now });
    let runs = 0;
    const run = async () => {
      runs++;
      return report(clock);
    };

    await a.verify('fp', run);
    assert.equal((await b.verify('fp', run)).cacheHit, true);
    assert.equal(runs, 1);
    assert.equal((await other.verify('fp', run)).cacheHit, false);
    assert.equal((await unscoped.verify('fp', run)).cacheHit, false);
    assert.equal(runs, 3);

    // Each cache applies its own lifetime to a shared verdict too.
    const short = new VerificationCache({ maxAgeMs: 10, now, scope: () => 'sharing:a' });
    clock += 10;
    assert.equal(short.get('fp'), undefined);
    assert.notEqual(b.get('fp'), undefined);
  });

  it("does not hand a cache the failure of another cache's run: it verifies on its own", async () => {
    const clock = 1_000_000;
    const now = () => clock;
    const ending = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'sharing:race' });
    const joining = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'sharing:race' });
    let fail: (error: Error) => void = () => {};
    const first = ending.verify(
      'fp',
      () =>
        new Promise<AttestationReport>((_, reject) => {
          fail = reject;
        }),
    );
    let runs = 0;
    const second = joining.verify('fp', async () => {
      runs++;
      return report(clock);
    });
    fail(new Error('the first pool was ended'));
    await assert.rejects(first, /the first pool was ended/);
    const joined = await second;
    assert.equal(runs, 1, 'the joining cache ran its own verification');
    assert.equal(joined.cacheHit, false);
  });

  it('a cache shares the failure of its own run with its own callers', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'sharing:own' });
    let runs = 0;
    const run = async (): Promise<AttestationReport> => {
      runs++;
      await Promise.resolve();
      throw new Error('refused');
    };
    const outcomes = await Promise.allSettled([cache.verify('fp', run), cache.verify('fp', run)]);
    assert.deepEqual(
      outcomes.map((outcome) => outcome.status),
      ['rejected', 'rejected'],
    );
    assert.equal(runs, 1);
  });

  it('closeSharedDefaults forgets every verdict of the process', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'sharing:close' });
    await cache.verify('fp', async () => report(Date.now()));
    assert.notEqual(cache.get('fp'), undefined);
    closeSharedDefaults();
    assert.equal(cache.get('fp'), undefined);
  });
});

describe('VerificationCache runs nobody waits for', () => {
  /** A run that settles only when its signal aborts, recording why. */
  function hangingRun(aborted: unknown[]) {
    return (signal?: AbortSignal) =>
      new Promise<AttestationReport>((_, reject) => {
        signal?.addEventListener('abort', () => {
          aborted.push(signal.reason);
          reject(signal.reason);
        });
      });
  }

  it('aborts a run once its last waiter gives up, and the next call starts a fresh one', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE });
    const aborted: unknown[] = [];
    const first = new AbortController();
    const second = new AbortController();
    const waiting = [
      cache.verify('fp', hangingRun(aborted), first.signal),
      cache.verify('fp', hangingRun(aborted), second.signal),
    ];
    first.abort(new Error('first gave up'));
    await assert.rejects(waiting[0]!, /first gave up/);
    assert.deepEqual(aborted, [], 'another caller still waits for the run');
    second.abort(new Error('second gave up'));
    await assert.rejects(waiting[1]!, /second gave up/);
    assert.equal(aborted.length, 1, 'the run is aborted once nobody waits for it');
    // A later caller must not join the abandoned run (a stalled PCCS fetch behind it).
    let fresh = 0;
    const result = await cache.verify('fp', async () => {
      fresh++;
      return report(Date.now());
    });
    assert.equal(fresh, 1);
    assert.equal(result.cacheHit, false);
  });
});
