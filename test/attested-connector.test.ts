/**
 * AttestedConnector (src/connection/attested-connector.ts) without Postgres:
 * real TLS to a bare RA-TLS server on loopback, real DCAP verification under
 * the test root (docs/protocol.md §8). Pins what a pool relies on: a refused
 * or vanished server's socket is destroyed, verdicts are shared only where
 * they may be, a policy change mid-verification never admits under the new
 * policy, and every failure is a RaTlsError with its code.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { after, before, beforeEach, describe, test } from 'node:test';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { AttestationReport } from '../src/attest/report.js';
import {
  AttestedConnector,
  type AttestedConnectorOptions,
} from '../src/connection/attested-connector.js';
import { type ErrorCode, isRaTlsError, RaTlsError } from '../src/errors.js';
import { ClientIdentity } from '../src/identity/client-identity.js';
import { SpanAttributes, SpanNames } from '../src/telemetry/tracing.js';
import type { TestAuthority } from '../src/testing/authority/test-authority.js';
import { createRaTlsCertificate } from '../src/testing/ra-tls-certificate.js';
import { type GuestAgent, startGuestAgent } from '../src/testing/stack/guest-agent.js';
import type { DcapVerifier } from '../src/verification/dcap-verifier.js';
import type {
  RaTlsVerifier,
  VerificationResult,
  VerifyOptions,
} from '../src/verification/verifier.js';
import {
  authorityWithVerifier,
  ClientCertIssuer,
  CountingVerifier,
  raTlsCredentials,
  waitFor,
} from './pool-harness.js';
import { type RaTlsServer, startRaTlsServer } from './support/ra-tls-server.js';

let authority: TestAuthority;
let dcap: DcapVerifier;
let server: RaTlsServer;
let mrtd: string;
const connectors: AttestedConnector[] = [];

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
trace.setGlobalTracerProvider(provider);
beforeEach(() => exporter.reset());

before(async () => {
  ({ authority, mrtd, dcap } = await authorityWithVerifier('pg-ra-tls attested connector tests'));
  server = await startRaTlsServer(raTlsCredentials(authority), { requestCert: true });
});

after(async () => {
  for (const connector of connectors) connector.close();
  await server.close();
  await provider.shutdown();
});

const target = () => ({
  host: '127.0.0.1',
  port: server.port,
  connectTimeoutMs: 5000,
  handshakeTimeoutMs: 5000,
});

function connector(
  options: Partial<AttestedConnectorOptions> = {},
  sharing: 'process' | 'none' = 'none',
): AttestedConnector {
  const made = new AttestedConnector(
    {
      verifier: dcap,
      policy: { allowedMrtds: [mrtd] },
      presentClientCertificate: false,
      logger: () => {},
      ...options,
    },
    sharing,
  );
  connectors.push(made);
  return made;
}

function isCode(code: ErrorCode, message?: RegExp) {
  return (error: unknown) =>
    isRaTlsError(error) &&
    error.code === code &&
    (message === undefined || message.test(error.message));
}

/** A real verifier whose verify() first runs `before` (to slow it down or change the world). */
class HookedVerifier implements RaTlsVerifier {
  readonly name = 'hooked';
  constructor(
    readonly inner: RaTlsVerifier,
    readonly before: (options?: VerifyOptions) => Promise<void> | void,
  ) {}
  async verify(quote: Uint8Array, options?: VerifyOptions): Promise<VerificationResult> {
    await this.before(options);
    return this.inner.verify(quote, options);
  }
}

