import type pg from 'pg';
import type { AttestationReport } from '../attest/report.js';
import {
  CONNECTION_OPTION_KEYS,
  type ConnectionSettings,
  type ConnectionSettingsInput,
  PG_POOL_OPTION_KEYS,
  resolveConnectionSettings,
  toPgClientConfig,
} from '../config/connection-settings.js';
import { describeCause, RaTlsError } from '../errors.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import { assertKnownOptions } from '../util/known-options.js';
import {
  type AttestationOptions,
  type AttestedConnector,
  type AttestedSocket,
  CONNECTOR_OWNED,
  AttestedConnector as Connector,
  type EndpointTarget,
} from './attested-connector.js';
import { linkPgBase, pgBase } from './pg-base.js';
import { type ClientInternals, clientInternals, type UnusableState } from './pg-internals.js';
import { sharedClientIdentity } from './shared-defaults.js';
import { prepareSocketForPg } from './socket-hand-off.js';

/** Options of a standalone {@link RaTlsClient}: where to connect and how to attest. */
export interface RaTlsClientOptions extends ConnectionSettingsInput, AttestationOptions {
  /** Share a connector (verification cache, client identity) between clients. */
  readonly connector?: AttestedConnector;
}

/** Hooks a pool installs on the clients it creates. @internal */
export interface RaTlsClientHooks {
  /** Why no new connection may be dialled (pool ended, server refused), if so. */
  refusal?(): RaTlsError | undefined;
  /** Judges a verified report before pg sees the socket: an error refuses it (pinning). */
  admit?(report: AttestationReport, client: RaTlsClient): RaTlsError | undefined;
  /** Called once the socket is attested, before pg's startup message. */
  attested?(client: RaTlsClient, attested: AttestedSocket): void;
  /** Called once logged in, before the client is used; throw to refuse it (the client is ended). */
  ready?(client: RaTlsClient): Promise<void>;
  /** Called when `connect()` fails, with the endpoint it dialled (`client.endpoint`). */
  failed?(client: RaTlsClient, error: unknown): void;
}

/**
 * What a pool hands the clients it creates, as the constructor's second
 * argument: resolved settings, the shared connector and the pool's hooks.
 * @internal
 */
export interface RaTlsClientBinding {
  readonly settings: ConnectionSettings;
  readonly connector: AttestedConnector;
  readonly hooks?: RaTlsClientHooks;
  /**
   * Where to dial, asked once per connection (a cluster's current leader, the
   * next host of a multi-host string); default: `settings.endpoint`.
   */
  readonly endpoint?: () => EndpointTarget | Promise<EndpointTarget>;
}

export { CONNECTOR_OWNED };

/**
 * Every option a standalone {@link RaTlsClient} knows: node-postgres's
 * `ClientConfig`, and pg-pool's options, ignored as `pg.Client` ignores them.
 */
export const CLIENT_OPTION_KEYS: readonly string[] = Object.freeze([
  ...CONNECTION_OPTION_KEYS,
  ...PG_POOL_OPTION_KEYS,
  ...CONNECTOR_OWNED,
  'connector',
]);

type ConnectCallback = ((err: Error) => void) | ((err: null, client: pg.Client) => void);

/** Postgres CancelRequest code (protocol 1234.5678). */
const CANCEL_REQUEST_CODE = 80877102;

/**
 * A node-postgres client whose connection is attested before Postgres sees a byte.
 *
 * `connect()` dials the server with TLS from the first byte, verifies the
 * server certificate's TDX attestation and the policy, and only then gives the
 * verified TLS socket to pg, which writes its startup message on it
 * (docs/protocol.md §5). Any failure destroys the socket and rejects with a
 * {@link RaTlsError}; `end()` during attestation settles `connect()` with
 * CONNECTION_ENDED.
 */
