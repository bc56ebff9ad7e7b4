/**
 * ServerPin's cluster and multi-host rules, pg-free: a cluster pool moves its
 * pin to a verified new leader in either mode; a multi-host pool pins nothing
 * (every host has its own certificate).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttestationReport } from '../src/attest/report.js';
import { RaTlsError } from '../src/errors.js';
import {
  pinHooks,
  type ServerChangeMode,
  ServerPin,
  serverChangeMode,
  serverPinFor,
} from '../src/pool/server-pin.js';

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

// The staleness rule and the two change modes, pg-free: each test names the
// behaviour a mutation of server-pin.ts broke while the suite still passed.
const A = 'aa'.repeat(32);
const B = 'bb'.repeat(32);

describe('serverChangeMode: onServerChange checked', () => {
  test("absent or null is 'reverify'; the two modes pass as given", () => {
    assert.equal(serverChangeMode(undefined), 'reverify');
    assert.equal(serverChangeMode(null), 'reverify');
    assert.equal(serverChangeMode('reverify'), 'reverify');
    assert.equal(serverChangeMode('reject'), 'reject');
  });

  for (const value of ['Reject', '', 0, false]) {
    test(`${JSON.stringify(value)} is BAD_CONFIG naming the option and the value`, () => {
      assert.throws(
        () => serverChangeMode(value),
        (error: unknown) =>
          error instanceof RaTlsError &&
          error.code === 'BAD_CONFIG' &&
          error.message ===
            `onServerChange must be 'reverify' or 'reject', got ${JSON.stringify(value)}` &&
          error.details?.option === 'onServerChange',
      );
    });
  }
});

describe('ServerPin.admit: the first verified certificate is pinned', () => {
  test('reverify: another certificate takes the pin and reports the change once', () => {
    const subject = pin('reverify');
    const first = report(A);
    assert.deepEqual(subject.admit(first), { ok: true });
    assert.equal(subject.pinned, first);
    const second = report(B, 2000);
    assert.deepEqual(subject.admit(second), {
      ok: true,
      change: { previous: first, fingerprint: B, current: second, mode: 'reverify' },
    });
    assert.equal(subject.pinned, second);
    assert.equal(subject.rejected, false);
    assert.deepEqual(subject.admit(report(B, 3000)), { ok: true }, 'the same server is no change');
  });

  test('reject: another certificate is SERVER_CHANGED for good, with one change event', () => {
    const subject = pin('reject');
    const first = report(A);
    subject.admit(first);
    const result = subject.admit(report(B));
    assert.equal(result.ok, false);
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'SERVER_CHANGED');
    assert.equal(
      result.error.message,
      `db:5433 now presents certificate ${B.slice(0, 16)}… instead of the pinned ` +
        `${A.slice(0, 16)}…: the pool pinned the first verified certificate; recreate the pool ` +
        "to accept the new one (or use onServerChange: 'reverify')",
    );
    assert.deepEqual(result.error.details, { pinned: A, presented: B });
    assert.deepEqual(result.change, { previous: first, fingerprint: B, mode: 'reject' });
    assert.equal(subject.rejected, true);
    assert.equal(subject.refusal, result.error);
    assert.equal(subject.pinned, first, 'the refused certificate is not pinned');

    // Even the pinned certificate is refused from now on, and no second event fires.
    assert.deepEqual(subject.admit(first), { ok: false, error: result.error });
    assert.deepEqual(subject.admit(report(B)), { ok: false, error: result.error });
    assert.deepEqual(subject.refuse(B), { ok: false, error: result.error });
  });

  test('an ended pool admits nothing, not even its first certificate', () => {
    const subject = pin('reverify');
    const ended = new RaTlsError('POOL_ENDED', 'the pool was ended');
    subject.close(ended);
    assert.deepEqual(subject.admit(report(A)), { ok: false, error: ended });
    assert.equal(subject.pinned, undefined);
    assert.equal(subject.rejected, false, 'ending is not refusing the server');
  });

  test('close keeps its first reason and outranks an earlier refusal', () => {
    const subject = pin('reject');
    subject.admit(report(A));
    const refused = subject.admit(report(B));
    assert.ok(!refused.ok);
    const ended = new RaTlsError('POOL_ENDED', 'the pool was ended');
    subject.close(ended);
    subject.close(new RaTlsError('CONNECTION_ENDED', 'a later reason'));
    assert.equal(subject.refusal, ended);
    assert.equal(subject.rejected, true);
  });
});

describe('ServerPin.observe: a certificate seen by a probe, not verified yet', () => {
  test('nothing pinned or the pinned certificate: same', () => {
    const subject = pin('reject');
    assert.equal(subject.observe(A), 'same');
    subject.admit(report(A));
    assert.equal(subject.observe(A), 'same');
  });

  test('reverify: another certificate is to verify, and the pin stays until it is', () => {
    const subject = pin('reverify');
    const first = report(A);
    subject.admit(first);
    assert.equal(subject.observe(B), 'verify');
    assert.equal(subject.pinned, first);
  });

  test('reject: another certificate refuses the server at once, one change event', () => {
    const subject = pin('reject');
    const first = report(A);
    subject.admit(first);
    const seen = subject.observe(B);
    assert.ok(typeof seen === 'object' && !seen.ok);
    assert.equal(seen.error.code, 'SERVER_CHANGED');
    assert.deepEqual(seen.change, { previous: first, fingerprint: B, mode: 'reject' });
    assert.deepEqual(subject.observe(A), { ok: false, error: seen.error });
  });

  test('an ended pool observes nothing', () => {
    const subject = pin('reverify');
    subject.admit(report(A));
    const ended = new RaTlsError('POOL_ENDED', 'the pool was ended');
    subject.close(ended);
    assert.deepEqual(subject.observe(B), { ok: false, error: ended });
    assert.deepEqual(subject.observe(A), { ok: false, error: ended });
  });
});

describe('ServerPin.follow and refreshed', () => {
  test('following the pinned leader again supersedes nothing; a first leader neither', () => {
    const subject = pin('reject');
    const leader = report(A);
    assert.equal(subject.follow(leader), undefined);
    assert.equal(subject.pinned, leader);
    const again = report(A, 2000);
    assert.equal(subject.follow(again), undefined);
    assert.equal(subject.pinned, again);
  });

  test('a re-attestation of the pinned certificate refreshes it, never with an older report', () => {
    const subject = pin('reverify');
    subject.admit(report(A, 1000));
    const same = report(A, 1000);
    subject.refreshed(same);
    assert.equal(subject.pinned, same, 'a report as recent as the pinned one replaces it');
    subject.refreshed(report(A, 999));
    assert.equal(subject.pinned, same, 'an older report does not');
    const newer = report(A, 5000);
    subject.admit(newer);
    assert.equal(subject.pinned, newer, 'admitting the pinned certificate refreshes it');
    subject.refreshed(report(B, 9000));
    assert.equal(subject.pinned, newer, 'another certificate is not a refresh');
  });

  test('nothing pinned: a refresh pins nothing', () => {
    const subject = pin('reverify');
    subject.refreshed(report(A));
    assert.equal(subject.pinned, undefined);
  });
});

describe('ServerPin.freshness: the staleness rule', () => {
  const clocked = (mode: ServerChangeMode = 'reverify', unpinned = false) => {
    const state = { now: 1000, policyVersion: 0 };
    const subject = new ServerPin({
      mode,
      description: 'db:5433',
      reattestEveryMs: 60_000,
      now: () => state.now,
      policyVersion: () => state.policyVersion,
      unpinned,
    });
    return { subject, state };
  };

  test('a connection without a report is stale', () => {
    const { subject } = clocked();
    assert.equal(subject.freshness({ attestation: undefined }), 'stale');
  });

  test('fresh until reattestEvery has passed since verifiedAt, stale from then on', () => {
    const { subject, state } = clocked();
    const first = report(A, 1000);
    subject.admit(first);
    const connection = { attestation: first };
    subject.stamp(connection, 0);
    state.now = 1000 + 59_999;
    assert.equal(subject.freshness(connection), 'fresh');
    state.now = 1000 + 60_000;
    assert.equal(subject.freshness(connection), 'stale');
  });

  test('judged under another policy version (or never stamped): rejudge', () => {
    const { subject, state } = clocked();
    const first = report(A, 1000);
    subject.admit(first);
    const connection = { attestation: first };
    assert.equal(subject.freshness(connection), 'rejudge', 'never stamped');
    subject.stamp(connection, 0);
    state.policyVersion = 1;
    assert.equal(subject.freshness(connection), 'rejudge');
    subject.stamp(connection, 1);
    assert.equal(subject.freshness(connection), 'fresh');
  });

  test('attested to a certificate no longer pinned: superseded, even when young', () => {
    const { subject } = clocked();
    const first = report(A, 1000);
    subject.admit(first);
    const connection = { attestation: first };
    subject.stamp(connection, 0);
    subject.admit(report(B, 1000));
    assert.equal(subject.freshness(connection), 'superseded');
  });

  test('unpinned: a connection to any certificate is judged by age and policy alone', () => {
    const { subject } = clocked('reverify', true);
    subject.admit(report(A));
    const connection = { attestation: report(B, 1000) };
    subject.stamp(connection, 0);
    assert.equal(subject.freshness(connection), 'fresh');
  });
});

describe('serverPinFor and pinHooks: the pin as a pool installs it', () => {
  test('the pin reads the connector’s clock, reattestEvery and policy version as they change', () => {
    const connector = {
      reattestEveryMs: 10_000,
      clock: 1000,
      policyVersion: 3,
      now() {
        return this.clock;
      },
    };
    const subject = serverPinFor(connector, { mode: 'reject', description: 'db:6543' });
    assert.equal(subject.mode, 'reject');
    const hooks = pinHooks(subject);
    const first = report(A, 1000);
    assert.equal(hooks.refusal(), undefined);
    assert.equal(hooks.admit(first), undefined);
    const connection = { attestation: first };
    hooks.attested(connection, { policyVersion: 3 });
    assert.equal(subject.freshness(connection), 'fresh');
    connector.policyVersion = 4;
    assert.equal(subject.freshness(connection), 'rejudge');
    hooks.attested(connection, { policyVersion: 4 });
    connector.clock = 11_000;
    assert.equal(subject.freshness(connection), 'stale');

    const refused = hooks.admit(report(B));
    assert.equal(refused?.code, 'SERVER_CHANGED');
    assert.match(refused.message, /^db:6543 now presents certificate /);
    assert.equal(hooks.refusal(), refused);
  });

  test('unpinned reaches the pin', () => {
    const connector = { reattestEveryMs: 10_000, policyVersion: 0, now: () => 1000 };
    const subject = serverPinFor(connector, {
      mode: 'reject',
      description: 'db',
      unpinned: true,
    });
    assert.equal(subject.mode, 'reject');
    subject.admit(report(A));
    assert.deepEqual(subject.admit(report(B)), { ok: true });
    assert.equal(subject.pinned, undefined);
  });
});
