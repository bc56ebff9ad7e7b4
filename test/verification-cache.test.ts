import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttestationReport } from '../src/attest/report.js';
import { closeSharedDefaults } from '../src/connection/shared-defaults.js';
import {
  clearVerdicts,
  storedVerdictCounts,
  VerificationCache,
} from '../src/connection/verification-cache.js';

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

  it('a verdict shared between caches lives no longer than the storing cache allows', async () => {
    let clock = 1_000_000;
    const scope = () => 'shared scope';
    const short = new VerificationCache({ maxAgeMs: MINUTE, now: () => clock, scope });
    const long = new VerificationCache({ maxAgeMs: 10 * MINUTE, now: () => clock, scope });
    await short.verify('fp', async () => report(clock, clock + 60 * MINUTE));
    assert.notEqual(long.get('fp'), undefined, 'the other cache reuses it while it is fresh');
    clock += 2 * MINUTE;
    // Within the reader's 10 minutes, past the 1 minute it was stored for.
    assert.equal(long.get('fp'), undefined);
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
    const held = storedVerdictCounts().verdicts;
    const result = await cache.verify('fp', async () => {
      const made = report(clock, clock + 10);
      clock += 10;
      return made;
    });

    assert.equal(result.cacheHit, false);
    assert.equal(cache.size, 0);
    assert.equal(storedVerdictCounts().verdicts, held, 'not even held until the next sweep');
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

describe('VerificationCache callers and their signals', () => {
  it('a caller whose signal has already aborted gets its reason, even for a cached verdict', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE });
    await cache.verify('fp', async () => report(Date.now()));
    const gaveUp = new AbortController();
    gaveUp.abort(new Error('caller gave up'));
    let runs = 0;
    await assert.rejects(
      cache.verify(
        'fp',
        async () => {
          runs++;
          return report(Date.now());
        },
        gaveUp.signal,
      ),
      /caller gave up/,
    );
    assert.equal(runs, 0);
  });

  it("a caller of another cache who gives up leaves that cache's run in flight for the rest", async () => {
    const owner = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'signals:join' });
    const joining = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'signals:join' });
    let finish: (report: AttestationReport) => void = () => {};
    let runs = 0;
    const run = () => {
      runs++;
      return new Promise<AttestationReport>((resolve) => {
        finish = resolve;
      });
    };
    const first = owner.verify('fp', run);
    const impatient = new AbortController();
    const second = joining.verify('fp', run, impatient.signal);
    impatient.abort(new Error('second caller gave up'));
    await assert.rejects(second, /second caller gave up/);
    // A third caller still joins the first run instead of starting another.
    const third = joining.verify('fp', run);
    finish(report(Date.now()));
    assert.equal((await first).cacheHit, false);
    assert.equal((await third).cacheHit, true);
    assert.equal(runs, 1);
  });

  it('the abandoned run is aborted with the last waiter’s reason', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE });
    const reasons: unknown[] = [];
    const gaveUp = new AbortController();
    const waiting = cache.verify(
      'fp',
      (signal) =>
        new Promise<AttestationReport>((_, reject) => {
          signal.addEventListener('abort', () => {
            reasons.push(signal.reason);
            reject(signal.reason);
          });
        }),
      gaveUp.signal,
    );
    const reason = new Error('the only caller gave up');
    gaveUp.abort(reason);
    await assert.rejects(waiting, /the only caller gave up/);
    assert.deepEqual(reasons, [reason]);
  });
});

