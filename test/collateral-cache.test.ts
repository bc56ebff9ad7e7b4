/**
 * CollateralCache bookkeeping (docs/protocol.md §3) on the real fixture
 * collateral, with a source in process whose fetches the test settles: which
 * fetch a caller joins once an earlier one was detached, and what clear() forgets.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import {
  type Collateral,
  collateralWindow,
  type NormalizedCollateral,
  normalizeCollateral,
} from '../src/verification/collateral.js';
import { CollateralCache, type CollateralSource } from '../src/verification/collateral-cache.js';
import { readPckInfo } from '../src/verification/pck-info.js';

const FIXTURES = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURES)));
const collateral: Collateral = JSON.parse(
  readFileSync(new URL('collateral.json', FIXTURES), 'utf8'),
);
const normalized = normalizeCollateral(collateral);
const window = collateralWindow(normalized);
const pck = readPckInfo(quote);
// A time before the set's window: a fetched set is handed to its waiters but never
// served from the cache, so every later get() goes to the fetches in flight.
const BEFORE_WINDOW = window.notBefore - 1;

/** A source whose fetches stay pending until the test settles them. */
function manualSource() {
  const fetches: {
    signal: AbortSignal;
    resolve: (value: NormalizedCollateral) => void;
    reject: (error: unknown) => void;
  }[] = [];
  const source: CollateralSource = (_pck, signal) =>
    new Promise((resolve, reject) => fetches.push({ signal, resolve, reject }));
  return { fetches, source };
}

function gaveUp(error: unknown): boolean {
  return isRaTlsError(error, 'VERIFY_TIMEOUT');
}

describe('CollateralCache: fetches in flight and clear()', () => {
  it('a detached fetch that settles late leaves the newer fetch in place for later callers', async () => {
    const { fetches, source } = manualSource();
    const cache = new CollateralCache(source);
    const impatient = new AbortController();
    const first = cache.get(pck, BEFORE_WINDOW, impatient.signal);
    const patient = cache.get(pck, BEFORE_WINDOW);
    impatient.abort(new RaTlsError('VERIFY_TIMEOUT', 'gave up'));
    await assert.rejects(first, gaveUp);
    assert.equal(fetches[0]?.signal.aborted, false, 'someone still waits for it');

    const second = cache.get(pck, BEFORE_WINDOW);
    assert.equal(fetches.length, 2, 'nobody joins a fetch that outlasted a caller');
    fetches[0]?.resolve(normalized);
    assert.equal((await patient).collateral, normalized);

    const third = cache.get(pck, BEFORE_WINDOW);
    assert.equal(fetches.length, 2, 'the newer fetch is joined');
    fetches[1]?.resolve(normalized);
    assert.equal((await second).collateral, normalized);
    assert.equal((await third).collateral, normalized);
  });

  it('the last caller leaving a detached fetch aborts it, and only it', async () => {
    const { fetches, source } = manualSource();
    const cache = new CollateralCache(source);
    const one = new AbortController();
    const two = new AbortController();
    const first = cache.get(pck, BEFORE_WINDOW, one.signal);
    const alsoFirst = cache.get(pck, BEFORE_WINDOW, two.signal);
    one.abort(new RaTlsError('VERIFY_TIMEOUT', 'gave up'));
    await assert.rejects(first, gaveUp);
    const second = cache.get(pck, BEFORE_WINDOW);
    assert.equal(fetches.length, 2);

    two.abort(new RaTlsError('VERIFY_TIMEOUT', 'gave up'));
    await assert.rejects(alsoFirst, gaveUp);
    assert.equal(fetches[0]?.signal.aborted, true, 'nobody waits for the first fetch');
    assert.equal(fetches[1]?.signal.aborted, false);

    const third = cache.get(pck, BEFORE_WINDOW);
    assert.equal(fetches.length, 2, 'the newer fetch is still joined');
    fetches[1]?.resolve(normalized);
    assert.equal((await second).collateral, normalized);
    assert.equal((await third).collateral, normalized);
  });

  it('clear() forgets the cached sets: the next get() fetches', async () => {
    let fetched = 0;
    const cache = new CollateralCache(async () => {
      fetched++;
      return normalized;
    });
    await cache.get(pck, window.notBefore);
    await cache.get(pck, window.notBefore);
    assert.equal(fetched, 1);
    cache.clear();
    assert.equal((await cache.get(pck, window.notBefore)).collateral, normalized);
    assert.equal(fetched, 2);
  });
});
