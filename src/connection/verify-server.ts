import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ClientConfig } from 'pg';
import type { AttestationReport } from '../attest/report.js';
import {
  type ConnectionSettingsInput,
  DEFAULT_SIDECAR_PORT,
  resolveConnectionSettings,
  toPgClientConfig,
} from '../config/connection-settings.js';
import { parseConnectionString } from '../config/connection-string.js';
import { RaTlsError } from '../errors.js';
import { sharedClientIdentity } from '../identity/shared-identity.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import { parseDuration } from '../util/duration.js';
import {
  type AttestationOptions,
  AttestedConnector,
  type EndpointTarget,
} from './attested-connector.js';
import { prepareSocketForPg } from './socket-hand-off.js';

/** A server to verify: `host`, `host:port`, `[v6]:port`, a postgres:// URL, or fields. */
export type ServerTarget =
  | string
  | { readonly host: string; readonly port?: number; readonly servername?: string };

/** Options of {@link verifyServer}. */
export interface VerifyServerOptions extends AttestationOptions {
  /** TCP connect timeout. Default `"10s"`. */
  readonly connectTimeout?: number | string;
  /** TLS handshake timeout. Default `"10s"`. */
  readonly handshakeTimeout?: number | string;
  /** Cancels the check. */
  readonly signal?: AbortSignal;
}

/**
 * Dials a server, verifies the attestation of its certificate and the policy,
 * and closes the connection: no Postgres session, no credentials needed.
 * Resolves with the {@link AttestationReport}; rejects with a RaTlsError.
 */
export async function verifyServer(
  target: ServerTarget,
  options: VerifyServerOptions,
): Promise<AttestationReport> {
  const endpoint = resolveTarget(target, options);
  const connector = createConnector(options);
  try {
    return await withSpan(
      SpanNames.CONNECT,
      {
        [SpanAttributes.SERVER_ADDRESS]: endpoint.host,
        [SpanAttributes.SERVER_PORT]: endpoint.port,
      },
      async (span) => {
        const attested = await connector.open(
          endpoint,
          options.signal === undefined ? {} : { signal: options.signal },
        );
        attested.socket.destroy();
        span.setAttribute(SpanAttributes.CACHE_HIT, attested.cacheHit);
        setAttributes(span, reportAttributes(attested.report));
        return attested.report;
      },
    );
  } finally {
    connector.close();
  }
}

/** Options of {@link pgConnectOptsRaTls}. */
export interface PgConnectOptsOptions
  extends Omit<ConnectionSettingsInput, 'connectionString'>,
    AttestationOptions {
  /** Cancels the dial and verification. */
  readonly signal?: AbortSignal;
}

/**
 * Dials and verifies the server now, then returns a one-shot node-postgres
 * config whose `stream` is the verified TLS socket (`ssl: false`: the socket
 * already is TLS). Pass it to one `new pg.Client(config)` promptly; a second
 * use throws BAD_CONFIG. If the config is not used, destroy the socket with
 * `config.stream().destroy()`.
 */
export async function pgConnectOptsRaTls(
  dsn: string,
  options: PgConnectOptsOptions,
): Promise<ClientConfig & { readonly attestation: AttestationReport }> {
  const settings = resolveConnectionSettings({ ...options, connectionString: dsn });
  const connector = createConnector(options);
  try {
    const attested = await withSpan(
      SpanNames.CONNECT,
      {
        [SpanAttributes.SERVER_ADDRESS]: settings.host,
        [SpanAttributes.SERVER_PORT]: settings.port,
      },
      async (span) => {
        const result = await connector.open(
          {
            host: settings.host,
            port: settings.port,
            servername: settings.servername,
            connectTimeoutMs: settings.connectTimeoutMs,
            handshakeTimeoutMs: settings.handshakeTimeoutMs,
          },
          options.signal === undefined ? {} : { signal: options.signal },
        );
        span.setAttribute(SpanAttributes.CACHE_HIT, result.cacheHit);
        setAttributes(span, reportAttributes(result.report));
        return result;
      },
    );
    const socket = prepareSocketForPg(attested.socket);
    let taken = false;
    const stream = (): Duplex => {
      if (taken) {
        throw new RaTlsError(
          'BAD_CONFIG',
          'a pgConnectOptsRaTls config carries one verified socket and can be used once: ' +
            'call pgConnectOptsRaTls again for another connection',
        );
      }
      taken = true;
      return socket;
    };
    return Object.assign(toPgClientConfig(settings), { stream, attestation: attested.report });
  } finally {
    connector.close();
  }
}

function createConnector(options: AttestationOptions): AttestedConnector {
  return new AttestedConnector({
    ...options,
    ...(options.clientIdentity === undefined && options.clientCertOverride === undefined
      ? { clientIdentity: sharedClientIdentity(options.dstackEndpoint) }
      : {}),
  });
}

function resolveTarget(target: ServerTarget, options: VerifyServerOptions): EndpointTarget {
  const timeouts = {
    connectTimeoutMs: parseDuration(options.connectTimeout ?? '10s', 'connectTimeout'),
    handshakeTimeoutMs: parseDuration(options.handshakeTimeout ?? '10s', 'handshakeTimeout'),
  };
  let host: string | undefined;
  let port: number | string | undefined;
  let servername: string | undefined;
  if (typeof target === 'string') {
    const text = target.trim();
    if (/^postgres(?:ql)?:\/\//i.test(text) || /^[A-Za-z0-9_]+\s*=/.test(text)) {
      // A URL or libpq keyword string: hostaddr is where TCP goes, host the TLS name.
      const parsed = parseConnectionString(text);
      host = parsed.hostaddr ?? parsed.host;
      port = parsed.port;
      if (parsed.hostaddr !== undefined && parsed.host !== undefined && isIP(parsed.host) === 0) {
        servername = parsed.host;
      }
    } else {
      // A bare host name or address: nothing a DNS name cannot hold (no spaces, "=", "@", "/").
      const match = /^(?:\[([0-9A-Fa-f:.%\w]+)\]|([A-Za-z0-9._-]+))(?::(\d+))?$/.exec(text);
      host = match?.[1] ?? match?.[2];
      port = match?.[3];
    }
  } else if (target !== null && typeof target === 'object') {
    host = target.host;
    port = target.port;
    servername = target.servername;
  }
  const portNumber = port === undefined ? DEFAULT_SIDECAR_PORT : Number(port);
  if (
    host === undefined ||
    host === '' ||
    !Number.isInteger(portNumber) ||
    portNumber < 1 ||
    portNumber > 65_535
  ) {
    throw new RaTlsError(
      'BAD_CONFIG',
      // A string is not echoed (a malformed connection string may hold the password anywhere),
      // and of an object only the fields a target has.
      `verifyServer target ${typeof target === 'string' ? '(a string, not shown)' : JSON.stringify({ host, port })} ` +
        'is not "host", "host:port", a postgres:// URL or { host, port }',
      { details: { option: 'target' } },
    );
  }
  return {
    host,
    port: portNumber,
    servername: servername ?? (isIP(host) === 0 ? host : undefined),
    ...timeouts,
  };
}
