/**
 * Reattestation (src/pool/reattestation.ts) without Postgres: a real
 * AttestedConnector verifying real RA-TLS certificates (DCAP test authority,
 * docs/protocol.md §8) presented by a real TLS server on loopback, whose
 * certificate the test rotates. The server counts connections, so the shared
 * probe (one per endpoint per reattestEvery) is observable.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { AttestedConnector, type AttestedSocket } from '../src/connection/attested-connector.js';
import { RaTlsError } from '../src/errors.js';
import { Reattestation } from '../src/pool/reattestation.js';
import { type ServerChangeMode, ServerPin } from '../src/pool/server-pin.js';
import { SpanAttributes, SpanNames } from '../src/telemetry/tracing.js';
import {
  createTestAuthority,
  type TestAuthority,
} from '../src/testing/authority/test-authority.js';
import { Scope } from '../src/util/deadline.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';
import type {
  RaTlsVerifier,
  VerificationResult,
  VerifyOptions,
} from '../src/verification/verifier.js';
import { CountingVerifier, raTlsCredentials } from './pool-harness.js';
import { type RaTlsServer, startRaTlsServer } from './support/ra-tls-server.js';

const REATTEST_EVERY = 60_000;

/** A clock that moves only when the test moves it (the reattestEvery boundaries are exact). */
function manualClock() {
  let at = Date.now();
  let broken: Error | undefined;
  return {
    now: () => {
      if (broken !== undefined) throw broken;
      return new Date(at);
    },
    advance: (ms: number) => {
      at += ms;
    },
    /** From now on, reading the clock throws `error` (a faulty `now` option). */
    breakWith: (error: Error) => {
      broken = error;
    },
  };
}

/**
 * `inner` behind a gate: once `hold()` is called, the next verifications wait
 * (`reached` settles when the first one does) until `open()`.
 */
function heldVerifier(inner: RaTlsVerifier) {
  let holding = false;
  let open = () => {};
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let reach = () => {};
  const reached = new Promise<void>((resolve) => {
    reach = resolve;
  });
  const held: RaTlsVerifier = {
    name: inner.name,
    async verify(quote: Uint8Array, options?: VerifyOptions): Promise<VerificationResult> {
      if (holding) {
        reach();
        await gate;
      }
      return inner.verify(quote, options);
    },
  };
  return {
    verifier: held,
    reached,
    hold: () => {
      holding = true;
    },
    open: () => {
      holding = false;
      open();
    },
  };
}

let authority: TestAuthority;
let verifier: CountingVerifier;
let server: RaTlsServer;
let mrtd: string;

// The re-attestation span is how an operator sees what a re-attestation found.
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
trace.setGlobalTracerProvider(provider);
const reattestSpans = (): ReadableSpan[] =>
  exporter.getFinishedSpans().filter((span) => span.name === SpanNames.REATTEST);

before(async () => {
  authority = await createTestAuthority({ seed: 'pg-ra-tls reattestation tests' });
  mrtd = authority.describe().quoteDefaults.mrtd;
  verifier = new CountingVerifier(
    new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      collateral: authority.collateral(),
      logger: () => {},
    }),
  );
  server = await startRaTlsServer(raTlsCredentials(authority));
});

after(async () => {
  await server.close();
  await provider.shutdown();
});

const target = (servername?: string) => ({
  host: '127.0.0.1',
  port: server.port,
  ...(servername === undefined ? {} : { servername }),
  connectTimeoutMs: 5000,
  handshakeTimeoutMs: 5000,
});

interface Setup {
  connector: AttestedConnector;
  pin: ServerPin;
  reattestation: Reattestation;
  clock: ReturnType<typeof manualClock>;
  /** The first connection, attested and admitted to the pin. */
  first: AttestedSocket;
}

const open: AttestedConnector[] = [];

