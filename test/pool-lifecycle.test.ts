import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { createPool, type RaTlsPoolOptions } from '../src/pool/ra-tls-pool.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';
import { type PoolStack, stackOptions, startPoolStack, waitFor } from './pool-harness.js';

let stack: PoolStack;
before(async () => {
  stack = await startPoolStack();
});
after(() => stack.close());

function options(extra: Partial<RaTlsPoolOptions> = {}): RaTlsPoolOptions {
  return stackOptions(stack, extra);
}

/** Counts of each active resource type (handles, timers, requests). */
function resources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const name of process.getActiveResourcesInfo())
    counts.set(name, (counts.get(name) ?? 0) + 1);
  return counts;
}

describe('cold start', () => {
  test('concurrent cold connects share one guest-agent call and one verification', async () => {
    const verifier = stack.newVerifier();
    const agentCalls = stack.issuer.requests.length;
    const accepted = stack.sidecar.stats.accepted;
    const pool = createPool(options({ verifier, max: 5 }));
    try {
      const clients = await Promise.all(Array.from({ length: 5 }, () => pool.connect()));
      for (const client of clients) client.release();
      assert.equal(stack.issuer.requests.length, agentCalls + 1, 'one GetTlsKey');
      assert.equal(verifier.calls, 1, 'one DCAP verification');
      assert.equal(stack.sidecar.stats.accepted, accepted + 5, 'five TLS connections');
      assert.equal(pool.totalCount, 5);
    } finally {
      await pool.end();
    }
  });
});

describe('pool.end()', () => {
  test('settles attestations in flight with POOL_ENDED', async () => {
    let entered: () => void = () => {};
    const verifying = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const never: RaTlsVerifier = {
      name: 'never',
      verify: (_quote, verifyOptions) => {
        entered();
        return new Promise((_, reject) => {
          verifyOptions?.signal?.addEventListener('abort', () =>
            reject(verifyOptions.signal?.reason),
          );
        });
      },
    };
    const pool = createPool(options({ verifier: never }));
    const query = pool.query('select 1');
    await verifying;
    await pool.end();
    await assert.rejects(query, (error: unknown) => isRaTlsError(error, 'POOL_ENDED'));
    await assert.rejects(pool.query('select 1'), (error: unknown) =>
      isRaTlsError(error, 'POOL_ENDED'),
    );
  });

  test('leaves no socket, timer or request of the pool behind', async () => {
    const baseline = resources();
    const pool = createPool(options({ max: 3, reattestEvery: '2s' }));
    await Promise.all([pool.query('select 1'), pool.query('select 2'), pool.query('select 3')]);
    await pool.end();
    await waitFor(
      () => {
        const now = resources();
        return [...now].every(([name, count]) => count <= (baseline.get(name) ?? 0));
      },
      `resources back to ${JSON.stringify([...baseline])}, now ${JSON.stringify([...resources()])}`,
    );
  });
});
