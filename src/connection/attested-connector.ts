import { setMaxListeners } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { attestCertificate } from '../attest/attest-certificate.js';
import type { AttestationReport } from '../attest/report.js';
import type { Endpoint } from '../config/connection-settings.js';
import { type DialedSocket, dialTls } from '../dial/dial-tls.js';
import { describeCause, RaTlsError } from '../errors.js';
import { type ClientCertificate, ClientIdentity } from '../identity/client-identity.js';
import { normalizePolicy, policyWarnings } from '../policy/policy.js';
import type { NormalizedPolicy, Policy } from '../policy/types.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import { sha256, toHex } from '../util/bytes.js';
import { Scope } from '../util/deadline.js';
import { parseDuration, parseTimeout } from '../util/duration.js';
import { preloadDependencies } from '../util/lazy-require.js';
import type { RaTlsVerifier } from '../verification/verifier.js';
import { sharedCertificates } from './shared-certificates.js';
import { sharedVerifier } from './shared-defaults.js';
import { type CachedVerification, VerificationCache } from './verification-cache.js';

/** How attestation is done: the verifier, the policy, caching and timeouts, and the client identity. */
export interface AttestationOptions {
  /**
   * The quote verifier. Default: one process-wide DcapVerifier against Intel's
   * root and PCS (never a test root: those are only accepted when passed here).
   */
  readonly verifier?: RaTlsVerifier;
  /** What the server must be; see {@link Policy}. */
  readonly policy?: Policy;
  /** How long a verified report is reused before the server is re-verified. Default `"5m"`. */
  readonly reattestEvery?: number | string;
  /** Time allowed for one certificate verification. Default `"30s"`. */
  readonly verifyTimeout?: number | string;
  /** Verification time and cache clock. Default: the current time. */
  readonly now?: () => Date;
  /** Guest agent endpoint for the client certificate; see {@link ClientIdentity}. */
  readonly dstackEndpoint?: string;
  /** A fixed client key/certificate instead of the guest agent's. */
  readonly clientCertOverride?: ClientCertificate;
  /** A client identity to share (its lifetime stays the caller's). */
  readonly clientIdentity?: ClientIdentity;
  /** Validity of the client certificates requested from the guest agent. Default `"1h"`. */
  readonly clientCertLifetime?: number | string;
  /**
   * Receives policy warnings (e.g. nothing pinned, or app-id pinned without the
   * boot chain or a KMS root), once per policy object. Default `console.warn`.
   */
  readonly logger?: (message: string) => void;
}

/** Options of {@link AttestedConnector}. */
export interface AttestedConnectorOptions extends AttestationOptions {
  /**
   * `false`: dial without a client certificate and ask no guest agent, for a
   * check that never logs in. Over TLS 1.3 the server's certificate arrives
   * before the server judges ours, so even the sidecar, which requires one for
   * a session (docs/protocol.md §5), can be verified from outside a CVM.
   * Default true.
   */
  readonly presentClientCertificate?: boolean;
}

/** AttestationOptions a shared connector owns (the connector's own options). */
export const CONNECTOR_OWNED = [
  'verifier',
  'policy',
  'reattestEvery',
  'verifyTimeout',
  'now',
  'dstackEndpoint',
  'clientCertOverride',
  'clientIdentity',
  'clientCertLifetime',
  'logger',
] as const satisfies readonly (keyof AttestationOptions)[];

/** One server endpoint and the transport timeouts to reach it (see ConnectionSettings.endpoint). */
export type EndpointTarget = Endpoint;

/** A TLS socket whose server certificate passed attestation and policy. */
export interface AttestedSocket {
  readonly socket: TLSSocket;
  readonly report: AttestationReport;
  readonly cacheHit: boolean;
  /** DER of the server leaf certificate the report is about. */
  readonly peerCertificateDer: Uint8Array;
  /** DER of the certificates the server sent after its leaf in the same handshake. */
  readonly peerIssuersDer: readonly Uint8Array[];
  /** The {@link AttestedConnector.policyVersion} the report was judged under. */
  readonly policyVersion: number;
}

