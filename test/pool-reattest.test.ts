import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, beforeEach, describe, test } from 'node:test';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import pg from 'pg';
import type { AttestationReport } from '../src/attest/report.js';
import { isRaTlsError } from '../src/errors.js';
import type { IssuedClientCertificate } from '../src/identity/client-identity.js';
import {
  type AttestationFailedEvent,
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

const exporter = new InMemorySpanExporter();
const contextManager = new AsyncLocalStorageContextManager().enable();
context.setGlobalContextManager(contextManager);
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
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
  contextManager.disable();
});
beforeEach(() => {
  stack.serverCredentials = originalCredentials;
  exporter.reset();
});

function options(extra: Partial<RaTlsPoolOptions> = {}): RaTlsPoolOptions {
  return stackOptions(stack, { reattestEvery: '1m', ...extra });
}

const spans = (name: string) => exporter.getFinishedSpans().filter((span) => span.name === name);

describe('re-attestation at checkout', () => {
  test('a fresh checkout costs nothing; a stale one is re-verified with one probe, on the same connection', async () => {
    const clock = testClock();
    const pool = createPool(options({ now: clock.now, max: 1 }));
    const reattested: AttestationReport[] = [];
    pool.on('reattested', (report: AttestationReport) => reattested.push(report));
    try {
      await pool.query('select 1');
      const accepted = stack.sidecar.stats.accepted;
      const verifications = stack.verifier.calls;
      exporter.reset();

      await pool.query('select 1');
      assert.equal(spans(SpanNames.REATTEST).length, 0, 'a fresh connection is not re-attested');
      assert.equal(stack.sidecar.stats.accepted, accepted);

      clock.advance(61_000);
      const { rows } = await pool.query('select pg_backend_pid() as pid');
      assert.equal(spans(SpanNames.REATTEST).length, 1);
      assert.equal(reattested.length, 1);
      assert.equal(stack.verifier.calls, verifications + 1, 'the quote was re-verified');
      assert.equal(stack.sidecar.stats.accepted, accepted + 1, 'one probe handshake');
      const probe = stack.sidecar.stats.connections.at(-1);
      assert.equal(probe?.bytesToUpstream, 0);
      assert.equal(pool.totalCount, 1, 'the same pooled connection served the query');

      const again = await pool.query('select pg_backend_pid() as pid');
      assert.equal(again.rows[0].pid, rows[0].pid);
      assert.equal(spans(SpanNames.REATTEST).length, 1, 'fresh again after re-attestation');
    } finally {
      await pool.end();
    }
  });

  test('updatePolicy excluding the MRTD: the next checkout fails MRTD_NOT_ALLOWED and no query runs', async () => {
    const adminUrl = new URL(stack.postgres.superuserUrl);
    adminUrl.pathname = `/${stack.postgres.database}`;
    const admin = new pg.Client({ connectionString: adminUrl.toString() });
    await admin.connect();
    const pool = createPool(options());
    try {
      await admin.query('create table if not exists policy_probe (n int)');
      await admin.query('grant all on policy_probe to teesql_readwrite');
      await pool.query('select 1');
      pool.updatePolicy({ allowedMrtds: ['ab'.repeat(48)] });
      await assert.rejects(pool.query('insert into policy_probe values (1)'), (error: unknown) =>
        isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
      );
      const count = await admin.query('select count(*)::int as n from policy_probe');
      assert.equal(count.rows[0].n, 0);

      pool.updatePolicy({ allowedMrtds: [stack.mrtd] });
      await pool.query('insert into policy_probe values (2)');
      assert.equal((await admin.query('select count(*)::int as n from policy_probe')).rows[0].n, 1);
    } finally {
      await pool.end();
      await admin.end();
    }
  });
});

describe('a server that stops answering', () => {
  test('a stale checkout fails re-attestation within reattestTimeout (REATTEST_FAILED, retry included) and drops the connection', async () => {
    const clock = testClock();
    const pool = createPool(
      options({ now: clock.now, reattestTimeout: '200ms', handshakeTimeout: '500ms' }),
    );
    const failures: AttestationFailedEvent[] = [];
    pool.on('attestationFailed', (event) => failures.push(event));
    try {
      await pool.query('select 1');
      stack.sidecar.misbehave({ stallHandshake: true });
      clock.advance(61_000);
      // reattestTimeout bounds the whole checkout: no retry on a new connection
      // outlives it (the handshake would time out only after 500 ms).
      await assert.rejects(pool.query('select 1'), (error: unknown) =>
        isRaTlsError(error, 'REATTEST_FAILED'),
      );
      assert.deepEqual(
        failures.map((failure) => [failure.phase, failure.error.code]),
        [['reattest', 'REATTEST_FAILED']],
      );
      assert.equal(pool.totalCount, 0, 'the unconfirmed connection was closed');
    } finally {
      stack.sidecar.reset();
      await pool.end();
    }
  });
});