export class RaTlsClient extends pgBase('Client') {
  /** The resolved connection settings (password not enumerable). */
  readonly settings: ConnectionSettings;
  readonly #connector: AttestedConnector;
  readonly #hooks: RaTlsClientHooks | undefined;
  readonly #pg: ClientInternals;
  readonly #endpointOf: (() => EndpointTarget | Promise<EndpointTarget>) | undefined;
  #target: EndpointTarget | undefined;
  #started = false;
  #ended = false;
  #abort: AbortController | undefined;
  #attestation: AttestationReport | undefined;
  #certificateDer: Uint8Array | undefined;
  #issuersDer: readonly Uint8Array[] = [];
  /** pg reports one loss through two paths: both give callers the same RaTlsError. */
  readonly #lost = new WeakMap<Error, RaTlsError>();
  /** The first error pg gave this session: what made it unusable, if it is. */
  #brokenBy: Error | undefined;
  /** Why connect() failed, once it has: no query is sent from then on. */
  #connectFailure: { readonly error: unknown } | undefined;

  /**
   * @param options where to connect and how to attest.
   * @param binding used by a pool for the clients it creates (options are then
   *   ignored). @internal
   */
  constructor(options: RaTlsClientOptions, binding?: RaTlsClientBinding) {
    linkPgBase(RaTlsClient, 'Client');
    const bound = binding ?? prepareBinding(options);
    super(toPgClientConfig(bound.settings));
    this.settings = bound.settings;
    this.#connector = bound.connector;
    this.#hooks = bound.hooks;
    this.#endpointOf = bound.endpoint;
    this.#pg = clientInternals(this);
    this.#pg.mapSessionErrors((error) => this.#sessionError(error));
    this.#pg.refuseQueriesWhenUnusable(
      (state) => this.#unusable(state),
      () => this.#connectFailure !== undefined,
    );
    // pg's placeholder stream must never open a plaintext connection: only the
    // attested socket may carry the session.
    Object.defineProperty(this.#pg.stream(), 'connect', {
      value: () => {
        throw new RaTlsError('CONNECTION_ENDED', 'this connection has no attested socket');
      },
      configurable: true,
      writable: true,
    });
  }

  /** The report of the server this client is attested to (updated by pool re-attestation). */
  get attestation(): AttestationReport | undefined {
    return this.#attestation;
  }

  /** The endpoint this client dialled (set once `connect()` knows where to dial). */
  get endpoint(): EndpointTarget | undefined {
    return this.#target;
  }

  /** DER of the server certificate this client's socket was verified against. */
  get serverCertificate(): Uint8Array | undefined {
    return this.#certificateDer;
  }

  /** DER of the certificates the server sent after its leaf in that same handshake. */
  get serverIssuers(): readonly Uint8Array[] {
    return this.#issuersDer;
  }

  /** Records a newer report for the same certificate (pool re-attestation). @internal */
  updateAttestation(report: AttestationReport): void {
    if (this.#attestation !== undefined && report.fingerprint !== this.#attestation.fingerprint) {
      throw new RaTlsError(
        'SERVER_CHANGED',
        'a report for another certificate cannot be applied to this connection',
      );
    }
    this.#attestation = report;
  }

  /**
   * Cancels the query this client is running (a Postgres CancelRequest) over a
   * freshly dialled and attested connection to the same server. pg's own
   * out-of-band cancel would dial in plaintext, which this client refuses.
   * Resolves once the request is sent; the query then fails with 57014.
   */
  async cancelActiveQuery(): Promise<void> {
    const key = this.#pg.backendKey();
    if (this.#attestation === undefined || key === undefined) {
      throw new RaTlsError(
        'CONNECTION_ENDED',
        'this client has no session whose query could be cancelled',
      );
    }
    // The cancel connection obeys the pool's pin like any other: the backend key
    // goes only to a server the pool would accept a checkout from.
    const refusal = this.#hooks?.refusal?.();
    if (refusal !== undefined) throw refusal;
    const admit = this.#hooks?.admit;
    // The same server as the session: a cluster's leader or one host of several.
    const { socket } = await this.#connector.open(
      this.#target ?? this.settings.endpoint,
      admit === undefined ? {} : { admit: (report) => admit(report, this) },
    );
    const request = Buffer.alloc(16);
    request.writeInt32BE(16, 0);
    request.writeInt32BE(CANCEL_REQUEST_CODE, 4);
    request.writeInt32BE(key.processID, 8);
    request.writeInt32BE(key.secretKey, 12);
    await new Promise<void>((resolve) => socket.end(request, resolve));
    socket.destroy();
  }

  override connect(): Promise<pg.Client>;
  override connect(callback: ConnectCallback): void;
  override connect(callback?: ConnectCallback): Promise<pg.Client> | undefined {
    const promise = this.#connect();
    if (callback === undefined) return promise.then(() => this);
    promise.then(
      () => (callback as (err: null, client: pg.Client) => void)(null, this),
      (error: Error) => (callback as (err: Error) => void)(error),
    );
    return undefined;
  }

  override end(): Promise<void>;
  override end(callback: (err: Error) => void): void;
  override end(callback?: (err: Error) => void): Promise<void> | undefined {
    this.#ended = true;
    this.#abort?.abort(
      new RaTlsError(
        'CONNECTION_ENDED',
        'client.end() was called before the server was attested; the connection was not used',
      ),
    );
    if (callback === undefined) return super.end();
    super.end(callback);
    return undefined;
  }

  async #connect(): Promise<void> {
    if (this.#started || this.#ended) {
      throw new RaTlsError(
        'BAD_CONFIG',
        this.#started
          ? 'a RaTlsClient connects only once: create a new client (or use RaTlsPool)'
          : 'this RaTlsClient has been ended: create a new client',
      );
    }
    this.#started = true;
    try {
      await this.#connectOnce();
    } catch (error) {
      // Queries queued before or during connect() would wait for ever for a
      // session that will not come (pg sends them once it is ready).
      this.#connectFailure = { error };
      this.#pg.failQueued(this.#unusable('failed'));
      this.#hooks?.failed?.(this, error);
      throw error;
    }
  }

  async #connectOnce(): Promise<void> {
    const target =
      this.#endpointOf === undefined ? this.settings.endpoint : await this.#endpointOf();
    this.#target = target;
    if (this.#ended) {
      throw new RaTlsError(
        'CONNECTION_ENDED',
        'client.end() was called before the server was attested; the connection was not used',
      );
    }
    await withSpan(
      SpanNames.CONNECT,
      {
        [SpanAttributes.SERVER_ADDRESS]: target.host,
        [SpanAttributes.SERVER_PORT]: target.port,
      },
      async (span) => {
        const attested = await this.#attest(target);
        span.setAttribute(SpanAttributes.CACHE_HIT, attested.cacheHit);
        setAttributes(span, reportAttributes(attested.report));
        this.#attestation = attested.report;
        this.#certificateDer = attested.peerCertificateDer;
        this.#issuersDer = attested.peerIssuersDer;
        try {
          this.#hooks?.attested?.(this, attested);
        } catch (error) {
          attested.socket.destroy();
          throw error;
        }
        this.#pg.setStream(prepareSocketForPg(attested.socket));
        try {
          await super.connect();
        } catch (error) {
          // Attested, then lost before the session started (Postgres down behind the sidecar).
          throw error instanceof Error ? this.#sessionError(error) : error;
        }
        const ready = this.#hooks?.ready;
        if (ready !== undefined) {
          try {
            await ready(this);
          } catch (error) {
            await super.end().catch(() => {});
            throw error;
          }
        }
      },
    );
  }

  /**
   * pg's own report of a connection gone under the session (its plain
   * "Connection terminated unexpectedly" Error, a socket reset) as the typed
   * CONNECTION_LOST, with pg's error as `cause`; other errors (Postgres's own,
   * with their SQLSTATE) pass as they are.
   */
  #sessionError(error: Error): Error {
    // The first: what ended the session (later ones are its consequences).
    this.#brokenBy ??= error;
    if (error instanceof RaTlsError || !isConnectionLoss(error)) return error;
    let typed = this.#lost.get(error);
    if (typed === undefined) {
      const { host, port } = this.#target ?? this.settings.endpoint;
      typed = new RaTlsError(
        'CONNECTION_LOST',
        `the connection to ${host}:${port} was lost (${error.message}): the server closed it or ` +
          'went away, as in a leader switch; retry on a new connection (a statement in flight ' +
          'may or may not have committed)',
        { cause: error, details: { host, port } },
      );
      this.#lost.set(error, typed);
    }
    return typed;
  }

  /**
   * A query on a client pg no longer sends queries on: typed, where pg would
   * give its plain "not queryable" Error. Nothing is sent either way.
   */
  #unusable(state: UnusableState): RaTlsError {
    const { host, port } = this.#target ?? this.settings.endpoint;
    if (state === 'failed') {
      const failure = this.#connectFailure?.error;
      return new RaTlsError(
        'CONNECTION_ENDED',
        `this client's connect() to ${host}:${port} failed (${describeCause(failure)}) and it ` +
          'sends no queries; create a new client (RaTlsPool does so for each checkout)',
        { cause: failure, details: { host, port } },
      );
    }
    if (state === 'ending') {
      return new RaTlsError(
        'CONNECTION_ENDED',
        `this connection to ${host}:${port} was ended (end() or release(true)) and sends no more ` +
          'queries; check out a new connection from the pool',
        { details: { host, port } },
      );
    }
    // pg's own error (what a typed CONNECTION_LOST carries as its cause).
    const broken = this.#brokenBy;
    const original =
      broken instanceof RaTlsError && broken.cause instanceof Error ? broken.cause : broken;
    return new RaTlsError(
      'CONNECTION_LOST',
      `this connection to ${host}:${port} was lost earlier${original === undefined ? '' : ` (${original.message})`} ` +
        'and sends no more queries; release it with release(true) and retry on a new connection',
      { ...(original === undefined ? {} : { cause: original }), details: { host, port } },
    );
  }

  async #attest(target: EndpointTarget): Promise<AttestedSocket> {
    const abort = new AbortController();
    this.#abort = abort;
    // pg-pool's connectionTimeoutMillis destroys client.connection.stream, which
    // during attestation is still pg's unconnected placeholder socket.
    const placeholder = this.#pg.stream();
    const onPlaceholderClose = () =>
      abort.abort(
        new RaTlsError(
          'CONNECTION_ENDED',
          'the connection was destroyed before the server was attested (connectionTimeoutMillis?)',
        ),
      );
    placeholder.once('close', onPlaceholderClose);
    const admit = this.#hooks?.admit;
    try {
      const attested = await this.#connector.open(target, {
        signal: abort.signal,
        ...(admit === undefined ? {} : { admit: (report) => admit(report, this) }),
      });
      if (this.#ended) {
        attested.socket.destroy();
        throw abort.signal.reason;
      }
      return attested;
    } finally {
      placeholder.off('close', onPlaceholderClose);
      this.#abort = undefined;
    }
  }
}