describe('AttestedConnector options', () => {
  for (const verifier of ['dcap', {}, { verify: 'yes' }]) {
    test(`verifier ${JSON.stringify(verifier)} is BAD_CONFIG naming the option`, () => {
      assert.throws(
        () =>
          new AttestedConnector({ verifier: verifier as never, presentClientCertificate: false }),
        (error: unknown) =>
          isCode(
            'BAD_CONFIG',
            /^verifier must be a RaTlsVerifier \(an object with verify\(quote\)\)/,
          )(error) && (error as RaTlsError).details?.option === 'verifier',
      );
    });
  }

  test('defaults: reattestEvery 5 min, verifyTimeout 30 s, policy version 0', () => {
    const made = connector();
    assert.equal(made.reattestEveryMs, 300_000);
    assert.equal(made.verifyTimeoutMs, 30_000);
    assert.equal(made.policyVersion, 0);
    assert.deepEqual(made.policy.allowedMrtds, [mrtd]);
  });

  test('durations are read from the options', () => {
    const made = connector({ reattestEvery: '2m', verifyTimeout: 1500 });
    assert.equal(made.reattestEveryMs, 120_000);
    assert.equal(made.verifyTimeoutMs, 1500);
  });

  test('a bad duration is BAD_CONFIG naming its option', () => {
    for (const option of ['reattestEvery', 'verifyTimeout'] as const) {
      assert.throws(
        () => connector({ [option]: 'soon' }),
        (error: unknown) =>
          isCode('BAD_CONFIG')(error) && (error as Error).message.includes(option),
      );
    }
  });

  test('the verifier’s warm-up starts at once; a failing warm-up decides nothing', async () => {
    let warmed = 0;
    connector({
      verifier: {
        name: 'warm',
        verify: (quote, options) => dcap.verify(quote, options),
        warmUp: async () => {
          warmed++;
        },
      },
    });
    assert.equal(warmed, 1);
    const throwing = connector({
      verifier: {
        name: 'throwing warm-up',
        verify: (quote, options) => dcap.verify(quote, options),
        warmUp: () => {
          throw new Error('no engine threads');
        },
      },
    });
    const rejecting = connector({
      verifier: {
        name: 'rejecting warm-up',
        verify: (quote, options) => dcap.verify(quote, options),
        warmUp: () => Promise.reject(new Error('no engine threads')),
      },
    });
    for (const made of [throwing, rejecting]) {
      const attested = await made.open(target());
      attested.socket.destroy();
      assert.equal(attested.report.mrtd, mrtd);
    }
  });

  test('policy warnings go to the logger once per policy object and logger', () => {
    const logged: string[] = [];
    const logger = (message: string) => logged.push(message);
    const weak = { allowedMrtds: [mrtd] };
    connector({ policy: weak, logger });
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /^pg-ra-tls: policy\.allowedMrtds is pinned without/);
    connector({ policy: weak, logger });
    assert.equal(logged.length, 1, 'the same policy and logger: said once');
    const other: string[] = [];
    connector({ policy: weak, logger: (message) => other.push(message) });
    assert.equal(other.length, 1, 'another logger hears it too');
    connector({ policy: { allowedMrtds: [mrtd] }, logger });
    assert.equal(logged.length, 2, 'another policy object is judged again');
    // No policy object to remember: every connector says it.
    connector({ policy: undefined, logger });
    connector({ policy: undefined, logger });
    assert.equal(logged.length, 4);
    assert.match(logged[3]!, /^pg-ra-tls: policy\.allowedMrtds is empty/);
    // null is no policy too: said every time, no WeakMap key error.
    connector({ policy: null as never, logger });
    connector({ policy: null as never, logger });
    assert.equal(logged.length, 6);
    assert.match(logged[5]!, /^pg-ra-tls: policy\.allowedMrtds is empty/);
  });

  test('a policy object judged without warnings warns once it is changed to need one', () => {
    const logged: string[] = [];
    const logger = (message: string) => logged.push(message);
    const pinned: { trustedKmsRoots: string[]; allowDebugMode?: boolean } = {
      trustedKmsRoots: ['ab'.repeat(32)],
    };
    connector({ policy: pinned, logger });
    assert.deepEqual(logged, [], 'nothing to say');
    pinned.allowDebugMode = true;
    connector({ policy: pinned, logger });
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /^pg-ra-tls: policy\.allowDebugMode is true/);
  });

  test('setPolicy validates, applies and counts', () => {
    const made = connector();
    const normalized = made.setPolicy({ allowedMrtds: ['22'.repeat(48)] });
    assert.equal(made.policy, normalized);
    assert.deepEqual(made.policy.allowedMrtds, ['22'.repeat(48)]);
    assert.equal(made.policyVersion, 1);
    assert.throws(() => made.setPolicy({ allowedMrtds: ['not hex'] }), isCode('BAD_CONFIG'));
    assert.equal(made.policyVersion, 1, 'a refused policy changes nothing');
    assert.deepEqual(made.policy.allowedMrtds, ['22'.repeat(48)]);
  });
});