async function setup(
  mode: ServerChangeMode,
  policy: object = { allowedMrtds: [mrtd] },
  connectorVerifier: RaTlsVerifier = verifier,
): Promise<Setup> {
  const clock = manualClock();
  const connector = new AttestedConnector(
    {
      verifier: connectorVerifier,
      policy,
      reattestEvery: REATTEST_EVERY,
      now: clock.now,
      presentClientCertificate: false,
      logger: () => {},
    },
    'none',
  );
  open.push(connector);
  const pin = new ServerPin({
    mode,
    description: `127.0.0.1:${server.port}`,
    reattestEveryMs: REATTEST_EVERY,
    now: () => connector.now(),
    policyVersion: () => connector.policyVersion,
  });
  const first = await connector.open(target());
  first.socket.destroy();
  assert.deepEqual(pin.admit(first.report), { ok: true });
  return { connector, pin, reattestation: new Reattestation(connector, pin), clock, first };
}

const budget = () =>
  new Scope().deadline(10_000, () => new RaTlsError('REATTEST_FAILED', 'test budget passed'));

function run(s: Setup, probe: boolean, attested = s.first, where = target()) {
  return s.reattestation.run(
    where,
    probe,
    attested.peerCertificateDer,
    attested.peerIssuersDer,
    attested.report,
    budget(),
  );
}

beforeEach(() => {
  exporter.reset();
  server.present(raTlsCredentials(authority));
  for (const connector of open.splice(0)) connector.close();
});
after(() => {
  for (const connector of open.splice(0)) connector.close();
});

describe('Reattestation without a probe: re-verifies the connection’s certificate', () => {
  test('fresh, under the current policy version, from the cache while young', async () => {
    const s = await setup('reverify');
    const before = server.connections;
    const outcome = await run(s, false);
    assert.equal(outcome.kind, 'fresh');
    assert.ok(outcome.kind === 'fresh');
    assert.equal(outcome.report.fingerprint, s.first.report.fingerprint);
    assert.equal(outcome.cacheHit, true);
    assert.equal(outcome.policyVersion, 0);
    assert.equal(server.connections, before, 'no probe, no handshake');
  });

  test('once reattestEvery has passed, verifies again and refreshes the pin', async () => {
    const s = await setup('reverify');
    const calls = verifier.calls;
    s.clock.advance(REATTEST_EVERY);
    const outcome = await run(s, false);
    assert.ok(outcome.kind === 'fresh');
    assert.equal(outcome.cacheHit, false);
    assert.equal(verifier.calls, calls + 1);
    assert.ok(outcome.report.verifiedAt > s.first.report.verifiedAt);
    assert.equal(s.pin.pinned, outcome.report, 'the pin holds the newer report');
  });

  test('a policy change: judged under the new version; a refused verdict fails and is not cached', async () => {
    const s = await setup('reverify');
    s.connector.setPolicy({ allowedMrtds: [mrtd] });
    const fresh = await run(s, false);
    assert.ok(fresh.kind === 'fresh');
    assert.equal(fresh.policyVersion, 1);

    s.connector.setPolicy({ allowedMrtds: ['00'.repeat(48)] });
    const refused = await run(s, false);
    assert.ok(refused.kind === 'failed');
    assert.equal(refused.error.code, 'MRTD_NOT_ALLOWED');
    assert.equal('change' in refused, false);
    assert.equal(s.pin.pinned, s.first.report, 'a refused verdict refreshes nothing');
  });

  test('a failed re-attestation drops the cached verdict of that certificate', async () => {
    const s = await setup('reverify');
    const fingerprint = s.first.report.fingerprint;
    assert.notEqual(s.connector.cache.get(fingerprint), undefined);
    const aborted = new Scope();
    aborted.abort(new RaTlsError('REATTEST_FAILED', 'reattestTimeout passed'));
    const outcome = await s.reattestation.run(
      target(),
      false,
      s.first.peerCertificateDer,
      s.first.peerIssuersDer,
      s.first.report,
      aborted,
    );
    assert.ok(outcome.kind === 'failed');
    assert.equal(outcome.error.message, 'reattestTimeout passed');
    assert.equal(s.connector.cache.get(fingerprint), undefined);
  });
});

describe('Reattestation of a fault that is not a RaTlsError', () => {
  test('fails REATTEST_FAILED naming the fault, which stays the cause', async () => {
    const s = await setup('reverify');
    const fault = new Error('the clock broke');
    s.clock.breakWith(fault);
    const outcome = await run(s, false);
    assert.ok(outcome.kind === 'failed');
    assert.equal(outcome.error.code, 'REATTEST_FAILED');
    assert.equal(outcome.error.message, 're-attestation failed: the clock broke');
    assert.equal(outcome.error.cause, fault);
  });
});

