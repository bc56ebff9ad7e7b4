/**
 * Races and unbounded paths of the pool (hardening issue): each test here
 * failed before its fix. Real Postgres, real sidecar, real DCAP engine.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import pg from 'pg';
import { RaTlsClient } from '../src/connection/ra-tls-client.js';
import { isRaTlsError } from '../src/errors.js';
import {
  createPool,
  type RaTlsPoolOptions,
  type ServerChangedEvent,
} from '../src/pool/ra-tls-pool.js';
import {
  GatedVerifier,
  type PoolStack,
  raTlsCredentials,
  stackOptions,
  startPoolStack,
  testClock,
  waitFor,
} from './pool-harness.js';

let stack: PoolStack;
let originalCredentials: PoolStack['serverCredentials'];
before(async () => {
  stack = await startPoolStack();
  originalCredentials = stack.serverCredentials;
});
after(() => stack.close());
beforeEach(() => {
  stack.serverCredentials = originalCredentials;
});

function options(extra: Partial<RaTlsPoolOptions> = {}): RaTlsPoolOptions {
  return stackOptions(stack, { reattestEvery: '1m', ...extra });
}

async function adminClient(): Promise<pg.Client> {
  const adminUrl = new URL(stack.postgres.superuserUrl);
  adminUrl.pathname = `/${stack.postgres.database}`;
  const admin = new pg.Client({ connectionString: adminUrl.toString() });
  await admin.connect();
  return admin;
}

describe('updatePolicy while a verification is in flight', () => {
  test('a connection verified under the old policy serves nothing under the new one', async () => {
    const admin = await adminClient();
    const verifier = new GatedVerifier(stack.newVerifier());
    const pool = createPool(options({ verifier }));
    try {
      await admin.query('create table if not exists policy_race (n int)');
      await admin.query('truncate policy_race');
      await admin.query('grant all on policy_race to teesql_readwrite');
      verifier.hold();
      const started = pool.query('insert into policy_race values (1)');
      await waitFor(() => verifier.entered === 1, 'the first verification started');
      pool.updatePolicy({ allowedMrtds: ['ab'.repeat(48)] });
      const after = pool.query('insert into policy_race values (2)');
      verifier.open();
      const outcomes = await Promise.allSettled([started, after]);
      for (const outcome of outcomes) {
        assert.equal(outcome.status, 'rejected');
        assert.ok(
          isRaTlsError(
            outcome.status === 'rejected' ? outcome.reason : undefined,
            'MRTD_NOT_ALLOWED',
          ),
          `refused under the new policy: ${String(outcome.status === 'rejected' && outcome.reason)}`,
        );
      }
      const count = await admin.query('select count(*)::int as n from policy_race');
      assert.equal(count.rows[0].n, 0, 'no statement reached Postgres');
    } finally {
      verifier.open();
      await pool.end();
      await admin.end();
    }
  });
});

describe("onServerChange: 'reject'", () => {
  test('one certificate change is one serverChanged event, however many checkouts meet it', async () => {
    const clock = testClock();
    const pool = createPool(options({ now: clock.now, onServerChange: 'reject', max: 4 }));
    const changes: ServerChangedEvent[] = [];
    pool.on('serverChanged', (event: ServerChangedEvent) => changes.push(event));
    try {
      const clients = await Promise.all(Array.from({ length: 4 }, () => pool.connect()));
      for (const client of clients) client.release();
      stack.serverCredentials = raTlsCredentials(stack.authority);
      clock.advance(61_000);
      const outcomes = await Promise.allSettled(
        Array.from({ length: 4 }, () => pool.query('select 1')),
      );
      for (const outcome of outcomes) {
        assert.ok(
          outcome.status === 'rejected' && isRaTlsError(outcome.reason, 'SERVER_CHANGED'),
          'every checkout is refused',
        );
      }
      assert.equal(changes.length, 1);
    } finally {
      await pool.end();
    }
  });

  test('cancelActiveQuery sends no backend key to a certificate the pool refused', async () => {
    const pool = createPool(options({ onServerChange: 'reject' }));
    try {
      const held = (await pool.connect()) as pg.PoolClient & RaTlsClient;
      try {
        stack.serverCredentials = raTlsCredentials(stack.authority);
        const before = stack.sidecar.stats.connections.length;
        await assert.rejects(held.cancelActiveQuery(), (error: unknown) =>
          isRaTlsError(error, 'SERVER_CHANGED'),
        );
        const cancel = stack.sidecar.stats.connections.slice(before);
        assert.equal(cancel.length, 1, 'one handshake, refused');
        assert.equal(cancel[0]?.bytesToUpstream, 0, 'not a byte reached Postgres');
        // Once refused, the pool does not even dial for a cancel.
        await assert.rejects(held.cancelActiveQuery(), (error: unknown) =>
          isRaTlsError(error, 'SERVER_CHANGED'),
        );
        assert.equal(stack.sidecar.stats.connections.length, before + 1);
      } finally {
        held.release();
      }
    } finally {
      await pool.end();
    }
  });
});

describe('a checkout is bounded by the limits the user set', () => {
  test('a re-attestation that times out ends the checkout with REATTEST_FAILED, retry included', async () => {
    const clock = testClock();
    const verifier = new GatedVerifier(stack.newVerifier());
    const pool = createPool(options({ verifier, now: clock.now, reattestTimeout: '300ms' }));
    try {
      await pool.query('select 1');
      verifier.hold();
      clock.advance(61_000);
      // Without the bound, the retry opened a new connection whose verification
      // waited for verifyTimeout (30 s) and failed VERIFY_TIMEOUT.
      await assert.rejects(pool.query('select 1'), (error: unknown) => {
        assert.ok(isRaTlsError(error, 'REATTEST_FAILED'), String(error));
        assert.equal(
          error.message,
          `re-attesting ${pool.settings.description} took longer than 300 ms (reattestTimeout)`,
        );
        return true;
      });
    } finally {
      verifier.open();
      await pool.end();
    }
  });
});

describe('durations past the timer limit', () => {
  test('timeouts past ~24.8 days are BAD_CONFIG', () => {
    for (const extra of [
      { verifyTimeout: '30d' },
      { reattestTimeout: '30d' },
      { connectTimeout: '30d' },
      { handshakeTimeout: '30d' },
    ] as Partial<RaTlsPoolOptions>[]) {
      assert.throws(
        () => createPool(options(extra)),
        (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
        JSON.stringify(extra),
      );
    }
  });

  test('reattestEvery of ten years is accepted and the sweep timer does not overflow', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const pool = createPool(options({ reattestEvery: '3650d' }));
      await pool.query('select 1');
      await pool.end();
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(
        warnings.filter((warning) => warning.name === 'TimeoutOverflowWarning').map(String),
        [],
      );
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('many connections at once', () => {
  test('concurrent dials and verifications raise no listener-leak warning', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    const pool = createPool(options({ max: 15 }));
    try {
      const clients = await Promise.all(Array.from({ length: 15 }, () => pool.connect()));
      for (const client of clients) client.release();
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(
        warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map(String),
        [],
      );
    } finally {
      process.off('warning', onWarning);
      await pool.end();
    }
  });
});

describe('RaTlsClient with a shared connector', () => {
  test('its own policy or verifier next to a connector is BAD_CONFIG (it would be ignored)', async () => {
    const pool = createPool(options());
    try {
      for (const extra of [
        { policy: { allowedMrtds: [stack.mrtd] } },
        { verifier: stack.verifier },
      ]) {
        assert.throws(
          () =>
            new RaTlsClient({ connectionString: stack.dsn, connector: pool.connector, ...extra }),
          (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
        );
      }
      const client = new RaTlsClient({ connectionString: stack.dsn, connector: pool.connector });
      await client.connect();
      await client.end();
    } finally {
      await pool.end();
    }
  });
});
