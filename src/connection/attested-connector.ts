import type { TLSSocket } from 'node:tls';
import { attestCertificate } from '../attest/attest-certificate.js';
import type { AttestationReport } from '../attest/report.js';
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
import { parseDuration } from '../util/duration.js';
import { DcapVerifier } from '../verification/dcap-verifier.js';
import type { RaTlsVerifier } from '../verification/verifier.js';
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
   * Receives policy warnings (e.g. an empty `allowedMrtds` accepts any image),
   * once per policy. Default `console.warn`.
   */
  readonly logger?: (message: string) => void;
}

/** One server endpoint and the transport timeouts to reach it. */
export interface EndpointTarget {
  readonly host: string;
  readonly port: number;
  readonly servername?: string | undefined;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
}

/** A TLS socket whose server certificate passed attestation and policy. */
export interface AttestedSocket {
  readonly socket: TLSSocket;
  readonly report: AttestationReport;
  readonly cacheHit: boolean;
  /** DER of the server leaf certificate the report is about. */
  readonly peerCertificateDer: Uint8Array;
}

/** A certificate seen on a fresh handshake. */
export interface ProbeResult {
  readonly fingerprint: string;
  readonly certificateDer: Uint8Array;
  /** When the handshake completed (ms since epoch). */
  readonly at: number;
}

/** Options of {@link AttestedConnector.open}. */
export interface OpenOptions {
  readonly signal?: AbortSignal;
  /**
   * Called with the verified report before the socket is returned; throwing
   * refuses the server (used by the pool for certificate pinning).
   */
  readonly admit?: (report: AttestationReport) => void;
}

const DEFAULT_REATTEST_EVERY = '5m';
const DEFAULT_VERIFY_TIMEOUT = '30s';

/**
 * Opens attested TLS connections: client identity → TLS dial → attestation of
 * the captured leaf (PROTOCOL.md §1–3, via attestCertificate) under a timeout,
 * with a per-fingerprint verification cache. The socket is returned only after
 * success; on any failure it is destroyed. Shared by clients of one pool.
 */
export class AttestedConnector {
  readonly verifier: RaTlsVerifier;
  readonly identity: ClientIdentity;
  readonly reattestEveryMs: number;
  readonly verifyTimeoutMs: number;
  readonly cache: VerificationCache;
  readonly #ownsIdentity: boolean;
  readonly #now: () => Date;
  readonly #lifetime = new AbortController();
  readonly #logger: (message: string) => void;
  #policy: NormalizedPolicy;
  #policyVersion = 0;