function prepareBinding(options: RaTlsClientOptions): RaTlsClientBinding {
  if (options === undefined || options === null || typeof options !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'RaTlsClient needs an options object', {
      details: { option: 'options' },
    });
  }
  assertKnownOptions(options, CLIENT_OPTION_KEYS, 'RaTlsClient');
  const settings = resolveConnectionSettings(options);
  if (options.connector !== undefined) {
    // A shared connector carries its own verifier, policy and identity; these
    // options would be silently ignored, so a stricter policy would not apply.
    const ignored = CONNECTOR_OWNED.filter(
      (key) => (options as unknown as Record<string, unknown>)[key] !== undefined,
    );
    if (ignored.length > 0) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `${ignored.join(', ')} cannot be combined with connector: the shared connector's own ` +
          'settings apply; set them when creating the connector (or drop connector)',
        { details: { option: ignored[0] } },
      );
    }
  }
  const connector =
    options.connector ??
    new Connector({
      ...options,
      ...(options.clientIdentity === undefined && options.clientCertOverride === undefined
        ? { clientIdentity: sharedClientIdentity(options.dstackEndpoint) }
        : {}),
    });
  return { settings, connector };
}

/** Socket errors that mean the peer or the path went away. */
const LOST_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED']);

/** pg's error for a stream that ended under the session, or a socket that broke. */
function isConnectionLoss(error: Error): boolean {
  if (error.message === 'Connection terminated unexpectedly') return true;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && LOST_SOCKET_CODES.has(code);
}
