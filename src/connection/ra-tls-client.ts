import type { Socket } from 'node:net';
import pg from 'pg';
import type { AttestationReport } from '../attest/report.js';
import {
  type ConnectionSettings,
  type ConnectionSettingsInput,
  resolveConnectionSettings,
  toPgClientConfig,
} from '../config/connection-settings.js';
import { RaTlsError } from '../errors.js';
import { sharedClientIdentity } from '../identity/shared-identity.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import {
  type AttestationOptions,
  type AttestedConnector,
  type AttestedSocket,
  AttestedConnector as Connector,
  type EndpointTarget,
} from './attested-connector.js';
import { prepareSocketForPg } from './socket-hand-off.js';

/** Options of a standalone {@link RaTlsClient}: where to connect and how to attest. */
export interface RaTlsClientOptions extends ConnectionSettingsInput, AttestationOptions {
  /** Share a connector (verification cache, client identity) between clients. */
  readonly connector?: AttestedConnector;
}

/** Hooks a pool installs on the clients it creates. @internal */
export interface RaTlsClientHooks {
  /** Judges a verified report before pg sees the socket; throw to refuse (pinning). */
  admit?(report: AttestationReport, client: RaTlsClient): void;
  /** Called once the socket is attested, before pg's startup message. */
  attested?(client: RaTlsClient, attested: AttestedSocket): void;
  /** Called once logged in, before the client is used; throw to refuse it (the client is ended). */
  ready?(client: RaTlsClient): Promise<void>;
  /** Called when `connect()` fails, with the endpoint it dialled (`client.endpoint`). */
  failed?(client: RaTlsClient, error: unknown): void;
}

/** What a pool hands its clients instead of options. @internal */
export interface RaTlsClientBinding {
  readonly settings: ConnectionSettings;
  readonly connector: AttestedConnector;
  readonly hooks?: RaTlsClientHooks;
  /** Where to dial, asked at connect time (a cluster's current leader); default: the settings. */
  readonly endpoint?: () => Promise<EndpointTarget>;
}

const kBinding = Symbol('pg-ra-tls.client-binding');

/** Wraps a binding so that `new RaTlsClient(...)` accepts it. @internal */
export function bindClientOptions(binding: RaTlsClientBinding): RaTlsClientOptions {
  return { [kBinding]: binding } as unknown as RaTlsClientOptions;
}

type ConnectCallback = ((err: Error) => void) | ((err: null, client: pg.Client) => void);

/** Postgres CancelRequest code (protocol 1234.5678). */
const CANCEL_REQUEST_CODE = 80877102;

/**
 * A node-postgres client whose connection is attested before Postgres sees a byte.
 *
 * `connect()` dials the server with TLS from the first byte, verifies the
 * server certificate's TDX attestation and the policy, and only then gives the
 * verified TLS socket to pg, which writes its startup message on it
 * (PROTOCOL.md §5). Any failure destroys the socket and rejects with a
 * {@link RaTlsError}; `end()` during attestation settles `connect()` with
 * CONNECTION_ENDED.
 */
export class RaTlsClient extends pg.Client {
  /** The resolved connection settings (password not enumerable). */
  readonly settings: ConnectionSettings;
  readonly #connector: AttestedConnector;
  readonly #hooks: RaTlsClientHooks | undefined;
  readonly #endpointProvider: (() => Promise<EndpointTarget>) | undefined;
  #target: EndpointTarget | undefined;
  #started = false;
  #ended = false;
  #abort: AbortController | undefined;
  #attestation: AttestationReport | undefined;
  #certificateDer: Uint8Array | undefined;

  constructor(options: RaTlsClientOptions) {
    const binding = prepareBinding(options);
    super(toPgClientConfig(binding.settings));
    this.settings = binding.settings;
    this.#connector = binding.connector;
    this.#hooks = binding.hooks;
    this.#endpointProvider = binding.endpoint;
    // pg's placeholder stream must never open a plaintext connection: only the
    // attested socket may carry the session.
    Object.defineProperty(this.connection.stream, 'connect', {
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

  /** The endpoint this client dialled (set when `connect()` starts dialling). */
  get endpoint(): EndpointTarget | undefined {
    return this.#target;
  }

  /** DER of the server certificate this client's socket was verified against. */
  get serverCertificate(): Uint8Array | undefined {
    return this.#certificateDer;
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
    const { processID, secretKey } = this as unknown as { processID?: number; secretKey?: number };
    if (this.#attestation === undefined || processID === undefined || secretKey === undefined) {
      throw new RaTlsError(
        'CONNECTION_ENDED',
        'this client has no session whose query could be cancelled',
      );
    }
    const { socket } = await this.#connector.open(this.#target ?? this.#endpoint());
    const request = Buffer.alloc(16);
    request.writeInt32BE(16, 0);
    request.writeInt32BE(CANCEL_REQUEST_CODE, 4);
    request.writeInt32BE(processID, 8);
    request.writeInt32BE(secretKey, 12);
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
    const target =
      this.#endpointProvider === undefined ? this.#endpoint() : await this.#endpointProvider();
    this.#target = target;
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
        try {
          this.#hooks?.attested?.(this, attested);
        } catch (error) {
          attested.socket.destroy();
          throw error;
        }
        const connection = this.connection as unknown as { stream: unknown };
        connection.stream = prepareSocketForPg(attested.socket);
        await super.connect();
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
    ).catch((error: unknown) => {
      this.#hooks?.failed?.(this, error);
      throw error;
    });
  }

  #endpoint(): EndpointTarget {
    const settings = this.settings;
    return {
      host: settings.host,
      port: settings.port,
      servername: settings.servername,
      connectTimeoutMs: settings.connectTimeoutMs,
      handshakeTimeoutMs: settings.handshakeTimeoutMs,
    };
  }

  async #attest(target: EndpointTarget): Promise<AttestedSocket> {
    const abort = new AbortController();
    this.#abort = abort;
    // pg-pool's connectionTimeoutMillis destroys client.connection.stream, which
    // during attestation is still pg's unconnected placeholder socket.
    const placeholder = this.connection.stream as unknown as Socket;
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
  const bound = (options as unknown as Record<symbol, RaTlsClientBinding | undefined>)[kBinding];
  if (bound !== undefined) return bound;
  if (options === undefined || options === null || typeof options !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'RaTlsClient needs an options object', {
      details: { option: 'options' },
    });
  }
  const settings = resolveConnectionSettings(options);
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