describe('AttestedConnector.open', () => {
  test('returns the attested socket, its report and the certificate it is about', async () => {
    const at = Date.now();
    const made = connector({ now: () => new Date(at) });
    const attested = await made.open(target());
    try {
      assert.equal(attested.socket.destroyed, false);
      assert.equal(attested.cacheHit, false);
      assert.equal(attested.policyVersion, 0);
      assert.equal(attested.report.mrtd, mrtd);
      const probe = await made.probe(target());
      assert.equal(probe.fingerprint, attested.report.fingerprint);
      assert.deepEqual(attested.peerCertificateDer, probe.certificateDer);
      assert.deepEqual(attested.peerIssuersDer, probe.issuersDer);
      assert.equal(probe.at, at, 'the handshake time is the connector’s clock');
      const again = await made.open(target());
      again.socket.destroy();
      assert.equal(again.cacheHit, true);
      assert.equal(again.peerCertificateDer, attested.peerCertificateDer, 'one shared copy');
    } finally {
      attested.socket.destroy();
    }
  });

  test('a server the policy refuses: the error has its code and the socket is destroyed', async () => {
    const made = connector({ policy: { allowedMrtds: ['00'.repeat(48)] } });
    const before = server.connections;
    await assert.rejects(made.open(target()), isCode('MRTD_NOT_ALLOWED'));
    assert.equal(server.connections, before + 1);
    await waitFor(() => server.open === 0, 'the refused connection closed');
  });

  test('admit refuses a verified server: its error, and the socket is destroyed', async () => {
    const made = connector();
    const refusal = new RaTlsError('SERVER_CHANGED', 'pinned elsewhere');
    let seen: AttestationReport | undefined;
    await assert.rejects(
      made.open(target(), {
        admit: (report) => {
          seen = report;
          return refusal;
        },
      }),
      (error) => error === refusal,
    );
    assert.equal(seen?.mrtd, mrtd);
    await waitFor(() => server.open === 0, 'the refused connection closed');
    const admitted = await made.open(target(), { admit: () => undefined });
    admitted.socket.destroy();
  });

  test('a server that hangs up during attestation: CONNECTION_ENDED, at once', async () => {
    const made = connector({
      verifier: new HookedVerifier(dcap, async (options) => {
        server.hangUpAll();
        // Held until the connector gives up on the verdict.
        await new Promise<void>((resolve) =>
          options?.signal?.addEventListener('abort', () => resolve()),
        );
      }),
    });
    await assert.rejects(
      made.open(target()),
      isCode(
        'CONNECTION_ENDED',
        /^the server at 127\.0\.0\.1:\d+ closed the connection during attestation$/,
      ),
    );
  });

  test('a server that hangs up while a verifier that ignores aborts runs: CONNECTION_ENDED', async () => {
    const made = connector({
      verifier: new HookedVerifier(dcap, () => {
        server.hangUpAll();
        return new Promise((resolve) => setTimeout(resolve, 50));
      }),
    });
    await assert.rejects(made.open(target()), isCode('CONNECTION_ENDED'));
  });

  test('close() ends the attempts in flight with CONNECTION_ENDED', async () => {
    const made = connector({
      verifier: new HookedVerifier(dcap, (options) => {
        made.close();
        return new Promise<void>((resolve) =>
          options?.signal?.addEventListener('abort', () => resolve()),
        );
      }),
    });
    await assert.rejects(
      made.open(target()),
      isCode('CONNECTION_ENDED', /the connector has been closed/),
    );
  });

  test('presents the client certificate unless told not to', async () => {
    const client = createRaTlsCertificate({ subject: 'CN=connector test client' });
    const clientCertOverride = { key: client.privateKeyPem, cert: client.certificatePem };
    const presenting = connector({ presentClientCertificate: true, clientCertOverride });
    const dialed = await presenting.dial(target());
    dialed.socket.destroy();
    assert.ok(presenting.identity, 'an identity exists');
    const anonymous = connector({ clientCertOverride });
    const plain = await anonymous.dial(target());
    plain.socket.destroy();
  });
});