describe('Reattestation with a probe: which certificate does the server present now?', () => {
  test('the same certificate: fresh; one handshake per endpoint per reattestEvery, shared', async () => {
    const s = await setup('reject');
    const before = server.connections;
    const [a, b] = await Promise.all([run(s, true), run(s, true)]);
    assert.equal(a.kind, 'fresh');
    assert.equal(b.kind, 'fresh');
    assert.equal(server.connections, before + 1, 'concurrent callers share one probe');
    assert.equal((await run(s, true)).kind, 'fresh');
    assert.equal(server.connections, before + 1, 'a young probe result is reused');

    s.clock.advance(REATTEST_EVERY - 1);
    await run(s, true);
    assert.equal(server.connections, before + 1);
    s.clock.advance(1);
    assert.equal((await run(s, true)).kind, 'fresh');
    assert.equal(server.connections, before + 2, 'after reattestEvery the server is probed again');
  });

  test('each endpoint (host, port, servername) has its own probe', async () => {
    const s = await setup('reject');
    const before = server.connections;
    await run(s, true, s.first, target());
    await run(s, true, s.first, target('a.example'));
    await run(s, true, s.first, target('b.example'));
    await run(s, true, s.first, target('a.example'));
    assert.equal(server.connections, before + 3);
  });

  test('reverify: a new verified certificate is pinned; the connection is superseded, one change', async () => {
    const s = await setup('reverify');
    server.present(raTlsCredentials(authority));
    const outcome = await run(s, true);
    assert.ok(outcome.kind === 'superseded');
    assert.ok(outcome.change !== undefined);
    assert.equal(outcome.change.mode, 'reverify');
    assert.equal(outcome.change.previous, s.first.report);
    assert.notEqual(outcome.change.fingerprint, s.first.report.fingerprint);
    assert.equal(outcome.change.current, s.pin.pinned);
    assert.equal(s.pin.pinned?.fingerprint, outcome.change.fingerprint);

    // The probe's result was forgotten with the change: the next check probes again.
    const before = server.connections;
    const again = await run(s, true);
    assert.equal(again.kind, 'superseded', 'the old connection stays obsolete');
    assert.equal('change' in again, false, 'one change, one event');
    assert.equal(server.connections, before + 1);
  });

  test('reverify: a new certificate the policy refuses fails with the policy’s code, pin kept', async () => {
    const s = await setup('reverify');
    server.present(raTlsCredentials(authority, { mrtd: '11'.repeat(48) }));
    const outcome = await run(s, true);
    assert.ok(outcome.kind === 'failed');
    assert.equal(outcome.error.code, 'MRTD_NOT_ALLOWED');
    assert.equal('change' in outcome, false);
    assert.equal(s.pin.pinned, s.first.report);
  });

  test('reject: a new certificate fails SERVER_CHANGED with the change, once; it is not verified', async () => {
    const s = await setup('reject');
    server.present(raTlsCredentials(authority));
    const calls = verifier.calls;
    const outcome = await run(s, true);
    assert.ok(outcome.kind === 'failed');
    assert.equal(outcome.error.code, 'SERVER_CHANGED');
    assert.equal(outcome.change?.mode, 'reject');
    assert.equal(outcome.change?.previous, s.first.report);
    assert.equal(verifier.calls, calls, 'the refused certificate is never verified');
    assert.equal(s.connector.cache.get(s.first.report.fingerprint), undefined);

    const again = await run(s, true);
    assert.ok(again.kind === 'failed');
    assert.equal(again.error, outcome.error);
    assert.equal('change' in again, false, 'one change, one event');
  });

  test('a connection to a certificate the pin already left: superseded, no change', async () => {
    const s = await setup('reverify');
    const rotated = raTlsCredentials(authority);
    server.present(rotated);
    const second = await s.connector.open(target());
    second.socket.destroy();
    s.pin.admit(second.report);
    const outcome = await run(s, true);
    assert.deepEqual(outcome, { kind: 'superseded' });
  });

  test('a new certificate pinned by another connection while this one verified it: superseded, no change, later probe results kept', async () => {
    // Given a connection whose re-attestation saw a new certificate and is verifying it
    const held = heldVerifier(verifier);
    const s = await setup('reverify', { allowedMrtds: [mrtd] }, held.verifier);
    server.present(raTlsCredentials(authority));
    held.hold();
    const pending = run(s, true);
    let outcome: Awaited<typeof pending>;
    try {
      await held.reached;
      // When meanwhile another connection pins that certificate (the pool then
      // forgets the probes, as on every change) and a re-attestation through
      // another endpoint probes the server anew
      const other = new AttestedConnector(
        { verifier, policy: { allowedMrtds: [mrtd] }, presentClientCertificate: false },
        'none',
      );
      open.push(other);
      const second = await other.open(target());
      second.socket.destroy();
      assert.notEqual(s.pin.admit(second.report).change, undefined);
      s.reattestation.resetProbe();
      assert.deepEqual(await run(s, true, s.first, target('c.example')), { kind: 'superseded' });
    } finally {
      held.open();
      outcome = await pending;
    }
    // Then the first connection is superseded without a second change, and the
    // probe made after the change still answers for its interval: no handshake
    assert.deepEqual(outcome, { kind: 'superseded' });
    const before = server.connections;
    assert.deepEqual(await run(s, true, s.first, target('c.example')), { kind: 'superseded' });
    assert.equal(server.connections, before);
  });

  test('an ended pool: the probe’s new certificate fails with the pool’s reason', async () => {
    const s = await setup('reverify');
    server.present(raTlsCredentials(authority));
    const ended = new RaTlsError('POOL_ENDED', 'the pool was ended');
    s.pin.close(ended);
    const outcome = await run(s, true);
    assert.ok(outcome.kind === 'failed');
    assert.equal(outcome.error, ended);
    assert.equal('change' in outcome, false);
  });

  test('resetProbe forgets settled probe results: the next check probes again', async () => {
    const s = await setup('reverify');
    await run(s, true);
    const before = server.connections;
    s.reattestation.resetProbe();
    await run(s, true);
    assert.equal(server.connections, before + 1);
  });
});

