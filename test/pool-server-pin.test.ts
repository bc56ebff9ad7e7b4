/**
 * ServerPin's cluster and multi-host rules, pg-free: a cluster pool moves its
 * pin to a verified new leader in either mode; a multi-host pool pins nothing
 * (every host has its own certificate).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttestationReport } from '../src/attest/report.js';
import { RaTlsError } from '../src/errors.js';
import { type ServerChangeMode, ServerPin } from '../src/pool/server-pin.js';

// Only the fields the pin reads; the rest of a report is not its business.
const report = (fingerprint: string, verifiedAt = 1000) =>
  ({ fingerprint, verifiedAt }) as unknown as AttestationReport;

const pin = (mode: ServerChangeMode, unpinned = false) =>
  new ServerPin({
    mode,
    description: 'db:5433',
    reattestEveryMs: 60_000,
    now: () => 1000,
    policyVersion: () => 0,
    unpinned,
  });

describe('ServerPin.follow: a cluster moves to a verified new leader', () => {
  for (const mode of ['reverify', 'reject'] as const) {
    test(`${mode}: the new leader is pinned and connections to the old one are superseded`, () => {
      const subject = pin(mode);
      const old = report('aa'.repeat(32));
      assert.deepEqual(subject.admit(old), { ok: true });
      const connection = { attestation: old };
      subject.stamp(connection, 0);
      assert.equal(subject.freshness(connection), 'fresh');
      const leader = report('bb'.repeat(32));
      assert.equal(subject.follow(leader), old);
      assert.equal(subject.pinned, leader);
      assert.equal(subject.refusal, undefined, 'a failover is not a refused server change');
      assert.equal(subject.freshness(connection), 'superseded');
      assert.deepEqual(subject.admit(report('bb'.repeat(32), 2000)), { ok: true });
    });
  }

  test('an ended pool does not move', () => {
    const subject = pin('reverify');
    const old = report('aa'.repeat(32));
    subject.admit(old);
    subject.close(new RaTlsError('POOL_ENDED', 'the pool was ended'));
    assert.equal(subject.follow(report('bb'.repeat(32))), undefined);
    assert.equal(subject.pinned, old);
  });
});

describe('ServerPin unpinned: each host of a multi-host string stands on its own', () => {
  test('reports of different certificates are all admitted and none is pinned', () => {
    const subject = pin('reject', true);
    const first = report('aa'.repeat(32));
    const second = report('bb'.repeat(32));
    assert.deepEqual(subject.admit(first), { ok: true });
    assert.deepEqual(subject.admit(second), { ok: true });
    assert.equal(subject.pinned, undefined);
    assert.equal(subject.refusal, undefined);
    const connection = { attestation: first };
    subject.stamp(connection, 0);
    assert.equal(subject.freshness(connection), 'fresh');
  });
});