describe('AttestedConnector.verifyCertificate', () => {
  async function certificate(): Promise<{ der: Uint8Array; issuers: readonly Uint8Array[] }> {
    const probe = await connector().probe(target());
    return { der: probe.certificateDer, issuers: probe.issuersDer };
  }

  test('VERIFY_TIMEOUT after verifyTimeout, naming the certificate', async () => {
    const { der, issuers } = await certificate();
    const made = connector({
      verifyTimeout: 50,
      verifier: new HookedVerifier(
        dcap,
        (options) =>
          new Promise<void>((resolve) =>
            options?.signal?.addEventListener('abort', () => resolve()),
          ),
      ),
    });
    const fingerprint = createHash('sha256').update(der).digest('hex');
    await assert.rejects(made.verifyCertificate(der, undefined, issuers), (error: unknown) => {
      assert.ok(isRaTlsError(error, 'VERIFY_TIMEOUT'), String(error));
      // The certificate named by its fingerprint's first 16 hex digits, not all 64.
      assert.equal(
        error.message,
        `verifying the server certificate ${fingerprint.slice(0, 16)}… took longer than 50 ms ` +
          "(verifyTimeout); check the verifier's collateral service",
      );
      assert.deepEqual(error.details, { fingerprint });
      return true;
    });
  });

  test('an anonymous connector fetches no client certificate, even with an identity at hand', () => {
    const identity = new ClientIdentity({ clientCertOverride: { key: 'k', cert: 'c' } });
    let prefetched = 0;
    identity.prefetch = () => {
      prefetched++;
    };
    connector({
      clientIdentity: identity,
      presentClientCertificate: false,
    }).prefetchClientCertificate();
    assert.equal(prefetched, 0);
    connector({
      clientIdentity: identity,
      presentClientCertificate: true,
    }).prefetchClientCertificate();
    assert.equal(prefetched, 1, 'one that presents a certificate starts fetching it');
  });

  test('a verifier failing with a plain Error is QUOTE_INVALID with its cause', async () => {
    const { der, issuers } = await certificate();
    const cause = new Error('engine exploded');
    const made = connector({
      verifier: new HookedVerifier(dcap, () => {
        throw cause;
      }),
    });
    await assert.rejects(
      made.verifyCertificate(der, undefined, issuers),
      (error: unknown) =>
        isCode('QUOTE_INVALID', /^Verifier hooked rejected the quote: engine exploded$/)(error) &&
        (error as RaTlsError).cause === cause,
    );
  });

  test('a verifier whose result throws when read is QUOTE_INVALID naming the certificate', async () => {
    const { der, issuers } = await certificate();
    const cause = new TypeError('result exploded');
    const exploding: RaTlsVerifier = {
      name: 'exploding',
      async verify() {
        return {
          get mrtd(): string {
            throw cause;
          },
        } as unknown as VerificationResult;
      },
    };
    await assert.rejects(
      connector({ verifier: exploding }).verifyCertificate(der, undefined, issuers),
      (error: unknown) => {
        assert.ok(
          isCode('QUOTE_INVALID', /^verifying the server certificate failed: /)(error),
          String(error),
        );
        assert.equal((error as RaTlsError).cause, cause);
        assert.match(String((error as RaTlsError).details?.fingerprint), /^[0-9a-f]{64}$/);
        return true;
      },
    );
  });

  test('open() leaves no listener of its own on the socket it returns', async () => {
    const made = connector();
    const dialed = await made.dial(target());
    const plain = dialed.socket.listenerCount('close');
    dialed.socket.destroy();
    const attested = await made.open(target());
    try {
      assert.equal(attested.socket.listenerCount('close'), plain);
    } finally {
      attested.socket.destroy();
    }
  });

  test('a policy change while verifying: judged again under the new policy, never admitted under it', async () => {
    const { der, issuers } = await certificate();
    let changes = 0;
    const made: AttestedConnector = connector({
      verifier: new HookedVerifier(dcap, () => {
        if (changes++ === 0) made.setPolicy({ allowedMrtds: ['00'.repeat(48)] });
      }),
    });
    await assert.rejects(
      made.verifyCertificate(der, undefined, issuers),
      isCode('MRTD_NOT_ALLOWED'),
    );
    assert.equal(
      changes,
      2,
      'the verdict of the old policy was discarded and the quote verified again',
    );
  });

  test('a policy that keeps changing: BAD_CONFIG after three tries', async () => {
    const { der, issuers } = await certificate();
    let calls = 0;
    const made: AttestedConnector = connector({
      verifier: new HookedVerifier(dcap, () => {
        calls++;
        // Each a new policy by content, so no verdict of another is reused.
        made.setPolicy({ allowedMrtds: [mrtd, calls.toString(16).padStart(96, '0')] });
      }),
    });
    await assert.rejects(
      made.verifyCertificate(der, undefined, issuers),
      (error: unknown) =>
        isCode(
          'BAD_CONFIG',
          /^the policy changed 3 times while [0-9a-f]{16}… was being verified/,
        )(error) && /^[0-9a-f]{64}$/.test(String((error as RaTlsError).details?.fingerprint)),
    );
    assert.equal(calls, 3);
  });

  test('a caller’s abort rejects with its reason', async () => {
    const { der, issuers } = await certificate();
    const gaveUp = new AbortController();
    const made = connector({
      verifier: new HookedVerifier(dcap, () => gaveUp.abort(new RaTlsError('POOL_ENDED', 'ended'))),
    });
    await assert.rejects(made.verifyCertificate(der, gaveUp.signal, issuers), isCode('POOL_ENDED'));
  });
});

