/**
 * Fault matrix, services half (issue 10): the PCCS and the guest agent fail
 * or stall, at a pool's cold start and later (re-attestation, client
 * certificate refresh). A test clock moves the pool past `reattestEvery` and
 * the verifier past `collateralMaxAge`, so re-attestation really fetches.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ClientIdentity } from '../src/identity/client-identity.js';
import {
  assertNoBytesToPostgres,
  recoversWithin,
  rejectsAllWith,
  runScenario,
  testClock,
} from './support/fault-matrix.js';
import { useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack();

/**
 * Recovery bound once a failing service is back: the collateral cache and
 * the client identity retry a failed service after a jittered pause that
 * doubles per failure (at most 15 s and 30 s); a scenario fails a handful of
 * times, so its pause stays near a second. Generous for a loaded machine.
 */
const SERVICE_RECOVERY_MS = 20_000;

const REATTEST = { reattestEvery: '1m', collateralMaxAge: '1m' } as const;

describe('fault matrix: PCCS', () => {
  test('PCCS down at cold start: COLLATERAL_UNAVAILABLE, 0 bytes, recovery once it is back', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ verifier: kit.verifier() });
      const watermark = stack().sidecar.stats.accepted;
      stack().pccs.setDown(true);
      await rejectsAllWith('COLLATERAL_UNAVAILABLE', [
        pool.query('select 1'),
        pool.query('select 2'),
      ]);
      const end = stack().sidecar.stats.accepted;
      stack().pccs.setDown(false);
      await recoversWithin(SERVICE_RECOVERY_MS, () => pool.query('select 1'));
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  test('PCCS down at re-attestation: COLLATERAL_UNAVAILABLE, 0 bytes, recovery once it is back', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const clock = testClock();
      const pool = kit.pool({
        verifier: kit.verifier({ collateralMaxAge: REATTEST.collateralMaxAge }),
        reattestEvery: REATTEST.reattestEvery,
        now: clock.now,
        max: 2,
      });
      await Promise.all([pool.query('select 1'), pool.query('select 2')]);
      const watermark = stack().sidecar.stats.accepted;
      stack().pccs.setDown(true);
      clock.advance(2 * 60_000);
      await rejectsAllWith('COLLATERAL_UNAVAILABLE', [
        pool.query('select 1'),
        pool.query('select 2'),
      ]);
      const end = stack().sidecar.stats.accepted;
      stack().pccs.setDown(false);
      await recoversWithin(SERVICE_RECOVERY_MS, () => pool.query('select 1'));
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  test('PCCS stalled at cold start: VERIFY_TIMEOUT, 0 bytes, recovery at once when it answers again', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ verifier: kit.verifier(), verifyTimeout: '1s' });
      const watermark = stack().sidecar.stats.accepted;
      stack().pccs.setStalled(true);
      await rejectsAllWith('VERIFY_TIMEOUT', [pool.query('select 1'), pool.query('select 2')]);
      const end = stack().sidecar.stats.accepted;
      stack().pccs.setStalled(false);
      // The fetch that stalled must hold no later verification hostage.
      const recovery = await recoversWithin(2_000, () => pool.query('select 1'));
      assert.deepEqual(recovery.failures, [], 'the first try after the stall works');
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  test('PCCS stalled at re-attestation: REATTEST_FAILED within reattestTimeout, 0 bytes, recovery at once when it answers again', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const clock = testClock();
      const pool = kit.pool({
        verifier: kit.verifier({ collateralMaxAge: REATTEST.collateralMaxAge }),
        reattestEvery: REATTEST.reattestEvery,
        now: clock.now,
        reattestTimeout: '1s',
        verifyTimeout: '20s',
        max: 2,
      });
      await Promise.all([pool.query('select 1'), pool.query('select 2')]);
      const watermark = stack().sidecar.stats.accepted;
      stack().pccs.setStalled(true);
      clock.advance(2 * 60_000);
      await rejectsAllWith('REATTEST_FAILED', [pool.query('select 1'), pool.query('select 2')]);
      const end = stack().sidecar.stats.accepted;
      stack().pccs.setStalled(false);
      const recovery = await recoversWithin(2_000, () => pool.query('select 1'));
      assert.deepEqual(recovery.failures, [], 'the first try after the stall works');
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  test('PCCS flooding at cold start: COLLATERAL_UNAVAILABLE after at most a few MiB, 0 bytes, recovery', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ verifier: kit.verifier() });
      const watermark = stack().sidecar.stats.accepted;
      const flooded = stack().pccs.floodedBytes;
      stack().pccs.setFlooding(true);
      await rejectsAllWith('COLLATERAL_UNAVAILABLE', [pool.query('select 1')]);
      const end = stack().sidecar.stats.accepted;
      stack().pccs.setFlooding(false);
      // Three requests at 1 MiB each, plus what sat in socket buffers.
      assert.ok(
        stack().pccs.floodedBytes - flooded < 16 * 1024 * 1024,
        'reading stopped at the cap',
      );
      await recoversWithin(SERVICE_RECOVERY_MS, () => pool.query('select 1'));
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });
});

describe('fault matrix: guest agent', () => {
  test('guest agent down at cold start: CLIENT_CERT_UNAVAILABLE before any dial, recovery once it is back', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      // Down before the pool exists: a pool fetches its certificate as soon as it is created.
      stack().guestAgent.setDown(true);
      const pool = kit.pool();
      const watermark = stack().sidecar.stats.accepted;
      await rejectsAllWith('CLIENT_CERT_UNAVAILABLE', [
        pool.query('select 1'),
        pool.query('select 2'),
      ]);
      assert.equal(
        stack().sidecar.stats.accepted,
        watermark,
        'nothing was dialled without a certificate',
      );
      stack().guestAgent.setDown(false);
      await recoversWithin(SERVICE_RECOVERY_MS, () => pool.query('select 1'));
    });
  });

  test('guest agent down at client-certificate refresh: the valid certificate is kept, then CLIENT_CERT_UNAVAILABLE once it expires, recovery once it is back', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const clock = testClock();
      const identity = new ClientIdentity({
        dstackEndpoint: stack().dstackEndpoint,
        lifetime: '1m',
        now: clock.ms,
      });
      try {
        // maxUses 1: every query dials, so every query presents the current certificate.
        const pool = kit.pool({ clientIdentity: identity, maxUses: 1 });
        await pool.query('select 1');
        const first = identity.current;
        const refreshes = stack().guestAgent.requests.length;
        stack().guestAgent.setDown(true);
        // Past the refresh point (80 % of the lifetime), before the end of it.
        clock.advance(50_000);
        await pool.query('select 2');
        assert.equal(identity.current, first, 'the still-valid certificate stayed in use');
        assert.ok(
          stack()
            .guestAgent.requests.slice(refreshes)
            .some((request) => request.status === 503),
          'a refresh was tried and failed',
        );
        clock.advance(15_000);
        const watermark = stack().sidecar.stats.accepted;
        await rejectsAllWith('CLIENT_CERT_UNAVAILABLE', [pool.query('select 3')]);
        assert.equal(
          stack().sidecar.stats.accepted,
          watermark,
          'an expired certificate is never presented',
        );
        stack().guestAgent.setDown(false);
        await recoversWithin(SERVICE_RECOVERY_MS, () => pool.query('select 4'));
        assert.notEqual(identity.current, first, 'a new certificate');
      } finally {
        identity.close();
      }
    });
  });
});
