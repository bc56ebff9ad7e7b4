/**
 * sharedCertificates (src/connection/shared-certificates.ts): one copy of a
 * server certificate and its issuers per process, never a mix of two chains.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sharedCertificates } from '../src/connection/shared-certificates.js';

const bytes = (...values: number[]) => Uint8Array.from(values);

describe('sharedCertificates', () => {
  test('the first holder’s bytes become the copy; its issuers are a frozen copy of the list', () => {
    const der = bytes(1, 2, 3);
    const issuers = [bytes(9), bytes(8)];
    const shared = sharedCertificates('first', der, issuers);
    assert.equal(shared.der, der);
    assert.notEqual(shared.issuers, issuers, 'a copy: the caller’s array may change');
    assert.ok(Object.isFrozen(shared.issuers));
    assert.deepEqual(shared.issuers, issuers);
    issuers.pop();
    assert.equal(shared.issuers.length, 2);
  });

  test('a later holder of the same certificate and chain gets the first copies', () => {
    const first = sharedCertificates('same', bytes(1, 2, 3), [bytes(9), bytes(8)]);
    const later = sharedCertificates('same', bytes(1, 2, 3), [bytes(9), bytes(8)]);
    assert.equal(later.der, first.der);
    assert.equal(later.issuers, first.issuers);
  });

  test('a certificate without issuers shares an empty chain', () => {
    const first = sharedCertificates('bare', bytes(4), []);
    const later = sharedCertificates('bare', bytes(4), []);
    assert.equal(later.der, first.der);
    assert.equal(later.issuers, first.issuers);
    assert.deepEqual(later.issuers, []);
  });

  for (const [name, given] of [
    ['one issuer more', [bytes(9), bytes(8), bytes(7)]],
    ['one issuer less', [bytes(9)]],
    ['no issuers', []],
    ['another last issuer', [bytes(9), bytes(6)]],
    ['another first issuer', [bytes(6), bytes(8)]],
  ] as const) {
    test(`another chain (${name}) is kept as given, the leaf still shared`, () => {
      const fingerprint = `chain ${name}`;
      const first = sharedCertificates(fingerprint, bytes(1, 2, 3), [bytes(9), bytes(8)]);
      const later = sharedCertificates(fingerprint, bytes(1, 2, 3), given);
      assert.equal(later.der, first.der);
      assert.equal(later.issuers, given);
      // The first chain stays the shared one.
      const third = sharedCertificates(fingerprint, bytes(1, 2, 3), [bytes(9), bytes(8)]);
      assert.equal(third.issuers, first.issuers);
    });
  }

  test('certificates of different fingerprints do not share', () => {
    const a = sharedCertificates('fp a', bytes(1), []);
    const b = sharedCertificates('fp b', bytes(1), []);
    assert.notEqual(b.der, a.der);
  });
});