describe('AttestedConnector verdict sharing', () => {
  test('process sharing: connectors of one verifier, clock and policy share verdicts', async () => {
    const verifier = new CountingVerifier(dcap);
    const now = () => new Date();
    const a = connector({ verifier, now }, 'process');
    const b = connector({ verifier, now }, 'process');
    const first = await a.open(target());
    first.socket.destroy();
    const second = await b.open(target());
    second.socket.destroy();
    assert.equal(second.cacheHit, true);
    assert.equal(verifier.calls, 1);

    const otherPolicy = connector(
      { verifier, now, policy: { allowedMrtds: [mrtd, '33'.repeat(48)] } },
      'process',
    );
    const third = await otherPolicy.open(target());
    third.socket.destroy();
    assert.equal(third.cacheHit, false, 'another policy judges again');
    const otherClock = connector({ verifier, now: () => new Date() }, 'process');
    const fourth = await otherClock.open(target());
    fourth.socket.destroy();
    assert.equal(fourth.cacheHit, false, 'another clock judges again');
    const own = connector({ verifier, now }, 'none');
    const fifth = await own.open(target());
    fifth.socket.destroy();
    assert.equal(fifth.cacheHit, false, "'none' verifies for itself");
    assert.equal(verifier.calls, 4);
  });

  test('a changed policy moves a connector to the verdicts of that policy', async () => {
    const verifier = new CountingVerifier(dcap);
    const now = () => new Date();
    const made = connector({ verifier, now }, 'process');
    (await made.open(target())).socket.destroy();
    made.setPolicy({ allowedMrtds: ['44'.repeat(48)] });
    await assert.rejects(made.open(target()), isCode('MRTD_NOT_ALLOWED'));
    assert.equal(verifier.calls, 2);
  });
});

describe('AttestedConnector dials', () => {
  test('the target’s servername is the handshake’s SNI; none without one', async () => {
    const made = connector();
    // Each handshake is found by its client port (other tests' late handshakes may land
    // in between); each socket stays open until the server has finished its side.
    const sniOf = async (socket: { localPort?: number | undefined }) => {
      const port = socket.localPort!;
      await waitFor(() => server.servernameByClientPort.has(port), `the handshake from ${port}`);
      return server.servernameByClientPort.get(port);
    };
    const named = await made.open({ ...target(), servername: 'db.cluster.example' });
    assert.equal(await sniOf(named.socket), 'db.cluster.example');
    named.socket.destroy();
    const bare = await made.open(target());
    assert.equal(await sniOf(bare.socket), false);
    bare.socket.destroy();
  });
});

describe('AttestedConnector leaves nothing on a caller’s signal', () => {
  test('open, dial, probe and verifyCertificate detach from the signal they were given', async () => {
    const caller = new AbortController();
    const made = connector();
    const attached = () => getEventListeners(caller.signal, 'abort').length;
    for (let round = 0; round < 3; round++) {
      const opened = await made.open(target(), { signal: caller.signal });
      opened.socket.destroy();
      assert.equal(attached(), 0, 'open');
      const dialed = await made.dial(target(), caller.signal);
      dialed.socket.destroy();
      assert.equal(attached(), 0, 'dial');
      await made.probe(target(), caller.signal);
      assert.equal(attached(), 0, 'probe');
      await made.verifyCertificate(dialed.peerCertificateDer, caller.signal, dialed.peerIssuersDer);
      assert.equal(attached(), 0, 'verifyCertificate');
    }
  });
});

