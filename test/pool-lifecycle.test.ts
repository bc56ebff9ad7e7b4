import assert from 'node:assert/strict';
import { type AddressInfo, createServer, type Socket } from 'node:net';
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

describe('client certificate ahead of the first checkout', () => {
  test('a new pool asks the guest agent for its certificate at once; the first checkout finds it', async () => {
    const agentCalls = stack.issuer.requests.length;
    const pool = createPool(options({ verifier: stack.newVerifier() }));
    try {
      const identity = pool.connector.identity;
      await waitFor(() => identity.current !== undefined, 'a certificate before any checkout');
      assert.equal(
        stack.issuer.requests.length,
        agentCalls + 1,
        'one GetTlsKey, before any checkout',
      );
      const issued = identity.current;
      await pool.query('select 1');
      assert.equal(
        stack.issuer.requests.length,
        agentCalls + 1,
        'the checkout used that certificate',
      );
      assert.equal(identity.current, issued);
    } finally {
      await pool.end();
    }
  });

  test('end() abandons a certificate fetch still in flight: its socket closes, nothing is left', async () => {
    // An agent that reads the request and never answers.
    const accepted: Socket[] = [];
    const stalled = createServer((socket) => {
      accepted.push(socket.resume());
    });
    await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve));
    const { port } = stalled.address() as AddressInfo;
    try {
      const pool = createPool(
        options({ verifier: stack.newVerifier(), dstackEndpoint: `http://127.0.0.1:${port}` }),
      );
      await waitFor(() => accepted.length > 0, 'the agent call');
      const socket = accepted[0]!;
      let closed = false;
      socket.once('close', () => {
        closed = true;
      });
      await pool.end();
      await waitFor(() => closed, 'the agent connection closed');
      const open = await new Promise<number>((resolve, reject) =>
        stalled.getConnections((error, count) => (error ? reject(error) : resolve(count))),
      );
      assert.equal(open, 0, 'the agent call was abandoned by end()');
    } finally {
      for (const socket of accepted) socket.destroy();
      await new Promise((resolve) => stalled.close(resolve));
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