describe('resetProbe while a probe is in flight', () => {
  test('callers still join the probe in flight: one handshake', async () => {
    const s = await setup('reverify');
    const before = server.connections;
    const first = run(s, true);
    s.reattestation.resetProbe();
    const second = run(s, true);
    assert.equal((await first).kind, 'fresh');
    assert.equal((await second).kind, 'fresh');
    assert.equal(server.connections, before + 1);
  });
});

describe('the pg_ra_tls.reattest span', () => {
  test('names the server and certificate, and says what the verification found', async () => {
    const s = await setup('reverify');
    s.clock.advance(REATTEST_EVERY);
    const outcome = await run(s, false);
    assert.ok(outcome.kind === 'fresh');
    const [span] = reattestSpans();
    assert.ok(span !== undefined);
    assert.equal(span.attributes[SpanAttributes.SERVER_ADDRESS], '127.0.0.1');
    assert.equal(span.attributes[SpanAttributes.SERVER_PORT], server.port);
    assert.equal(span.attributes[SpanAttributes.FINGERPRINT], s.first.report.fingerprint);
    assert.equal(span.attributes[SpanAttributes.CACHE_HIT], false);
    assert.equal(span.attributes[SpanAttributes.MRTD], mrtd);
    assert.equal(span.attributes[SpanAttributes.TCB_STATUS], outcome.report.tcbStatus);
    assert.equal(span.attributes[SpanAttributes.ERROR_CODE], undefined);

    await run(s, false);
    assert.equal(reattestSpans()[1]?.attributes[SpanAttributes.CACHE_HIT], true);
  });

  test('a failed re-attestation is a failed span carrying the outcome’s code', async () => {
    const s = await setup('reject');
    server.present(raTlsCredentials(authority));
    const outcome = await run(s, true);
    assert.ok(outcome.kind === 'failed');
    const [span] = reattestSpans();
    assert.equal(span?.attributes[SpanAttributes.ERROR_CODE], 'SERVER_CHANGED');
  });
});