  constructor(options: AttestationOptions) {
    const verifier = options.verifier ?? defaultVerifier();
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
    startWarmUp(verifier);
    this.#logger = options.logger ?? console.warn;
    this.#policy = this.#judgeWith(options.policy);
    this.reattestEveryMs = parseDuration(
      options.reattestEvery ?? DEFAULT_REATTEST_EVERY,
      'reattestEvery',
    );
    this.verifyTimeoutMs = parseDuration(
      options.verifyTimeout ?? DEFAULT_VERIFY_TIMEOUT,
      'verifyTimeout',
    );
    this.#now = options.now ?? (() => new Date());
    this.cache = new VerificationCache({
      maxAgeMs: this.reattestEveryMs,
      now: () => this.#now().getTime(),
    });
    if (options.clientIdentity !== undefined) {
      this.identity = options.clientIdentity;
      this.#ownsIdentity = false;
    } else {
      this.identity = new ClientIdentity({
        ...(options.dstackEndpoint === undefined ? {} : { dstackEndpoint: options.dstackEndpoint }),
        ...(options.clientCertOverride === undefined
          ? {}
          : { clientCertOverride: options.clientCertOverride }),
        ...(options.clientCertLifetime === undefined
          ? {}
          : { lifetime: options.clientCertLifetime }),
      });
      this.#ownsIdentity = true;
    }
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

  /** Replaces the policy (validated first) and forgets every cached report. */
  setPolicy(policy: Policy | undefined): NormalizedPolicy {
    const normalized = this.#judgeWith(policy);
    this.#policy = normalized;
    this.#policyVersion++;
    this.cache.clear();
    return normalized;
  }

  /**
   * Verifies a server leaf certificate (cache-aware, coalesced per fingerprint)
   * in a `pg_ra_tls.verify` span. VERIFY_TIMEOUT after `verifyTimeout`.
   */
  verifyCertificate(der: Uint8Array, signal?: AbortSignal): Promise<CachedVerification> {
    const fingerprint = toHex(sha256(der));
    return withSpan(
      SpanNames.VERIFY,
      { [SpanAttributes.FINGERPRINT]: fingerprint, [SpanAttributes.VERIFIER]: this.verifier.name },
      async (span) => {
        const result = await raceSignal(
          this.cache.verify(fingerprint, () => this.#attest(der, fingerprint)),
          signal,
        );
        span.setAttribute(SpanAttributes.CACHE_HIT, result.cacheHit);
        setAttributes(span, reportAttributes(result.report));
        return result;
      },
    );
  }

  /** Dials `target` presenting the client certificate; no attestation. */
  async dial(target: EndpointTarget, signal?: AbortSignal): Promise<DialedSocket> {
    const combined = this.#signal(signal);
    const clientCertificate = await raceSignal(this.identity.get(), combined);
    return dialTls({
      host: target.host,
      port: target.port,
      ...(target.servername === undefined ? {} : { servername: target.servername }),
      clientCertificate,
      connectTimeoutMs: target.connectTimeoutMs,
      handshakeTimeoutMs: target.handshakeTimeoutMs,
      signal: combined,
    });
  }

  /** A fresh handshake to learn which certificate the server presents now; the socket is closed. */
  async probe(target: EndpointTarget, signal?: AbortSignal): Promise<ProbeResult> {
    const { socket, peerCertificateDer } = await this.dial(target, signal);
    socket.on('error', () => {});
    socket.destroy();
    return {
      fingerprint: toHex(sha256(peerCertificateDer)),
      certificateDer: peerCertificateDer,
      at: this.now(),
    };
  }

  /**
   * Dials and attests `target`. The returned socket has not carried a byte of
   * Postgres yet; it keeps a no-op 'error' listener so an error before the new
   * owner attaches its own cannot crash the process.
   */
  async open(target: EndpointTarget, options: OpenOptions = {}): Promise<AttestedSocket> {
    const { socket, peerCertificateDer } = await this.dial(target, options.signal);
    // Watch the socket while it waits for the verdict: a server that hangs up
    // ends the attempt at once instead of after the verification.
    const closed = new AbortController();
    const ignoreError = () => {};
    const onClose = () =>
      closed.abort(
        new RaTlsError(
          'CONNECTION_ENDED',
          `the server at ${target.host}:${target.port} closed the connection during attestation`,
        ),
      );
    socket.on('error', ignoreError);
    socket.once('close', onClose);
    try {
      const signal = AbortSignal.any([
        closed.signal,
        ...(options.signal === undefined ? [] : [options.signal]),
      ]);
      const { report, cacheHit } = await this.verifyCertificate(peerCertificateDer, signal);
      options.admit?.(report);
      if (socket.destroyed) throw closed.signal.reason;
      return { socket, report, cacheHit, peerCertificateDer };
    } catch (error) {
      socket.destroy();
      throw error;
    } finally {
      socket.off('close', onClose);
    }
  }

  /** Cancels pending dials and verifications and closes the identity if this connector created it. */
  close(reason?: RaTlsError): void {
    this.#lifetime.abort(
      reason ?? new RaTlsError('CONNECTION_ENDED', 'the connector has been closed'),
    );
    if (this.#ownsIdentity) this.identity.close();
  }

  /** Validates a policy and says out loud what it lets through (policyWarnings). */
  #judgeWith(policy: Policy | undefined): NormalizedPolicy {
    const normalized = normalizePolicy(policy);
    for (const warning of policyWarnings(normalized)) this.#logger(`pg-ra-tls: ${warning}`);
    return normalized;
  }

  #signal(signal: AbortSignal | undefined): AbortSignal {
    return signal === undefined
      ? this.#lifetime.signal
      : AbortSignal.any([this.#lifetime.signal, signal]);
  }

  async #attest(der: Uint8Array, fingerprint: string): Promise<AttestationReport> {
    const timeout = new AbortController();
    const timer = setTimeout(
      () =>
        timeout.abort(
          new RaTlsError(
            'VERIFY_TIMEOUT',
            `verifying the server certificate ${fingerprint.slice(0, 16)}… took longer than ` +
              `${this.verifyTimeoutMs} ms (verifyTimeout); check the verifier's collateral service`,
            { details: { fingerprint } },
          ),
        ),
      this.verifyTimeoutMs,
    );
    const signal = AbortSignal.any([timeout.signal, this.#lifetime.signal]);
    try {
      return await raceSignal(
        attestCertificate(der, {
          verifier: this.verifier,
          policy: this.#policy,
          now: this.#now(),
          signal,
        }),
        signal,
      );
    } catch (error) {
      if (error instanceof RaTlsError) throw error;
      throw new RaTlsError(
        'QUOTE_INVALID',
        `verifying the server certificate failed: ${describeCause(error)}`,
        { cause: error, details: { fingerprint } },
      );
    } finally {
      clearTimeout(timer);
    }
  }
}

let sharedDcapVerifier: DcapVerifier | undefined;

/** The production default: DCAP against Intel's root, collateral from Intel PCS (PROTOCOL.md §3). */
function defaultVerifier(): DcapVerifier {
  sharedDcapVerifier ??= new DcapVerifier();
  return sharedDcapVerifier;
}

/**
 * Settles with `promise`, or rejects with the signal's reason (a RaTlsError;
 * anything else becomes CONNECTION_ENDED) as soon as the signal aborts.
 */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(toRaTlsAbort(signal.reason));
    if (signal.aborted) {
      onAbort();
      promise.catch(() => {});
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function toRaTlsAbort(reason: unknown): RaTlsError {
  if (reason instanceof RaTlsError) return reason;
  return new RaTlsError('CONNECTION_ENDED', 'the connection attempt was cancelled', {
    cause: reason,
  });
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