describe('the pg_ra_tls.verify span', () => {
  test('names the certificate and the verifier, and says whether the cache answered', async () => {
    const made = connector();
    const first = await made.open(target());
    first.socket.destroy();
    const second = await made.open(target());
    second.socket.destroy();
    const spans = exporter.getFinishedSpans().filter((span) => span.name === SpanNames.VERIFY);
    assert.equal(spans.length, 2);
    for (const span of spans) {
      assert.equal(span.attributes[SpanAttributes.FINGERPRINT], first.report.fingerprint);
      assert.equal(span.attributes[SpanAttributes.VERIFIER], dcap.name);
      assert.equal(span.attributes[SpanAttributes.MRTD], mrtd);
    }
    assert.deepEqual(
      spans.map((span) => span.attributes[SpanAttributes.CACHE_HIT]),
      [false, true],
    );
  });

  test('a refused verification’s span still names the certificate and the verifier', async () => {
    const accepted = await connector().open(target());
    accepted.socket.destroy();
    const { fingerprint } = accepted.report;
    exporter.reset();
    const made = connector({ policy: { allowedMrtds: ['44'.repeat(48)] } });
    await assert.rejects(made.open(target()), isCode('MRTD_NOT_ALLOWED'));
    const [span] = exporter.getFinishedSpans().filter((one) => one.name === SpanNames.VERIFY);
    assert.ok(span);
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.equal(span.attributes[SpanAttributes.FINGERPRINT], fingerprint);
    assert.equal(span.attributes[SpanAttributes.VERIFIER], dcap.name);
    assert.equal(
      span.attributes[SpanAttributes.CACHE_HIT],
      undefined,
      'no verdict, no cache answer',
    );
  });
});

describe('AttestedConnector client identity (a real guest agent)', () => {
  let agent: GuestAgent;
  before(async () => {
    agent = await startGuestAgent({ issuer: new ClientCertIssuer(authority) });
  });
  after(() => agent.close());

  test('dials present the guest agent’s certificate; close() closes the identity it created', async () => {
    const made = connector({ presentClientCertificate: true, dstackEndpoint: agent.endpoint });
    const subjects = server.clientSubjects.length;
    const attested = await made.open(target());
    attested.socket.destroy();
    await waitFor(() => server.clientSubjects.length > subjects, 'the handshake completed');
    assert.match(server.clientSubjects.at(-1)!, /CN=pg-ra-tls client/);
    made.close();
    await assert.rejects(made.identity.get(), isCode('CLIENT_CERT_UNAVAILABLE'));
  });

  test('clientCertLifetime reaches the identity the connector creates', async () => {
    const issuer = new ClientCertIssuer(authority);
    const own = await startGuestAgent({ issuer });
    try {
      const made = connector({
        presentClientCertificate: true,
        dstackEndpoint: own.endpoint,
        clientCertLifetime: '10m',
      });
      const asked = Date.now();
      (await made.open(target())).socket.destroy();
      const notAfter = issuer.requests[0]?.notAfter;
      assert.ok(notAfter !== undefined, 'GetTlsKey named an expiry');
      const lifetime = notAfter * 1000 - asked;
      assert.ok(
        lifetime > 9 * 60_000 && lifetime <= 10 * 60_000 + 5_000,
        `lifetime ${lifetime} ms`,
      );
    } finally {
      await own.close();
    }
  });

  test('a clientCertOverride is presented, and no guest agent is asked', async () => {
    const override = raTlsCredentials(authority, {}, {}, 'CN=override client');
    const made = connector({
      presentClientCertificate: true,
      clientCertOverride: { key: override.key, cert: override.cert },
      dstackEndpoint: 'http://127.0.0.1:9',
    });
    const before = server.clientSubjects.length;
    const opened = await made.open(target());
    await waitFor(() => server.clientSubjects.length > before, 'the handshake');
    opened.socket.destroy();
    assert.match(server.clientSubjects.at(-1)!, /CN=override client/);
  });

  test('a shared identity outlives the connector', async () => {
    const shared = new ClientIdentity({ dstackEndpoint: agent.endpoint });
    try {
      const made = connector({ presentClientCertificate: true, clientIdentity: shared });
      assert.equal(made.identity, shared);
      made.close();
      assert.ok((await shared.get()).cert.includes('BEGIN CERTIFICATE'));
    } finally {
      shared.close();
    }
  });
});

describe('AttestedConnector under load', () => {
  test('more than ten dials in flight on one connector raise no MaxListenersExceededWarning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const made = connector();
      const opened = await Promise.all(Array.from({ length: 12 }, () => made.open(target())));
      for (const attested of opened) attested.socket.destroy();
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(
        warnings.filter((name) => name === 'MaxListenersExceededWarning'),
        [],
      );
    } finally {
      process.off('warning', onWarning);
    }
  });
});