describe('idle connections in the background', () => {
  test('stale idle connections are re-attested without a checkout, or closed when that fails', async () => {
    const clock = testClock();
    const pool = createPool(
      options({ now: clock.now, reattestEvery: '1s', reattestTimeout: '200ms' }),
    );
    const reattested: AttestationReport[] = [];
    const failures: AttestationFailedEvent[] = [];
    pool.on('reattested', (report) => reattested.push(report));
    pool.on('attestationFailed', (event) => failures.push(event));
    try {
      await pool.query('select 1');
      clock.advance(5_000);
      await waitFor(() => reattested.length === 1, 'a background re-attestation');
      assert.equal(pool.idleCount, 1);

      stack.sidecar.misbehave({ stallHandshake: true });
      clock.advance(5_000);
      await waitFor(() => failures.length === 1, 'a failed background re-attestation');
      assert.equal(failures[0]?.phase, 'background');
      await waitFor(() => pool.totalCount === 0, 'the stale idle connection closed');
    } finally {
      stack.sidecar.reset();
      await pool.end();
    }
  });
});

describe('the server changes its certificate', () => {
  test("'reverify' verifies the new certificate, pins it and drains the old connections", async () => {
    const clock = testClock();
    const pool = createPool(options({ now: clock.now, max: 2 }));
    const changes: ServerChangedEvent[] = [];
    pool.on('serverChanged', (event: ServerChangedEvent) => changes.push(event));
    try {
      await Promise.all([pool.query('select pg_sleep(0.05)'), pool.query('select pg_sleep(0.05)')]);
      const first = pool.attestation!;
      assert.equal(pool.idleCount, 2);

      stack.serverCredentials = raTlsCredentials(stack.authority);
      clock.advance(61_000);
      await pool.query('select 1');

      assert.equal(changes.length, 1);
      assert.equal(changes[0]?.mode, 'reverify');
      assert.equal(changes[0]?.previous.fingerprint, first.fingerprint);
      assert.notEqual(pool.attestation?.fingerprint, first.fingerprint);
      assert.equal(changes[0]?.current?.fingerprint, pool.attestation?.fingerprint);
      const newLeaf = new X509Certificate(stack.serverCredentials.cert).fingerprint256
        .replaceAll(':', '')
        .toLowerCase();
      assert.equal(pool.attestation?.fingerprint, newLeaf);
      assert.equal(pool.totalCount, 1, 'both old connections were drained');
    } finally {
      await pool.end();
    }
  });

  test("'reject' fails every later checkout with SERVER_CHANGED", async () => {
    const pool = createPool(options({ onServerChange: 'reject' }));
    const changes: ServerChangedEvent[] = [];
    pool.on('serverChanged', (event: ServerChangedEvent) => changes.push(event));
    try {
      const held = await pool.connect();
      try {
        stack.serverCredentials = raTlsCredentials(stack.authority);
        // A second connection meets the new certificate during its own handshake.
        await assert.rejects(pool.query('select 1'), (error: unknown) =>
          isRaTlsError(error, 'SERVER_CHANGED'),
        );
      } finally {
        // Released even when the assertion fails: pool.end() would wait for it forever.
        held.release();
      }
      await assert.rejects(pool.query('select 1'), (error: unknown) =>
        isRaTlsError(error, 'SERVER_CHANGED'),
      );
      assert.equal(changes.length, 1);
      assert.equal(changes[0]?.mode, 'reject');
    } finally {
      await pool.end();
    }
  });
});

describe('the client certificate', () => {
  test('is refreshed before it expires and new connections present the new one', async () => {
    // Refreshed at 80 % of its life: 1.6 s of slack for a loaded machine's timer lag
    // (2.5 s lifetimes left 0.5 s, and failed under load).
    stack.issuer.lifetimeMs = 8000;
    const pool = createPool(options({ max: 2 }));
    const refreshes: IssuedClientCertificate[] = [];
    let refreshed!: () => void;
    const backgroundRefresh = new Promise<void>((resolve) => {
      refreshed = resolve;
    });
    pool.connector.identity.on('refresh', (certificate) => {
      refreshes.push(certificate);
      if (refreshes.length === 2) refreshed();
    });
    try {
      await pool.query('select 1');
      // The first certificate, then the one fetched in the background (~6.4 s later).
      await backgroundRefresh;
      assert.ok(refreshes[1]!.obtainedAt < refreshes[0]!.notAfter.getTime(), 'before expiry');
      // Hold the idle connection so that the next query needs a new one.
      const held = await pool.connect();
      try {
        await pool.query('select 1');
      } finally {
        held.release();
      }
      // Compare DER bytes: X509Certificate(der) of an RA-TLS certificate would
      // parse the PCK chain PEM embedded in its quote instead of the certificate.
      const presented = Buffer.from(stack.clientCertificates.at(-1)!);
      assert.ok(presented.equals(new X509Certificate(refreshes.at(-1)!.cert).raw));
      assert.ok(!presented.equals(new X509Certificate(refreshes[0]!.cert).raw));
    } finally {
      stack.issuer.lifetimeMs = 3650 * 86_400_000;
      await pool.end();
    }
  });
});
