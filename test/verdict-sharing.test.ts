/**
 * Verdicts are shared process wide (issue 11): a new pool to a server this
 * process already verified reuses the verdict, but only under the very same
 * verifier object, clock and policy. Real Postgres, sidecar and DCAP engine.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RaTlsClient } from '../src/connection/ra-tls-client.js';
import { verifyServer } from '../src/connection/verify-server.js';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { createPool, type RaTlsPoolOptions } from '../src/pool/ra-tls-pool.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';
import { type PoolStack, stackOptions, startPoolStack } from './pool-harness.js';

let stack: PoolStack;
before(async () => {
  stack = await startPoolStack();
});
after(() => stack.close());

const OTHER_MRTD = 'ab'.repeat(48);

function options(extra: Partial<RaTlsPoolOptions> = {}): RaTlsPoolOptions {
  return stackOptions(stack, { max: 1, ...extra });
}

/** Runs `body` with pools made by `make`, ending them all afterwards. */
async function withPools(
  body: (
    make: (extra?: Partial<RaTlsPoolOptions>) => ReturnType<typeof createPool>,
  ) => Promise<void>,
): Promise<void> {
  const pools: ReturnType<typeof createPool>[] = [];
  try {
    await body((extra) => {
      const pool = createPool(options(extra));
      pools.push(pool);
      return pool;
    });
  } finally {
    await Promise.all(pools.map((pool) => pool.end()));
  }
}

describe('a new pool to a server this process verified', () => {
  test('reuses the verdict under the same verifier and an equal policy', async () => {
    const verifier = stack.newVerifier();
    await withPools(async (make) => {
      await make({ verifier }).query('select 1');
      // Another pool, its policy an equal object of its own.
      await make({ verifier, policy: { allowedMrtds: [stack.mrtd] } }).query('select 1');
      assert.equal(verifier.calls, 1, 'one DCAP verification for both pools');
    });
  });

  test('verifies on its own under another policy, and its policy decides', async () => {
    const verifier = stack.newVerifier();
    await withPools(async (make) => {
      await make({ verifier }).query('select 1');
      await assert.rejects(
        make({ verifier, policy: { allowedMrtds: [OTHER_MRTD] } }).query('select 1'),
        (error: unknown) => isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
      );
      await make({ verifier, policy: { allowedMrtds: [stack.mrtd], allowDebugMode: true } }).query(
        'select 1',
      );
      assert.equal(verifier.calls, 3, 'each policy verified once');
    });
  });

  test('never reuses a verdict of another verifier object, even one configured alike', async () => {
    const verifier = stack.newVerifier();
    const refusing: RaTlsVerifier = {
      name: 'refuses everything',
      verify: async () => {
        throw new RaTlsError('QUOTE_INVALID', 'this verifier accepts no quote');
      },
    };
    await withPools(async (make) => {
      await make({ verifier }).query('select 1');
      await assert.rejects(make({ verifier: refusing }).query('select 1'), (error: unknown) =>
        isRaTlsError(error, 'QUOTE_INVALID'),
      );
      const alike = stack.newVerifier();
      await make({ verifier: alike }).query('select 1');
      assert.equal(alike.calls, 1, 'the look-alike verifier verified for itself');
      assert.equal(verifier.calls, 1);
    });
  });

  test('updatePolicy never reuses a verdict reached under the old policy', async () => {
    const verifier = stack.newVerifier();
    await withPools(async (make) => {
      const first = make({ verifier });
      const second = make({ verifier });
      await first.query('select 1');
      await second.query('select 1');
      assert.equal(verifier.calls, 1);

      second.updatePolicy({ allowedMrtds: [OTHER_MRTD] });
      await assert.rejects(second.query('select 1'), (error: unknown) =>
        isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
      );
      const judged = verifier.calls;
      assert.ok(judged > 1, 'judged again under the new policy');
      // The other pool's policy did not change: its verdict stands.
      await first.query('select 1');
      assert.equal(verifier.calls, judged);

      // Back to the first policy: the verdict reached under it is reused.
      second.updatePolicy({ allowedMrtds: [stack.mrtd] });
      await second.query('select 1');
      assert.equal(verifier.calls, judged);
    });
  });
});

describe('one-shot checks', () => {
  test('verifyServer verifies now, even a server a pool of the process verified', async () => {
    const verifier = stack.newVerifier();
    await withPools(async (make) => {
      await make({ verifier }).query('select 1');
      const report = await verifyServer(stack.dsn, {
        verifier,
        dstackEndpoint: stack.agent.endpoint,
        policy: { allowedMrtds: [stack.mrtd] },
      });
      assert.equal(report.mrtd, stack.mrtd);
      assert.equal(verifier.calls, 2, 'verified again');
    });
  });
});

describe('the server certificate a connection keeps for re-attestation', () => {
  test('is one copy per process, however many connections and pools hold it', async () => {
    await withPools(async (make) => {
      const first = make({ max: 3 });
      const second = make();
      const clients = [
        ...(await Promise.all([first.connect(), first.connect(), first.connect()])),
        await second.connect(),
      ] as unknown as (RaTlsClient & { release(): void })[];
      try {
        const copies = new Set(clients.map((client) => client.serverCertificate));
        const chains = new Set(clients.map((client) => client.serverIssuers));
        assert.equal(copies.size, 1, 'one certificate copy');
        assert.equal(chains.size, 1, 'one copy of the issuers');
        assert.ok((clients[0]?.serverCertificate?.byteLength ?? 0) > 0);
      } finally {
        for (const client of clients) client.release();
      }
    });
  });
});