describe('VerificationCache.delete and size', () => {
  it('delete forgets the verdict for every cache of the scope, and only that fingerprint', async () => {
    const a = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'delete:a' });
    const b = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'delete:a' });
    const other = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'delete:other' });
    await a.verify('fp', async () => report(Date.now()));
    await a.verify('fp2', async () => report(Date.now()));
    await other.verify('fp', async () => report(Date.now()));
    assert.equal(b.size, 2);
    b.delete('fp');
    assert.equal(a.get('fp'), undefined);
    assert.notEqual(a.get('fp2'), undefined);
    assert.notEqual(other.get('fp'), undefined, 'another scope keeps its verdict');
    assert.equal(a.size, 1);
    a.delete('fp2');
    assert.equal(a.size, 0);
    assert.equal(other.size, 1);
  });

  it('delete drops a run in flight: the next caller verifies afresh', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE });
    let finish: (report: AttestationReport) => void = () => {};
    const first = cache.verify(
      'fp',
      () =>
        new Promise<AttestationReport>((resolve) => {
          finish = resolve;
        }),
    );
    cache.delete('fp');
    let runs = 0;
    const second = await cache.verify('fp', async () => {
      runs++;
      return report(Date.now());
    });
    assert.equal(runs, 1);
    assert.equal(second.cacheHit, false);
    finish(report(Date.now()));
    await first;
  });

  it('size counts only verdicts still fresh for this cache', async () => {
    let clock = 1_000_000;
    const cache = new VerificationCache({
      maxAgeMs: MINUTE,
      now: () => clock,
      scope: () => 'size',
    });
    await cache.verify('old', async () => report(clock));
    clock += MINUTE / 2;
    await cache.verify('new', async () => report(clock));
    assert.equal(cache.size, 2);
    clock += MINUTE / 2;
    assert.equal(cache.size, 1);
  });

  it('a run in flight when every verdict is forgotten still answers but is not stored', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'cleared' });
    let finish: (report: AttestationReport) => void = () => {};
    const pending = cache.verify(
      'fp',
      () =>
        new Promise<AttestationReport>((resolve) => {
          finish = resolve;
        }),
    );
    closeSharedDefaults();
    finish(report(Date.now()));
    assert.equal((await pending).cacheHit, false);
    assert.equal(cache.get('fp'), undefined);
  });
});

describe('VerificationCache memory: dead verdicts leave the process-wide store', () => {
  // Each test starts from an empty store (the store is process wide).
  const held = () => storedVerdictCounts();

  it('a verdict already dead when its run settles takes no memory', async () => {
    clearVerdicts();
    let clock = 1_000_000;
    const cache = new VerificationCache({ maxAgeMs: MINUTE, now: () => clock });
    await cache.verify('fp', async () => {
      const made = report(clock, clock + 5);
      clock += 5;
      return made;
    });
    assert.deepEqual(held(), { fingerprints: 0, verdicts: 0 });
  });

  it('an expired verdict is removed when looked up, its fingerprint with its last scope', async () => {
    clearVerdicts();
    let clock = 1_000_000;
    const now = () => clock;
    const short = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'memory:short' });
    const long = new VerificationCache({ maxAgeMs: 2 * MINUTE, now, scope: () => 'memory:long' });
    await short.verify('fp', async () => report(clock));
    await long.verify('fp', async () => report(clock));
    assert.deepEqual(held(), { fingerprints: 1, verdicts: 2 });

    clock += MINUTE;
    assert.equal(short.get('fp'), undefined);
    assert.deepEqual(held(), { fingerprints: 1, verdicts: 1 });
    assert.notEqual(long.get('fp'), undefined);

    clock += MINUTE;
    assert.equal(long.get('fp'), undefined);
    assert.deepEqual(held(), { fingerprints: 0, verdicts: 0 });
  });

  it('delete drops the fingerprint once no scope holds it', async () => {
    clearVerdicts();
    const a = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'memory:a' });
    const b = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'memory:b' });
    await a.verify('fp', async () => report(Date.now()));
    await b.verify('fp', async () => report(Date.now()));
    a.delete('fp');
    assert.deepEqual(held(), { fingerprints: 1, verdicts: 1 });
    b.delete('fp');
    assert.deepEqual(held(), { fingerprints: 0, verdicts: 0 });
  });

  it('stores sweep out verdicts that expired unseen, in every scope, at exactly their expiry', async () => {
    clearVerdicts();
    let clock = 1_000_000;
    const now = () => clock;
    const seenOnce = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'memory:once' });
    const other = new VerificationCache({ maxAgeMs: MINUTE, now, scope: () => 'memory:other' });
    // 64 certificates seen once each (e.g. a server rotating its key), never looked up again.
    for (let i = 0; i < 64; i++) await seenOnce.verify(`old-${i}`, async () => report(clock));
    await other.verify('old-0', async () => report(clock));
    assert.deepEqual(held(), { fingerprints: 64, verdicts: 65 });

    clock += MINUTE;
    // A sweep runs once every 64 stores: within the next 64 stores exactly one does.
    for (let i = 0; i < 64; i++) await seenOnce.verify(`new-${i}`, async () => report(clock));
    assert.deepEqual(held(), { fingerprints: 64, verdicts: 64 });
    for (let i = 0; i < 64; i++) assert.notEqual(seenOnce.get(`new-${i}`), undefined);
  });
});