/** A verified certificate and the policy version its verdict was reached under. */
export interface PolicyVerification extends CachedVerification {
  /**
   * The {@link AttestedConnector.policyVersion} in force when the verification
   * this verdict comes from started; always the current one when returned.
   */
  readonly policyVersion: number;
}

/** A certificate seen on a fresh handshake. */
export interface ProbeResult {
  readonly fingerprint: string;
  readonly certificateDer: Uint8Array;
  /** The certificates sent after it in the same handshake. */
  readonly issuersDer: readonly Uint8Array[];
  /** When the handshake completed (ms since epoch). */
  readonly at: number;
}

/** Options of {@link AttestedConnector.open}. */
export interface OpenOptions {
  readonly signal?: AbortSignal;
  /**
   * Called with the verified report before the socket is returned; an error
   * returned refuses the server (used by the pool for certificate pinning).
   */
  readonly admit?: (report: AttestationReport) => RaTlsError | undefined;
}

const DEFAULT_REATTEST_EVERY = '5m';
const DEFAULT_VERIFY_TIMEOUT = '30s';
/** Policy changes tolerated during one verification before giving up (each forces a rerun). */
const MAX_POLICY_RERUNS = 3;

/**
 * Opens attested TLS connections: client identity → TLS dial → attestation of
 * the captured leaf (docs/protocol.md §1–3, via attestCertificate) under a timeout,
 * with a per-fingerprint verification cache. The socket is returned only after
 * success; on any failure it is destroyed. Shared by clients of one pool.
 */
export class AttestedConnector {
  readonly verifier: RaTlsVerifier;
  readonly reattestEveryMs: number;
  readonly verifyTimeoutMs: number;
  readonly cache: VerificationCache;
  readonly #identityOptions: AttestationOptions;
  readonly #ownsIdentity: boolean;
  readonly #anonymous: boolean;
  #identity: ClientIdentity | undefined;
  readonly #now: () => Date;
  readonly #lifetime = new AbortController();
  readonly #logger: (message: string) => void;
  #policy: NormalizedPolicy;
  /** The policy's content as a cache scope: equal policies share verdicts. */
  #policyKey: string;
  #policyVersion = 0;

