/**
 * Fault matrix, transport half (issue 10): the sidecar, Postgres and the
 * network misbehave under a warm or cold pool. Each scenario pins the codes
 * callers get, recovery within a stated bound once the fault clears, no byte
 * to Postgres from a refused connection, and no socket left behind.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  assertNoBytesToPostgres,
  codeOf,
  connectionsBetween,
  recoversWithin,
  rejectsAllWith,
  runScenario,
  testClock,
} from './support/fault-matrix.js';
import { useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack();

/** Recovery bound of a transport fault: the next connection works (generous for a loaded machine). */
const TRANSPORT_RECOVERY_MS = 10_000;

describe('fault matrix: transport', () => {
  test('sidecar restart: connects in the gap fail CONNECT_FAILED; the pool reconnects to the same pinned server', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ max: 3 });
      await Promise.all([1, 2, 3].map(() => pool.query('select 1')));
      const pinned = pool.attestation?.fingerprint;
      const changes: unknown[] = [];
      pool.on('serverChanged', (change) => changes.push(change));
      await stack().sidecar.restart(async () => {
        // Connects in the gap, once the pool has seen its idle connections go
        // (a query racing that notice fails with pg's own uncoded
        // "Connection terminated unexpectedly": see the report of issue 10).
        await waitUntil(() => pool.idleCount === 0);
        await rejectsAllWith('CONNECT_FAILED', [pool.query('select 1'), pool.query('select 2')]);
      });
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => pool.query('select 1'));
      assert.equal(pool.attestation?.fingerprint, pinned, 'still the pinned certificate');
      assert.deepEqual(changes, [], 'a restart is no server change');
    });
  });

  test('black-hole server (accepts TCP, never answers): HANDSHAKE_TIMEOUT, 0 bytes, recovery at once', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ handshakeTimeout: '300ms' });
      const watermark = stack().sidecar.stats.accepted;
      stack().sidecar.misbehave({ stallHandshake: true });
      await rejectsAllWith('HANDSHAKE_TIMEOUT', [pool.query('select 1'), pool.query('select 2')]);
      const end = stack().sidecar.stats.accepted;
      assert.ok(
        connectionsBetween(stack(), watermark, end).every((c) => c.state !== 'established'),
      );
      stack().sidecar.reset();
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => pool.query('select 1'));
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  test('black hole at re-attestation (the probe handshake never answers): HANDSHAKE_TIMEOUT, 0 bytes, recovery at once', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const clock = testClock();
      // Long enough for the warm-up handshakes on a loaded machine.
      const pool = kit.pool({
        now: clock.now,
        reattestEvery: '1m',
        handshakeTimeout: '1500ms',
        max: 2,
      });
      await Promise.all([pool.query('select 1'), pool.query('select 2')]);
      const watermark = stack().sidecar.stats.accepted;
      stack().sidecar.misbehave({ stallHandshake: true });
      clock.advance(61_000);
      await rejectsAllWith('HANDSHAKE_TIMEOUT', [pool.query('select 1'), pool.query('select 2')]);
      const end = stack().sidecar.stats.accepted;
      stack().sidecar.reset();
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => pool.query('select 1'));
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  test('connection closed mid-handshake: HANDSHAKE_FAILED, 0 bytes, recovery at once', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool();
      const watermark = stack().sidecar.stats.accepted;
      stack().sidecar.misbehave({ closeDuringHandshake: true });
      await rejectsAllWith('HANDSHAKE_FAILED', [pool.query('select 1'), pool.query('select 2')]);
      const end = stack().sidecar.stats.accepted;
      stack().sidecar.reset();
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => pool.query('select 1'));
      assertNoBytesToPostgres(stack(), watermark, end);
    });
  });

  test('end() during pending handshakes: every caller gets POOL_ENDED and no socket is left', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ max: 4, handshakeTimeout: '30s' });
      const watermark = stack().sidecar.stats.accepted;
      stack().sidecar.misbehave({ stallHandshake: true });
      const pending = [1, 2, 3, 4].map((n) => pool.query(`select ${n}`));
      // The handshakes are truly pending: the sidecar holds four unanswered connections.
      await waitUntil(
        () =>
          connectionsBetween(stack(), watermark).filter((c) => c.state === 'stalled').length === 4,
      );
      await pool.end();
      await rejectsAllWith('POOL_ENDED', pending);
      await rejectsAllWith('POOL_ENDED', [pool.query('select 1')]);
      stack().sidecar.reset();
      // Recovery: a new pool (an ended pool stays ended, by design).
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => kit.pool().query('select 1'));
      assertNoBytesToPostgres(stack(), watermark, watermark + 4);
    });
  });

  test('the sidecar drops established connections: a held client fails, the pool reconnects', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ max: 2 });
      const held = await pool.connect();
      let lost: string | undefined;
      try {
        held.on('error', () => {});
        await pool.query('select 1');
        stack().sidecar.misbehave({ dropEstablished: true });
        lost = await held.query('select 1').then(
          () => 'fulfilled',
          (error: unknown) => codeOf(error),
        );
      } finally {
        held.release(true);
      }
      assert.equal(lost, 'CONNECTION_LOST');
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => pool.query('select 1'));
    });
  });

  test('Postgres restart: the running query gets 57P01, idle connections report it, connects in the gap fail, then the pool recovers', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ max: 4 });
      await Promise.all([1, 2, 3].map(() => pool.query('select 1')));
      // Its outcome is taken at once: it settles while the test still waits for other things.
      const running = pool.query('select pg_sleep(30)').then(() => 'fulfilled', codeOf);
      const admin = await kit.admin();
      await waitUntil(async () => {
        const { rows } = await admin.query(
          "select count(*)::int as n from pg_stat_activity where query = 'select pg_sleep(30)' and usename = 'teesql_readwrite'",
        );
        return rows[0].n === 1;
      });
      await admin.end();
      const gap: string[] = [];
      await stack().postgres!.restart(async () => {
        assert.equal(await running, '57P01');
        await waitUntil(() => pool.idleCount === 0);
        for (const n of [1, 2]) {
          gap.push(await pool.query(`select ${n}`).then(() => 'fulfilled', codeOf));
        }
      });
      assert.deepEqual(gap, ['CONNECTION_LOST', 'CONNECTION_LOST']);
      // Three warm connections, one of them running the query: two were idle.
      assert.deepEqual(kit.idleErrors, ['57P01', '57P01']);
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => pool.query('select 1'));
    });
  });

  test('pg_terminate_backend of pooled backends: idle ones report 57P01, a held one fails its next query, the pool reconnects', {
    timeout: 60_000,
  }, async () => {
    await runScenario(stack(), async (kit) => {
      const pool = kit.pool({ max: 4 });
      await Promise.all([1, 2, 3].map(() => pool.query('select 1')));
      const held = await pool.connect();
      let next: string | undefined;
      try {
        let goodbye = false;
        held.on('error', () => {
          goodbye = true;
        });
        const admin = await kit.admin();
        const { rows } = await admin.query(
          "select count(*)::int as n from (select pg_terminate_backend(pid) from pg_stat_activity where usename = 'teesql_readwrite') t",
        );
        assert.equal(rows[0].n, 3, 'three pooled backends');
        await waitUntil(() => pool.idleCount === 0);
        // The held one's next query must come after its own goodbye: sent before it
        // arrives (a loaded machine), the query itself would get the 57P01.
        await waitUntil(() => goodbye);
        next = await held.query('select 1').then(
          () => 'fulfilled',
          // Typed, with what ended the session (Postgres's goodbye) as its cause.
          (error: unknown) => `${codeOf(error)} (${codeOf((error as Error).cause)})`,
        );
      } finally {
        held.release(true);
      }
      assert.equal(next, 'CONNECTION_LOST (57P01)');
      assert.deepEqual(kit.idleErrors, ['57P01', '57P01']);
      await recoversWithin(TRANSPORT_RECOVERY_MS, () => pool.query('select 1'));
    });
  });
});

async function waitUntil(condition: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.fail('condition not reached');
}
