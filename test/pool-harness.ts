/**
 * The attested stack the pool tests run against: a real Postgres provisioned
 * like a teesql cluster, a teesql-like sidecar presenting RA-TLS certificates
 * whose quotes come from the DCAP test authority, and a dstack guest agent
 * issuing the client's RA-TLS certificates. Everything verifies with the real
 * pure-JS DCAP engine under the test root (docs/protocol.md §8).
 */
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { expectedReportData } from '../src/evidence/binding.js';
import { normalizePolicy } from '../src/policy/policy.js';
import {
  createTestAuthority,
  type IssueQuoteOptions,
  type TestAuthority,
} from '../src/testing/authority/test-authority.js';
import { createRaTlsCertificate, generateRaTlsKeyPair } from '../src/testing/ra-tls-certificate.js';
import {
  type GuestAgent,
  startGuestAgent,
  type TlsKeyIssuer,
  type TlsKeyRequest,
} from '../src/testing/stack/guest-agent.js';
import { type LocalPostgres, startPostgres } from '../src/testing/stack/postgres.js';
import {
  type Sidecar,
  type SidecarCredentials,
  startSidecar,
} from '../src/testing/stack/sidecar.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';
import type {
  RaTlsVerifier,
  VerificationResult,
  VerifyOptions,
} from '../src/verification/verifier.js';

/** A verifier that counts its calls (a real DcapVerifier underneath). */
export class CountingVerifier implements RaTlsVerifier {
  readonly name: string;
  calls = 0;
  constructor(readonly inner: RaTlsVerifier) {
    this.name = inner.name;
  }
  verify(quote: Uint8Array, options?: VerifyOptions): Promise<VerificationResult> {
    this.calls++;
    return this.inner.verify(quote, options);
  }
}

/**
 * The real verifier behind a gate the test opens: `hold()` makes later calls
 * wait (honouring their abort signal) until `open()` (`passNewCalls()` lets
 * later ones through while those keep waiting); `entered` counts calls, and
 * `nextCall()` settles when the next one starts.
 */