  /**
   * @param sharing `'process'` (default): verdicts are shared with every
   *   connector of the same verifier, clock and policy; `'none'`: this
   *   connector verifies for itself (one-shot checks that promise to verify now).
   */
  constructor(options: AttestedConnectorOptions, sharing: 'process' | 'none' = 'process') {
    const verifier = options.verifier ?? sharedVerifier();
    if (
      verifier === null ||
      typeof verifier !== 'object' ||
      typeof verifier.verify !== 'function'
    ) {
      throw new RaTlsError(
        'BAD_CONFIG',
        'verifier must be a RaTlsVerifier (an object with verify(quote)), e.g. new DcapVerifier()',
        { details: { option: 'verifier' } },
      );
    }
    this.verifier = verifier;
    // Every dial and verification in flight listens on the lifetime signal
    // until it settles (and then detaches): a busy pool legitimately has more
    // than Node's default of 10 at once.
    setMaxListeners(0, this.#lifetime.signal);
    startWarmUp(verifier);
    // The parsers the first verification needs load while its handshake is in flight.
    preloadDependencies();
    this.#logger = options.logger ?? console.warn;
    this.#policy = this.#judgeWith(options.policy);
    this.#policyKey = JSON.stringify(this.#policy);
    this.reattestEveryMs = parseDuration(
      options.reattestEvery ?? DEFAULT_REATTEST_EVERY,
      'reattestEvery',
    );
    this.verifyTimeoutMs = parseTimeout(
      options.verifyTimeout ?? DEFAULT_VERIFY_TIMEOUT,
      'verifyTimeout',
    );
    this.#now = options.now ?? realClock;
    // Verdicts are shared process wide with every connector of the same
    // verifier object, clock and policy (by content): a new pool to a known
    // server does not verify again. A test root verifier is another object,
    // so its verdicts never reach a pool of a real one, and a policy change
    // moves this connector to another scope at once.
    const shared =
      sharing === 'process'
        ? `${identityOf(verifier)}|${identityOf(this.#now)}`
        : `connector ${identityOf(this)}`;
    this.cache = new VerificationCache({
      maxAgeMs: this.reattestEveryMs,
      now: () => this.#now().getTime(),
      scope: () => `${shared}|${this.#policyKey}`,
    });
    this.#identityOptions = options;
    this.#ownsIdentity = options.clientIdentity === undefined;
    this.#anonymous = options.presentClientCertificate === false;
    // Created now, so that a missing guest agent is a configuration error here.
    this.#identity = this.#anonymous ? options.clientIdentity : this.#createIdentity();
  }

  /**
   * The client identity whose certificate dials present (an anonymous
   * connector presents none, and creates it only when asked).
   */
  get identity(): ClientIdentity {
    this.#identity ??= this.#createIdentity();
    return this.#identity;
  }

  /** The policy currently applied. */
  get policy(): NormalizedPolicy {
    return this.#policy;
  }

  /** Increases on every {@link setPolicy}; connections judged under an older version are re-judged. */
  get policyVersion(): number {
    return this.#policyVersion;
  }

  /** The clock, ms since epoch. */
  now(): number {
    return this.#now().getTime();
  }

  /**
   * Replaces the policy (validated first). Verdicts reached under another
   * policy are not reused from then on: the cache scope names the policy.
   */
  setPolicy(policy: Policy | undefined): NormalizedPolicy {
    const normalized = this.#judgeWith(policy);
    this.#policy = normalized;
    this.#policyKey = JSON.stringify(normalized);
    this.#policyVersion++;
    return normalized;
  }

  /**
   * Verifies a server leaf certificate (cache-aware, coalesced per fingerprint)
   * in a `pg_ra_tls.verify` span. VERIFY_TIMEOUT after `verifyTimeout`.
   *
   * The verdict is always one reached under the policy in force when this
   * returns: a verification that started before a {@link setPolicy} judged
   * under the old policy, so it is run again under the new one (the cache
   * scope names the policy, so the rerun never reuses a verdict of the old one).
   */
  verifyCertificate(
    der: Uint8Array,
    signal?: AbortSignal,
    issuers: readonly Uint8Array[] = [],
  ): Promise<PolicyVerification> {
    const fingerprint = toHex(sha256(der));
    return withSpan(
      SpanNames.VERIFY,
      { [SpanAttributes.FINGERPRINT]: fingerprint, [SpanAttributes.VERIFIER]: this.verifier.name },
      async (span) => {
        const scope = new Scope(signal);
        try {
          for (let attempt = 1; ; attempt++) {
            // The cache reads its scope (which names the policy) in this same
            // turn, so whatever this call gets (a cached report, a run in
            // flight, a new run) was reached under the policy read here.
            const policyVersion = this.#policyVersion;
            const policy = this.#policy;
            const result = await scope.race(
              this.cache.verify(
                fingerprint,
                (runSignal) => this.#attest(der, issuers, fingerprint, policy, runSignal),
                scope.signal,
              ),
            );
            if (policyVersion === this.#policyVersion) {
              span.setAttribute(SpanAttributes.CACHE_HIT, result.cacheHit);
              setAttributes(span, reportAttributes(result.report));
              return { ...result, policyVersion };
            }
            if (attempt >= MAX_POLICY_RERUNS) {
              throw new RaTlsError(
                'BAD_CONFIG',
                `the policy changed ${attempt} times while ${fingerprint.slice(0, 16)}… was being ` +
                  'verified; no verdict under the current policy: retry once updates settle',
                { details: { fingerprint } },
              );
            }
          }
        } finally {
          scope.dispose();
        }
      },
    );
  }

  /** Dials `target` presenting the client certificate; no attestation. */
  async dial(target: EndpointTarget, signal?: AbortSignal): Promise<DialedSocket> {
    const scope = new Scope(this.#lifetime.signal, signal);
    try {
      const clientCertificate = this.#anonymous ? undefined : await scope.race(this.identity.get());
      return await dialTls({
        host: target.host,
        port: target.port,
        // dialTls reads an absent servername or certificate as not given.
        servername: target.servername,
        clientCertificate,
        connectTimeoutMs: target.connectTimeoutMs,
        handshakeTimeoutMs: target.handshakeTimeoutMs,
        signal: scope.signal,
      });
    } finally {
      scope.dispose();
    }
  }

  /** A fresh handshake to learn which certificate the server presents now; the socket is closed. */
  async probe(target: EndpointTarget, signal?: AbortSignal): Promise<ProbeResult> {
    const { socket, peerCertificateDer, peerIssuersDer } = await this.dial(target, signal);
    socket.on('error', () => {});
    socket.destroy();
    return {
      fingerprint: toHex(sha256(peerCertificateDer)),
      certificateDer: peerCertificateDer,
      issuersDer: peerIssuersDer,
      at: this.now(),
    };
  }

  /**
   * Dials and attests `target`. The returned socket has not carried a byte of
   * Postgres yet; it keeps a no-op 'error' listener so an error before the new
   * owner attaches its own cannot crash the process.
   */
  async open(target: EndpointTarget, options: OpenOptions = {}): Promise<AttestedSocket> {
    const { socket, peerCertificateDer, peerIssuersDer } = await this.dial(target, options.signal);
    // Watch the socket while it waits for the verdict: a server that hangs up
    // ends the attempt at once instead of after the verification.
    const scope = new Scope(options.signal);
    const ignoreError = () => {};
    const onClose = () =>
      scope.abort(
        new RaTlsError(
          'CONNECTION_ENDED',
          `the server at ${target.host}:${target.port} closed the connection during attestation`,
        ),
      );
    socket.on('error', ignoreError);
    socket.once('close', onClose);
    try {
      const { report, cacheHit, policyVersion } = await this.verifyCertificate(
        peerCertificateDer,
        scope.signal,
        peerIssuersDer,
      );
      const refused = options.admit?.(report);
      if (refused !== undefined) throw refused;
      if (socket.destroyed) {
        throw scope.signal.aborted
          ? scope.signal.reason
          : new RaTlsError(
              'CONNECTION_ENDED',
              `the server at ${target.host}:${target.port} closed the connection during attestation`,
            );
      }
      // The connection keeps its certificate for re-attestation: the process's copy.
      const shared = sharedCertificates(report.fingerprint, peerCertificateDer, peerIssuersDer);
      return {
        socket,
        report,
        cacheHit,
        peerCertificateDer: shared.der,
        peerIssuersDer: shared.issuers,
        policyVersion,
      };
    } catch (error) {
      socket.destroy();
      throw error;
    } finally {
      socket.off('close', onClose);
      scope.dispose();
    }
  }

  /**
   * Starts obtaining the client certificate in the background, so that the
   * first dial does not wait for the guest agent: called by a pool once it is
   * fully constructed (close() abandons the call). An anonymous connector
   * presents no certificate and fetches none.
   */
  prefetchClientCertificate(): void {
    if (!this.#anonymous) this.identity.prefetch();
  }

  /** Cancels pending dials and verifications and closes the identity if this connector created it. */
  close(reason?: RaTlsError): void {
    this.#lifetime.abort(
      reason ?? new RaTlsError('CONNECTION_ENDED', 'the connector has been closed'),
    );
    if (this.#ownsIdentity) this.#identity?.close();
  }

  #createIdentity(): ClientIdentity {
    const options = this.#identityOptions;
    return (
      options.clientIdentity ??
      // ClientIdentity reads an undefined option as not given (its default).
      new ClientIdentity({
        dstackEndpoint: options.dstackEndpoint,
        clientCertOverride: options.clientCertOverride,
        lifetime: options.clientCertLifetime,
      })
    );
  }

  /**
   * Validates a policy and says out loud what it lets through (policyWarnings),
   * once per policy object and logger: pools, verifyServer calls and
   * re-judgements sharing one policy do not repeat the warning until it is ignored.
   */
  #judgeWith(policy: Policy | undefined): NormalizedPolicy {
    const normalized = normalizePolicy(policy);
    const warnings = policyWarnings(normalized);
    if (warnings.length > 0 && firstWarningFor(policy, this.#logger)) {
      for (const warning of warnings) this.#logger(`pg-ra-tls: ${warning}`);
    }
    return normalized;
  }

  async #attest(
    der: Uint8Array,
    issuers: readonly Uint8Array[],
    fingerprint: string,
    policy: NormalizedPolicy,
    signal: AbortSignal,
  ): Promise<AttestationReport> {
    // `signal` aborts once no caller waits for this run any more (VerificationCache).
    const scope = new Scope(this.#lifetime.signal, signal).deadline(
      this.verifyTimeoutMs,
      () =>
        new RaTlsError(
          'VERIFY_TIMEOUT',
          `verifying the server certificate ${fingerprint.slice(0, 16)}… took longer than ` +
            `${this.verifyTimeoutMs} ms (verifyTimeout); check the verifier's collateral service`,
          { details: { fingerprint } },
        ),
    );
    try {
      return await scope.race(
        attestCertificate(der, {
          verifier: this.verifier,
          policy,
          chain: issuers,
          now: this.#now(),
          signal: scope.signal,
        }),
      );
    } catch (error) {
      if (error instanceof RaTlsError) throw error;
      throw new RaTlsError(
        'QUOTE_INVALID',
        `verifying the server certificate failed: ${describeCause(error)}`,
        { cause: error, details: { fingerprint } },
      );
    } finally {
      scope.dispose();
    }
  }
}

/** The default clock: one function, so connectors that do not set `now` share verdicts. */
const realClock = (): Date => new Date();

const identities = new WeakMap<object, number>();
let lastIdentity = 0;

/**
 * A process-unique number per object (verifier, clock): verdicts are shared
 * only between connectors holding the very same objects.
 */
function identityOf(object: object): number {
  let identity = identities.get(object);
  if (identity === undefined) {
    // Stryker disable next-line UpdateOperator: any process-unique number will do; counting down is as unique
    identity = ++lastIdentity;
    identities.set(object, identity);
  }
  return identity;
}

/** Policy objects whose warnings a logger has already received. */
const warnedPolicies = new WeakMap<object, WeakSet<(message: string) => void>>();

/** True the first time `policy` is judged for `logger`; always true without a policy object. */
function firstWarningFor(policy: Policy | undefined, logger: (message: string) => void): boolean {
  // normalizePolicy has refused every other non-object; null is read as no policy.
  if (policy == null) return true;
  let loggers = warnedPolicies.get(policy);
  if (loggers === undefined) {
    loggers = new WeakSet();
    warnedPolicies.set(policy, loggers);
  }
  if (loggers.has(logger)) return false;
  loggers.add(logger);
  return true;
}

/**
 * Starts the verifier's warm-up (engine threads, one offline verification) as
 * soon as a pool or client exists, so that its first connection verifies at
 * steady-state cost. A failing warm-up decides nothing: the verification that
 * needs the engine reports the failure.
 */
function startWarmUp(verifier: RaTlsVerifier): void {
  if (typeof verifier.warmUp !== 'function') return;
  try {
    verifier.warmUp().catch(() => {});
  } catch {
    // As above: the first verification reports what is wrong.
  }
}
