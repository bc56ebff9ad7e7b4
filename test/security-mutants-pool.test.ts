/**
 * Tests that catch the connection and pool bugs a mutation spot-check found
 * surviving the whole suite (issue 10). Written against public behaviour only
 * (createPool / RaTlsClient, their events and error codes, the sidecar's
 * counters), since the pool's internals are being redesigned. Each test names
 * the mutant it kills; each was checked by applying it and watching the test fail.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { trace } from '@opentelemetry/api';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { RaTlsClient, type RaTlsClientOptions } from '../src/connection/ra-tls-client.js';
import { type ErrorCode, isRaTlsError } from '../src/errors.js';
import {
  createPool,
  type RaTlsPoolOptions,
  type ServerChangedEvent,
} from '../src/pool/ra-tls-pool.js';
import { SpanNames } from '../src/telemetry/tracing.js';
import {
  type PoolStack,
  raTlsCredentials,
  stackOptions,
  startPoolStack,
  testClock,
  waitFor,
} from './pool-harness.js';

/** Runs a hook when a span of the given name ends (synchronously, inside the library's await chain). */
const onSpanEnd = new Map<string, () => void>();
const hookProcessor: SpanProcessor = {
  onStart: () => {},
  onEnd: (span: ReadableSpan) => {
    const hook = onSpanEnd.get(span.name);
    if (hook !== undefined) {
      onSpanEnd.delete(span.name);
      hook();
    }
  },
  shutdown: async () => {},
  forceFlush: async () => {},
};
const provider = new BasicTracerProvider({ spanProcessors: [hookProcessor] });
trace.setGlobalTracerProvider(provider);

let stack: PoolStack;
let originalCredentials: PoolStack['serverCredentials'];
before(async () => {
  stack = await startPoolStack();
  originalCredentials = stack.serverCredentials;
});
after(async () => {
  await stack.close();
  await provider.shutdown();
});
beforeEach(() => {
  stack.serverCredentials = originalCredentials;
  stack.sidecar.reset();
  onSpanEnd.clear();
});
afterEach(() => stack.sidecar.reset());

function poolOptions(extra: Partial<RaTlsPoolOptions> = {}): RaTlsPoolOptions {
  return stackOptions(stack, { reattestEvery: '1m', ...extra });
}

function clientOptions(extra: Partial<RaTlsClientOptions> = {}): RaTlsClientOptions {
  return stackOptions(stack, extra);
}

const withCode = (code: ErrorCode) => (error: unknown) => {
  assert.ok(isRaTlsError(error), `expected a RaTlsError ${code}, got ${String(error)}`);
  assert.equal(error.code, code, error.message);
  return true;
};

/** Pool clients are RaTlsClients; their public `attestation` says which certificate they were judged for. */
const attestationOf = (client: unknown) => (client as RaTlsClient).attestation;

/** The sidecar connections accepted since `before`; asserts there is at least one. */
function connectionsSince(before: number) {
  const connections = stack.sidecar.stats.connections.slice(before);
  assert.ok(
    connections.length > 0,
    'the client never reached the sidecar: the test proves nothing',
  );
  return connections;
}

describe("mutant: 'reject' mode re-pinning when the re-attestation probe sees a new certificate", () => {
  test('a stale checkout whose probe meets a new certificate is SERVER_CHANGED and the pin stays', async () => {
    const clock = testClock();
    const pool = createPool(poolOptions({ now: clock.now, onServerChange: 'reject' }));
    const changes: ServerChangedEvent[] = [];
    pool.on('serverChanged', (event: ServerChangedEvent) => changes.push(event));
    try {
      await pool.query('select 1');
      const pinned = pool.attestation?.fingerprint;
      assert.ok(pinned !== undefined);
      assert.equal(pool.idleCount, 1);

      // The idle connection goes stale; its checkout probes and meets the new certificate.
      stack.serverCredentials = raTlsCredentials(stack.authority);
      clock.advance(61_000);
      await assert.rejects(pool.query('select 1'), withCode('SERVER_CHANGED'));

      assert.equal(pool.attestation?.fingerprint, pinned, "'reject' must never re-pin");
      assert.equal(changes.length, 1);
      assert.equal(changes[0]?.mode, 'reject');
      assert.equal(changes[0]?.current, undefined);
      // And it stays refused, on every later checkout.
      await assert.rejects(pool.query('select 1'), withCode('SERVER_CHANGED'));
      assert.equal(pool.attestation?.fingerprint, pinned);
    } finally {
      await pool.end();
    }
  });
});

describe('mutant: the superseded-connection check removed', () => {
  test('a connection to the previously pinned certificate is never handed out again', async () => {
    const pool = createPool(poolOptions({ max: 3 }));
    try {
      const held = await pool.connect();
      const old = attestationOf(held)?.fingerprint;
      assert.ok(old !== undefined);

      // A new connection meets a rotated certificate: 'reverify' pins it.
      stack.serverCredentials = raTlsCredentials(stack.authority);
      await pool.query('select 1');
      const current = pool.attestation?.fingerprint;
      assert.ok(current !== undefined && current !== old);

      // The old connection comes back fresh by age, but judged for the old certificate.
      held.release();
      for (let i = 0; i < 3; i++) {
        const client = await pool.connect();
        try {
          assert.equal(attestationOf(client)?.fingerprint, current);
        } finally {
          client.release();
        }
      }
    } finally {
      await pool.end();
    }
  });
});

describe('mutant: a refused socket not destroyed', () => {
  test('the connection to a refused server is closed at once and carried no byte', async () => {
    const before = stack.sidecar.stats.connections.length;
    stack.sidecar.misbehave({
      credentials: raTlsCredentials(stack.authority, { mrtd: '11'.repeat(48) }),
    });
    const client = new RaTlsClient(clientOptions());
    await assert.rejects(client.connect(), withCode('MRTD_NOT_ALLOWED'));
    const connections = connectionsSince(before);
    await waitFor(
      () =>
        stack.sidecar.stats.connections
          .slice(before)
          .every((c) => c.state === 'closed' || c.state === 'refused'),
      'the refused connection closed',
    );
    for (const connection of connections) assert.equal(connection.bytesToUpstream, 0);
  });
});

describe('mutant: end() racing a finished attestation', () => {
  test('end() right after the verdict, before the hand-off, settles connect() with CONNECTION_ENDED and sends nothing', async () => {
    const before = stack.sidecar.stats.connections.length;
    const client = new RaTlsClient(clientOptions());
    let ended = false;
    // The verify span ends after the verdict is in and before the socket is
    // handed to pg: end() lands exactly in that window.
    onSpanEnd.set(SpanNames.VERIFY, () => {
      ended = true;
      void client.end();
    });
    await assert.rejects(client.connect(), withCode('CONNECTION_ENDED'));
    assert.ok(ended, 'end() ran inside the window');
    await waitFor(
      () => stack.sidecar.stats.connections.slice(before).every((c) => c.state === 'closed'),
      'the unused connection closed',
    );
    for (const connection of connectionsSince(before)) {
      assert.equal(connection.bytesToUpstream, 0);
    }
  });
});
