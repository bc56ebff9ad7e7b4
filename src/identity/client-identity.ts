import { createPrivateKey, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { describeCause, RaTlsError } from '../errors.js';
import { Backoff } from '../util/backoff.js';
import { parseDuration, parseTimeout } from '../util/duration.js';
import { resolveDstackEndpoint } from './dstack-endpoint.js';
import { callGuestAgent, GuestAgentCallError } from './guest-agent-rpc.js';

/** A TLS client credential: PKCS#8 private key PEM and certificate chain PEM (leaf first). */
export interface ClientCertificate {
  readonly key: string;
  readonly cert: string;
}

/** A client certificate obtained from the guest agent, with its refresh schedule. */
export interface IssuedClientCertificate extends ClientCertificate {
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** When it was obtained (ms since epoch). */
  readonly obtainedAt: number;
  /** When it will be replaced (ms since epoch). */
  readonly refreshAt: number;
}

/** Options of {@link ClientIdentity}. */
export interface ClientIdentityOptions {
  /** Guest agent socket path or simulator URL; default: DSTACK_SIMULATOR_ENDPOINT or the socket paths of docs/protocol.md §4. */
  readonly dstackEndpoint?: string;
  /** Use this key/certificate instead of asking the guest agent (tests, non-dstack clients). */
  readonly clientCertOverride?: ClientCertificate;
  /** Subject CN requested from the agent. Default `pg-ra-tls`. */
  readonly subject?: string;
  /**
   * Validity to request (not_before/not_after, guest agent ≥ 0.5.7): the
   * certificate is short-lived, so a leaked key is soon worthless. Default
   * `"1h"`. Older agents, which ignore validity requests, issue their default.
   */
  readonly lifetime?: number | string;
  /** Fraction of the remaining lifetime after which the certificate is replaced. Default 0.8. */
  readonly refreshFraction?: number;
  /** Timeout of one guest agent request. Default `"10s"`. */
  readonly requestTimeout?: number | string;
  /** Environment to read DSTACK_SIMULATOR_ENDPOINT from. Default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  /** Clock (ms since epoch). Default `Date.now`. */
  readonly now?: () => number;
}

/** Events of {@link ClientIdentity}. */
export interface ClientIdentityEvents {
  /** A new certificate was obtained (first fetch or refresh). */
  refresh: [certificate: IssuedClientCertificate];
  /** A background refresh failed; the current certificate stays in use while valid. */
  refreshError: [error: RaTlsError];
}

/** Longest delay a Node.js timer accepts (about 24.8 days). */
const MAX_TIMER_DELAY = 2 ** 31 - 1;
const MIN_RETRY_DELAY = 1000;
const CLOCK_SKEW_MS = 5 * 60_000;
const MAX_RETRY_DELAY = 60_000;
/** After a failed agent call, get() fails fast for 0.25–0.5 s, doubling per failure up to 15–30 s. */
const AGENT_BACKOFF_INITIAL_MS = 500;
const AGENT_BACKOFF_MAX_MS = 30_000;

/**
 * The client certificate this process presents to the teesql sidecar, which
 * verifies its attestation (mutual RA-TLS, docs/protocol.md §5). Obtained from the
 * dstack guest agent's GetTlsKey with `usage_ra_tls` and `usage_client_auth`
 * (docs/protocol.md §4), cached, refreshed in the background before it expires
 * (unref'd timer), and concurrent requests share one agent call.
 *
 * The constructor resolves the agent endpoint and throws MISSING_DSTACK_SOCKET
 * when there is none, before any network I/O.
 */
export class ClientIdentity extends EventEmitter<ClientIdentityEvents> {
  /** The guest agent endpoint, or undefined with `clientCertOverride`. */
  readonly endpoint: string | undefined;
  readonly #override: ClientCertificate | undefined;
  readonly #subject: string;
  readonly #refreshFraction: number;
  readonly #requestTimeoutMs: number;
  readonly #lifetimeMs: number;
  readonly #now: () => number;
  /** Whether the agent has the Version RPC (≥ 0.5.7) and so honours validity options; asked once. */
  #validitySupported: boolean | undefined;
  /** Spaces out calls to a failing agent (get() fails fast in between). */
  readonly #backoff: Backoff;
  #lastFailure: RaTlsError | undefined;
  #current: IssuedClientCertificate | undefined;
  #inflight: Promise<IssuedClientCertificate> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #agentRequests = 0;
  #closed = false;
  /** Aborted by close(): an agent call in flight then ends at once, leaving no socket. */
  readonly #closing = new AbortController();

  constructor(options: ClientIdentityOptions = {}) {
    super();
    this.#now = options.now ?? Date.now;
    this.#backoff = new Backoff({
      initialMs: AGENT_BACKOFF_INITIAL_MS,
      maxMs: AGENT_BACKOFF_MAX_MS,
      now: () => this.#now(),
    });
    this.#subject = options.subject ?? 'pg-ra-tls';
    this.#requestTimeoutMs = parseTimeout(options.requestTimeout ?? '10s', 'requestTimeout');
    this.#lifetimeMs = parseDuration(options.lifetime ?? '1h', 'clientCertLifetime');
    if (this.#lifetimeMs < 60_000) {
      throw new RaTlsError('BAD_CONFIG', 'clientCertLifetime must be at least one minute', {
        details: { option: 'clientCertLifetime' },
      });
    }
    const fraction = options.refreshFraction ?? 0.8;
    if (!(fraction > 0 && fraction < 1)) {
      throw new RaTlsError('BAD_CONFIG', 'refreshFraction must be between 0 and 1 (exclusive)', {
        details: { option: 'refreshFraction' },
      });
    }
    this.#refreshFraction = fraction;
    if (options.clientCertOverride !== undefined) {
      const { key, cert } = options.clientCertOverride;
      if (typeof key !== 'string' || typeof cert !== 'string' || key === '' || cert === '') {
        throw new RaTlsError('BAD_CONFIG', 'clientCertOverride needs PEM strings { key, cert }', {
          details: { option: 'clientCertOverride' },
        });
      }
      this.#override = Object.freeze({ key, cert });
      this.endpoint = undefined;
    } else {
      this.#override = undefined;
      this.endpoint = resolveDstackEndpoint(options.dstackEndpoint, options.env ?? process.env);
    }
  }

  /** The certificate obtained from the agent, if any yet. */
  get current(): IssuedClientCertificate | undefined {
    return this.#current;
  }

  /** How many GetTlsKey calls this identity has made. */
  get agentRequests(): number {
    return this.#agentRequests;
  }

  /**
   * The key and certificate to present now: cached until its refresh time;
   * past it, a refresh is awaited, falling back to the cached one while it is
   * still valid. Throws CLIENT_CERT_UNAVAILABLE when the agent fails and nothing
   * valid is cached.
   */
  async get(): Promise<ClientCertificate> {
    if (this.#override !== undefined) return this.#override;
    if (this.#closed) {
      throw new RaTlsError('CLIENT_CERT_UNAVAILABLE', 'the client identity has been closed');
    }
    const cached = this.#current;
    const now = this.#now();
    if (cached !== undefined && now < cached.refreshAt) return cached;
    try {
      // A failing agent is asked again only after a jittered, growing pause;
      // callers in between get the last failure at once instead of a new call each.
      if (
        this.#inflight === undefined &&
        this.#lastFailure !== undefined &&
        !this.#backoff.ready()
      ) {
        throw this.#lastFailure;
      }
      return await this.#refresh();
    } catch (error) {
      if (cached !== undefined && now < cached.notAfter.getTime()) return cached;
      throw error;
    }
  }

  /**
   * Starts obtaining the certificate in the background when none is cached or
   * being fetched, so that the first dial does not wait for the agent (a pool
   * or client calls this when it is created). Never throws: a failure is what
   * the next {@link get} reports (at once while the agent is backed off).
   */
  prefetch(): void {
    if (this.#override !== undefined || this.#closed) return;
    if (this.#current !== undefined || this.#inflight !== undefined) return;
    if (this.#lastFailure !== undefined && !this.#backoff.ready()) return;
    this.#refresh().catch(() => {});
  }

  /**
   * Stops the refresh timer and abandons an agent call in flight; later
   * `get()` calls fail (except with an override).
   */
  close(): void {
    this.#closed = true;
    this.#closing.abort();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #refresh(): Promise<IssuedClientCertificate> {
    this.#inflight ??= this.#fetch().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #fetch(): Promise<IssuedClientCertificate> {
    const endpoint = this.endpoint!;
    this.#agentRequests++;
    let response: { key?: unknown; certificate_chain?: unknown };
    try {
      response = await this.#requestTlsKey(endpoint);
    } catch (cause) {
      const failure = new RaTlsError(
        'CLIENT_CERT_UNAVAILABLE',
        `the dstack guest agent at ${endpoint} did not issue a client certificate ` +
          `(GetTlsKey: ${describeCause(cause)}); check that the agent is running and reachable`,
        { cause, details: { endpoint } },
      );
      this.#failed(failure);
      throw failure;
    }
    let issued: IssuedClientCertificate;
    try {
      issued = this.#readResponse(response, endpoint);
    } catch (error) {
      this.#failed(error as RaTlsError);
      throw error;
    }
    this.#backoff.succeeded();
    this.#lastFailure = undefined;
    if (this.#closed) return issued;
    this.#current = issued;
    this.#schedule(issued.refreshAt);
    this.emit('refresh', issued);
    return issued;
  }

  #failed(failure: RaTlsError): void {
    this.#lastFailure = failure;
    this.#backoff.failed();
  }

  /**
   * GetTlsKey for RA-TLS client auth, short-lived where the agent supports
   * validity options (it has the Version RPC, ≥ 0.5.7: older agents reject
   * the unknown fields). One deadline covers both calls.
   */
  async #requestTlsKey(endpoint: string): Promise<{ key?: unknown; certificate_chain?: unknown }> {
    const deadline = performance.now() + this.#requestTimeoutMs;
    const remaining = (): number => Math.max(1, Math.ceil(deadline - performance.now()));
    const usage = {
      subject: this.#subject,
      usage_ra_tls: true,
      usage_server_auth: false,
      usage_client_auth: true,
    };
    if (this.#validitySupported === undefined) {
      try {
        await callGuestAgent(endpoint, 'Version', {}, remaining(), this.#closing.signal);
        this.#validitySupported = true;
      } catch (error) {
        // Only an agent that refused the method (4xx) is old; no answer or a 5xx is a failure.
        const status = error instanceof GuestAgentCallError ? error.status : undefined;
        if (status === undefined || status < 400 || status > 499) throw error;
        this.#validitySupported = false;
      }
    }
    const now = this.#now();
    const answer = await callGuestAgent(
      endpoint,
      'GetTlsKey',
      this.#validitySupported
        ? {
            ...usage,
            // A little slack for the server's clock.
            not_before: Math.floor((now - CLOCK_SKEW_MS) / 1000),
            not_after: Math.ceil((now + this.#lifetimeMs) / 1000),
          }
        : usage,
      remaining(),
      this.#closing.signal,
    );
    return typeof answer === 'object' && answer !== null ? answer : {};
  }

  #readResponse(
    response: { key?: unknown; certificate_chain?: unknown },
    endpoint: string,
  ): IssuedClientCertificate {
    const chain = response.certificate_chain;
    const key = response.key;
    const bad = (why: string, cause?: unknown) =>
      new RaTlsError(
        'CLIENT_CERT_UNAVAILABLE',
        `the dstack guest agent at ${endpoint} returned an unusable GetTlsKey answer: ${why}`,
        { cause, details: { endpoint } },
      );
    if (typeof key !== 'string' || !Array.isArray(chain) || chain.length === 0) {
      throw bad('expected { key, certificate_chain: [PEM, ...] }');
    }
    if (!chain.every((pem): pem is string => typeof pem === 'string')) {
      throw bad('certificate_chain holds something other than PEM strings');
    }
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(chain[0]!);
      if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error('key does not match');
    } catch (cause) {
      throw bad('the key or leaf certificate cannot be read or do not match', cause);
    }
    const obtainedAt = this.#now();
    const notBefore = new Date(leaf.validFrom);
    const notAfter = new Date(leaf.validTo);
    // dstack's default validity starts in 1975 (docs/protocol.md §1), so the lifetime
    // that matters is what remains from now, not from notBefore.
    const start = Math.max(notBefore.getTime(), obtainedAt);
    const refreshAt = start + this.#refreshFraction * (notAfter.getTime() - start);
    return Object.freeze({
      key,
      cert: chain.map((pem) => pem.trim()).join('\n'),
      notBefore,
      notAfter,
      obtainedAt,
      refreshAt,
    });
  }

  #schedule(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const delay = Math.min(Math.max(at - this.#now(), 0), MAX_TIMER_DELAY);
    this.#timer = setTimeout(() => this.#onTimer(at), delay);
    this.#timer.unref();
  }

  #onTimer(at: number): void {
    this.#timer = undefined;
    if (this.#closed) return;
    if (this.#now() < at) {
      this.#schedule(at);
      return;
    }
    this.#refresh().catch((error: unknown) => {
      if (this.#closed) return;
      const failure =
        error instanceof RaTlsError
          ? error
          : new RaTlsError('CLIENT_CERT_UNAVAILABLE', describeCause(error), { cause: error });
      this.emit('refreshError', failure);
      const notAfter = this.#current?.notAfter.getTime() ?? this.#now();
      const retry = Math.min(
        Math.max((notAfter - this.#now()) / 4, MIN_RETRY_DELAY),
        MAX_RETRY_DELAY,
      );
      this.#schedule(this.#now() + retry);
    });
  }
}