describe('VerificationCache runs replaced or abandoned', () => {
  /**
   * Runs that settle only when the test says, ignoring their signal (a
   * stalled fetch); `settle`/`fail` end every run started so far.
   */
  function stalledRun(counter: { runs: number }) {
    const pending: { resolve(report: AttestationReport): void; reject(error: Error): void }[] = [];
    const run = () => {
      counter.runs++;
      return new Promise<AttestationReport>((resolve, reject) => {
        pending.push({ resolve, reject });
      });
    };
    return {
      run,
      settle: (value: AttestationReport) => {
        for (const each of pending.splice(0)) each.resolve(value);
      },
      fail: (error: Error) => {
        for (const each of pending.splice(0)) each.reject(error);
      },
    };
  }

  it('after another cache’s run fails, its waiters end up sharing one new run', async () => {
    const scope = () => 'replaced:joiners';
    const owner = new VerificationCache({ maxAgeMs: MINUTE, scope });
    const b = new VerificationCache({ maxAgeMs: MINUTE, scope });
    const c = new VerificationCache({ maxAgeMs: MINUTE, scope });
    let fail: (error: Error) => void = () => {};
    const first = owner.verify(
      'fp',
      () =>
        new Promise<AttestationReport>((_, reject) => {
          fail = reject;
        }),
    );
    const counter = { runs: 0 };
    const stalled = stalledRun(counter);
    const waiting = [b.verify('fp', stalled.run), c.verify('fp', stalled.run)];
    fail(new Error('the owner pool was ended'));
    await assert.rejects(first, /the owner pool was ended/);
    // Let both joiners notice the failure before the new run settles.
    await new Promise((resolve) => setImmediate(resolve));
    stalled.settle(report(Date.now()));
    const outcomes = await Promise.all(waiting);
    assert.equal(counter.runs, 1, 'the second joiner joined the first joiner’s run');
    assert.deepEqual(
      outcomes.map((outcome) => outcome.cacheHit),
      [false, true],
    );
  });

  it('a run that settles after it was dropped does not drop the run that replaced it', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'replaced:late' });
    const counter = { runs: 0 };
    const old = stalledRun(counter);
    const first = cache.verify('fp', old.run);
    cache.delete('fp');
    const current = stalledRun(counter);
    const second = cache.verify('fp', current.run);
    // It fails, so it stores nothing a later caller could reuse.
    old.fail(new Error('the dropped run failed'));
    await assert.rejects(first, /the dropped run failed/);
    // The replacing run is still the one in flight: a new caller joins it.
    const third = cache.verify('fp', current.run);
    current.settle(report(Date.now()));
    assert.equal((await second).cacheHit, false);
    assert.equal((await third).cacheHit, true);
    assert.equal(counter.runs, 2);
  });

  it('a stalled run its last caller gave up on is not joined, even before it settles', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'abandoned:stalled' });
    const counter = { runs: 0 };
    const stalled = stalledRun(counter);
    const impatient = new AbortController();
    const first = cache.verify('fp', stalled.run, impatient.signal);
    impatient.abort(new Error('gave up on the stalled run'));
    await assert.rejects(first, /gave up on the stalled run/);
    const fresh = await cache.verify('fp', async () => {
      counter.runs++;
      return report(Date.now());
    });
    assert.equal(fresh.cacheHit, false);
    assert.equal(counter.runs, 2);
    stalled.settle(report(Date.now()));
  });

  it('giving up on a dropped run leaves the run that replaced it in flight', async () => {
    const cache = new VerificationCache({ maxAgeMs: MINUTE, scope: () => 'abandoned:replaced' });
    const counter = { runs: 0 };
    const old = stalledRun(counter);
    const impatient = new AbortController();
    const first = cache.verify('fp', old.run, impatient.signal);
    cache.delete('fp');
    const current = stalledRun(counter);
    const second = cache.verify('fp', current.run);
    impatient.abort(new Error('gave up on the dropped run'));
    await assert.rejects(first, /gave up on the dropped run/);
    const third = cache.verify('fp', current.run);
    current.settle(report(Date.now()));
    assert.equal((await second).cacheHit, false);
    assert.equal((await third).cacheHit, true);
    assert.equal(counter.runs, 2);
    old.settle(report(Date.now()));
  });

  it('a verdict stored by a cache with a short reattestEvery ends there for every cache', async () => {
    let clock = 1_000_000;
    const now = () => clock;
    const scope = () => 'lifetime:storing';
    const short = new VerificationCache({ maxAgeMs: MINUTE, now, scope });
    const long = new VerificationCache({ maxAgeMs: 60 * MINUTE, now, scope });
    await short.verify('fp', async () => report(clock, clock + 24 * 60 * MINUTE));
    clock += MINUTE - 1;
    assert.notEqual(long.get('fp'), undefined);
    clock += 1;
    assert.equal(long.get('fp'), undefined, 'the storing cache’s limit holds for the longer one');
  });
});