export class GatedVerifier implements RaTlsVerifier {
  readonly name = 'gated';
  entered = 0;
  #gate: Promise<void> | undefined;
  #open: () => void = () => {};
  #callWaiters: (() => void)[] = [];
  constructor(readonly inner: RaTlsVerifier) {}
  hold(): void {
    this.#gate = new Promise((resolve) => {
      this.#open = resolve;
    });
  }
  open(): void {
    this.#gate = undefined;
    this.#open();
  }
  /** Calls from now on pass; the ones already held wait for {@link open}. */
  passNewCalls(): void {
    this.#gate = undefined;
  }
  nextCall(): Promise<void> {
    return new Promise((resolve) => this.#callWaiters.push(resolve));
  }
  async verify(quote: Uint8Array, options?: VerifyOptions): Promise<VerificationResult> {
    this.entered++;
    for (const started of this.#callWaiters.splice(0)) started();
    const gate = this.#gate;
    if (gate !== undefined) {
      await new Promise<void>((resolve, reject) => {
        const signal = options?.signal;
        const onAbort = () => reject(signal?.reason);
        signal?.addEventListener('abort', onAbort, { once: true });
        gate.then(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
    return this.inner.verify(quote, options);
  }
}

/**
 * A test authority (seeded, so its certificates are the same every run), the
 * MRTD its quotes carry, and a JS-engine DCAP verifier trusting its root.
 */
export async function authorityWithVerifier(
  seed: string,
): Promise<{ authority: TestAuthority; mrtd: string; dcap: DcapVerifier }> {
  const authority = await createTestAuthority({ seed });
  const dcap = new DcapVerifier({
    engine: 'js',
    rootCa: authority.rootCaDer,
    collateral: authority.collateral(),
    logger: () => {},
  });
  return { authority, mrtd: authority.describe().quoteDefaults.mrtd, dcap };
}

/** An RA-TLS key and certificate whose quote binds the key, made by `authority`. */
export function raTlsCredentials(
  authority: TestAuthority,
  quote: IssueQuoteOptions = {},
  validity: { notBefore?: Date; notAfter?: Date } = {},
  subject = 'CN=teesql sidecar',
): SidecarCredentials {
  const keyPair = generateRaTlsKeyPair();
  const certificate = createRaTlsCertificate({
    privateKey: keyPair.privateKeyPem,
    subject,
    attestation: {
      quote: authority.issueQuote({ reportData: expectedReportData(keyPair.spki), ...quote }),
    },
    ...validity,
  });
  return { key: certificate.privateKeyPem, cert: certificate.certificatePem };
}

/** The guest agent's issuer: RA-TLS client certificates from the test authority. */
export class ClientCertIssuer implements TlsKeyIssuer {
  lifetimeMs = 3650 * 86_400_000;
  readonly requests: TlsKeyRequest[] = [];
  constructor(readonly authority: TestAuthority) {}

  async issueTlsKey(request: TlsKeyRequest) {
    this.requests.push(request);
    // Long enough that concurrent cold connects overlap this one call.
    await new Promise((resolve) => setTimeout(resolve, 20));
    const credentials = raTlsCredentials(
      this.authority,
      {},
      {
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + this.lifetimeMs),
      },
      'CN=pg-ra-tls client',
    );
    return { key: credentials.key, certificateChain: [credentials.cert] };
  }

  async getQuote(): Promise<never> {
    throw new Error('not used by these tests');
  }
}

/** A running attested stack. */
export interface PoolStack {
  readonly authority: TestAuthority;
  /** A DcapVerifier (engine 'js', test root, fixed collateral) that counts its calls. */
  readonly verifier: CountingVerifier;
  readonly postgres: LocalPostgres;
  readonly sidecar: Sidecar;
  readonly agent: GuestAgent;
  readonly issuer: ClientCertIssuer;
  /** DER of every client certificate the sidecar verified, in order. */
  readonly clientCertificates: Uint8Array[];
  /** What the sidecar presents while not misbehaving; replace to rotate. */
  serverCredentials: SidecarCredentials;
  /** MRTD of the authority's quotes. */
  readonly mrtd: string;
  /** `postgres://teesql_readwrite:<secret>@127.0.0.1:<sidecar port>/teesql`. */
  readonly dsn: string;
  /** A fresh test verifier (its own call counter). */
  newVerifier(): CountingVerifier;
  close(): Promise<void>;
}

/** Starts Postgres, the guest agent and an RA-TLS sidecar in front of Postgres. */
export async function startPoolStack(): Promise<PoolStack> {
  const authority = await createTestAuthority({ seed: 'pg-ra-tls pool tests' });
  const collateral = authority.collateral();
  const newVerifier = () =>
    new CountingVerifier(
      new DcapVerifier({
        engine: 'js',
        rootCa: authority.rootCaDer,
        collateral,
        logger: () => {},
      }),
    );
  const sidecarVerifier = newVerifier();
  const postgres = await startPostgres();
  const issuer = new ClientCertIssuer(authority);
  const agent = await startGuestAgent({ issuer });
  const clientPolicy = normalizePolicy({});
  const stack = {
    authority,
    verifier: newVerifier(),
    postgres,
    agent,
    issuer,
    clientCertificates: [] as Uint8Array[],
    serverCredentials: raTlsCredentials(authority),
    mrtd: authority.describe().quoteDefaults.mrtd,
    newVerifier,
  } as Omit<PoolStack, 'sidecar' | 'dsn' | 'close'> & { serverCredentials: SidecarCredentials };
  const sidecar = await startSidecar({
    serverCredentials: () => stack.serverCredentials,
    // Mutual RA-TLS: the sidecar attests the client certificate too (docs/protocol.md §5).
    verifyClient: async (der) => {
      stack.clientCertificates.push(der);
      await attestCertificate(der, { verifier: sidecarVerifier, policy: clientPolicy });
    },
    upstream: { host: postgres.host, port: postgres.port },
    handshakeTimeout: 5000,
  });
  const url = new URL(postgres.databaseUrl('teesql_readwrite'));
  url.host = `127.0.0.1:${sidecar.port}`;
  return Object.assign(stack, {
    sidecar,
    dsn: url.toString(),
    close: async () => {
      await sidecar.close();
      await agent.close();
      await postgres.stop();
    },
  });
}

/** Polls until `condition` holds (at most ~5 s). */
export async function waitFor(condition: () => boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  if (!condition()) throw new Error(`${what} not reached`);
}

/**
 * Options that reach `stack` under its verifier, guest agent and MRTD pin;
 * `extra` overrides any of them. For pools and standalone clients alike.
 */
export function stackOptions<T extends object>(
  stack: PoolStack,
  extra: T = {} as T,
): {
  connectionString: string;
  verifier: RaTlsVerifier;
  dstackEndpoint: string;
  policy: { allowedMrtds: string[] };
} & T {
  return {
    connectionString: stack.dsn,
    verifier: stack.verifier,
    dstackEndpoint: stack.agent.endpoint,
    policy: { allowedMrtds: [stack.mrtd] },
    ...extra,
  };
}

/** A clock the test moves forward (for `now`), starting at the real time. */
export function testClock() {
  let offset = 0;
  return {
    now: () => new Date(Date.now() + offset),
    advance: (ms: number) => {
      offset += ms;
    },
  };
}
