import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { parseDuration } from '../src/util/duration.js';

describe('RaTlsError', () => {
  test('carries a stable code, details and cause', () => {
    const cause = new Error('inner');
    const error = new RaTlsError('PUBKEY_MISMATCH', 'quote does not bind the key', {
      cause,
      details: { fingerprint: 'ab' },
    });
    assert.equal(error.code, 'PUBKEY_MISMATCH');
    assert.equal(error.cause, cause);
    assert.deepEqual(error.details, { fingerprint: 'ab' });
    assert.ok(isRaTlsError(error, 'PUBKEY_MISMATCH'));
    assert.ok(!isRaTlsError(error, 'NOT_TDX'));
  });

  test('instanceof works for an error branded by another copy of the package', () => {
    const foreign = Object.assign(new Error('x'), { [Symbol.for('pg-ra-tls.error')]: true });
    assert.ok(foreign instanceof RaTlsError);
    assert.ok(!(new Error('plain') instanceof RaTlsError));
  });
});

describe('parseDuration', () => {
  test('reads numbers and unit strings', () => {
    assert.equal(parseDuration(250, 'x'), 250);
    assert.equal(parseDuration('250ms', 'x'), 250);
    assert.equal(parseDuration('30s', 'x'), 30_000);
    assert.equal(parseDuration('5m', 'x'), 300_000);
    assert.equal(parseDuration(' 1h ', 'x'), 3_600_000);
  });

  test('rejects nonsense with BAD_CONFIG naming the option', () => {
    for (const bad of ['5 minutes', '-1s', '', 'm', Number.NaN, -5]) {
      assert.throws(
        () => parseDuration(bad as never, 'reattestEvery'),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CONFIG') && /reattestEvery/.test(error.message),
      );
    }
  });
});
