import type { Duplex } from 'node:stream';
import type { ClientConfig } from 'pg';
import type { AttestationReport } from '../attest/report.js';
import {
  CONNECTION_OPTION_KEYS,
  type ConnectionSettingsInput,
  resolveConnectionSettings,
  toPgClientConfig,
} from '../config/connection-settings.js';
import { RaTlsError } from '../errors.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import { assertKnownOptions } from '../util/known-options.js';
import { type AttestationOptions, CONNECTOR_OWNED } from './attested-connector.js';
import {
  assertInspectOptions,
  assertOptionsObject,
  createConnector,
  type InspectServerOptions,
  inspectServer,
  type ServerTarget,
} from './inspect-server.js';
import { prepareSocketForPg } from './socket-hand-off.js';

export type { ServerTarget } from './inspect-server.js';

/** Options of {@link verifyServer}. */
export type VerifyServerOptions = InspectServerOptions;

/**
 * Dials a server, verifies the attestation of its certificate and the policy,
 * and closes the connection: no Postgres session, no credentials needed.
 * Resolves with the {@link AttestationReport}; rejects with a RaTlsError.
 * {@link inspectServer} returns everything it saw instead of throwing.
 */
export async function verifyServer(
  target: ServerTarget,
  options: VerifyServerOptions,
): Promise<AttestationReport> {
  assertInspectOptions(options, 'verifyServer');
  const inspection = await inspectServer(target, options);
  if (inspection.error !== undefined) throw inspection.error;
  return inspection.report!;
}

/** Every option {@link pgConnectOptsRaTls} knows (the DSN is its first argument). */
const PG_CONNECT_OPTS_KEYS: readonly string[] = Object.freeze([
  ...CONNECTION_OPTION_KEYS.filter((key) => key !== 'connectionString'),
  ...CONNECTOR_OWNED,
  'signal',
]);

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
  assertOptionsObject(options, 'pgConnectOptsRaTls');
  assertKnownOptions(options, PG_CONNECT_OPTS_KEYS, 'pgConnectOptsRaTls');
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
        const result = await connector.open(settings.endpoint, { signal: options.signal });
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
