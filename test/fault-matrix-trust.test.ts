/**
 * Fault matrix, trust half (issue 10): the server's certificate changes
 * under a warm pool (a genuine rotation in both `onServerChange` modes, a
 * forged server swapped in behind the same address) and the policy is
 * tightened while callers keep querying. A test clock moves the pool past
 * `reattestEvery` so the change is seen at the next checkout.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ServerChangedEvent } from '../src/pool/ra-tls-pool.js';
import type { LocalStack } from '../src/testing/local-stack.js';
import type { SidecarCredentials } from '../src/testing/stack/sidecar.js';
import {
  assertNoBytesToPostgres,
  codeOf,
  recoversWithin,
  rejectsAllWith,
  runScenario,
  testClock,
} from './support/fault-matrix.js';
import { useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack();

/** Recovery bound once the genuine server or policy is back: the next checkout works. */
const TRUST_RECOVERY_MS = 10_000;
const PAST_REATTEST = 61_000;

/** A new genuine certificate of the database CVM: what a rotation presents. */
async function rotated(local: LocalStack): Promise<SidecarCredentials> {
  const name = local.gatewayServername;
  const issued = await local.serverIssuer.issueTlsKey({
    subject: name,
    altNames: [name, 'localhost', '127.0.0.1'],
    usageRaTls: true,
    usageServerAuth: true,
  });
  return { key: issued.key, cert: issued.certificateChain.join('\n') };
}

describe('fault matrix: certificate changes', () => {
  test("rotation, 'reverify': no caller sees an error, one serverChanged, the new certificate is pinned", {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const clock = testClock();
      const pool = kit.pool({ now: clock.now, reattestEvery: '1m', max: 3 });
      await Promise.all([1, 2, 3].map(() => pool.query('select 1')));
      const before = pool.attestation?.fingerprint;
      const changes: ServerChangedEvent[] = [];
      pool.on('serverChanged', (change) => changes.push(change));
      stack().sidecar.misbehave({ credentials: await rotated(stack()) });
      clock.advance(PAST_REATTEST);
      const outcomes = await Promise.allSettled([1, 2, 3].map(() => pool.query('select 1')));
      assert.deepEqual(
        outcomes.map((outcome) => (outcome.status === 'fulfilled' ? 'ok' : codeOf(outcome.reason))),
        ['ok', 'ok', 'ok'],
      );
      assert.equal(changes.length, 1);
      assert.equal(changes[0]?.mode, 'reverify');
      assert.equal(changes[0]?.previous.fingerprint, before);
      assert.notEqual(pool.attestation?.fingerprint, before);
      assert.equal(changes[0]?.current?.fingerprint, pool.attestation?.fingerprint);
    });
  });

  test("rotation, 'reject': every checkout fails SERVER_CHANGED, one event, 0 bytes; the pool stays refused until recreated", {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const clock = testClock();
      const pool = kit.pool({
        now: clock.now,
        reattestEvery: '1m',
        onServerChange: 'reject',
        max: 3,
      });
      await Promise.all([1, 2, 3].map(() => pool.query('select 1')));
      const changes: ServerChangedEvent[] = [];
      pool.on('serverChanged', (change) => changes.push(change));
      const watermark = stack().sidecar.stats.accepted;
      stack().sidecar.misbehave({ credentials: await rotated(stack()) });
      clock.advance(PAST_REATTEST);
      await rejectsAllWith(
        'SERVER_CHANGED',
        [1, 2, 3, 4].map(() => pool.query('select 1')),
      );
      assert.equal(changes.length, 1, 'one change, one event');
      assert.equal(changes[0]?.mode, 'reject');
      const end = stack().sidecar.stats.accepted;
      // The change clearing (the old certificate back) does not lift the refusal: by design.
      stack().sidecar.reset();
      await rejectsAllWith('SERVER_CHANGED', [pool.query('select 1')]);
      await recoversWithin(TRUST_RECOVERY_MS, () =>
        kit.pool({ onServerChange: 'reject' }).query('select 1'),
      );
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  for (const [impostor, code] of [
    ['foreign-kms', 'KMS_NOT_TRUSTED'],
    ['foreign-kernel', 'MEASUREMENT_NOT_ALLOWED'],
  ] as const) {
    test(`forged server (${impostor}) swapped in behind the same address: ${code} at re-attestation, 0 bytes, recovery when the genuine one is back`, {
      timeout: 60_000,
    }, async () => {
      await runScenario(stack(), async (kit) => {
        const clock = testClock();
        const pool = kit.pool({ now: clock.now, reattestEvery: '1m', max: 2 });
        await Promise.all([pool.query('select 1'), pool.query('select 2')]);
        const pinned = pool.attestation?.fingerprint;
        const watermark = stack().sidecar.stats.accepted;
        stack().sidecar.misbehave({ impostor });
        clock.advance(PAST_REATTEST);
        await rejectsAllWith(code, [pool.query('select 1'), pool.query('select 2')]);
        // New connections meet the forgery too.
        await rejectsAllWith(code, [pool.query('select 3')]);
        const end = stack().sidecar.stats.accepted;
        assert.equal(pool.attestation?.fingerprint, pinned, 'the forgery was never pinned');
        stack().sidecar.reset();
        await recoversWithin(TRUST_RECOVERY_MS, () => pool.query('select 1'));
        assert.equal(pool.attestation?.fingerprint, pinned);
        assertNoBytesToPostgres(stack(), watermark, end);
      });
    });
  }
});

describe('fault matrix: policy', () => {
  test('policy tightened under load: every query issued after updatePolicy fails MRTD_NOT_ALLOWED and none reaches Postgres; recovery at once when relaxed', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const admin = await kit.admin();
      await admin.query('create table if not exists fault_policy (n int)');
      await admin.query('truncate fault_policy');
      await admin.query('grant all on fault_policy to teesql_readwrite');
      const pool = kit.pool({ max: 4 });
      let tightened = false;
      let stop = false;
      let issued = 0;
      const after: Promise<string>[] = [];
      const worker = async () => {
        while (!stop) {
          // Rows issued after the update are numbered from 1,000,000: none may land.
          const n = tightened ? 1_000_000 + issued++ : issued++;
          const outcome = pool
            .query('insert into fault_policy values ($1)', [n])
            .then(() => 'ok', codeOf);
          if (n >= 1_000_000) after.push(outcome);
          await outcome;
          if (after.length >= 8) stop = true;
        }
      };
      const workers = Array.from({ length: 8 }, worker);
      // Under load: wait until the workers have landed some rows.
      for (let i = 0; i < 400 && issued < 24; i++) await new Promise((r) => setTimeout(r, 10));
      const watermark = stack().sidecar.stats.accepted;
      pool.updatePolicy({ allowedMrtds: ['ab'.repeat(48)] });
      tightened = true;
      await Promise.all(workers);
      const end = stack().sidecar.stats.accepted;
      const codes = await Promise.all(after);
      assert.deepEqual(
        codes,
        codes.map(() => 'MRTD_NOT_ALLOWED'),
      );
      const landed = await admin.query(
        'select count(*)::int as n from fault_policy where n >= 1000000',
      );
      assert.equal(landed.rows[0].n, 0, 'no statement issued after the update reached Postgres');
      pool.updatePolicy(stack().clientOptions.policy);
      await recoversWithin(TRUST_RECOVERY_MS, () => pool.query('select 1'));
      // Retries dialled new connections under the new policy: refused before a byte.
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });
});
