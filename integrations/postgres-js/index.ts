/**
 * pg-ra-tls/postgres-js: postgres.js over attested connections.
 *
 * postgres.js takes a `socket` factory and, with `ssl: false`, writes its
 * StartupMessage on whatever socket the factory resolves (measured on 3.4.9;
 * a truthy `ssl` would send an SSLRequest inside our TLS, docs/protocol.md §5).
 * Each call of the factory dials the server with TLS from the first byte and
 * attests its certificate (verification cached per fingerprint for
 * `reattestEvery`); postgres.js also calls it for cancel requests, which thus
 * travel over an attested connection too.
 */
import type { Socket } from 'node:net';
import postgres from 'postgres';
import { CONNECTION_OPTION_KEYS } from '../../src/config/connection-settings.js';
import { CONNECTOR_OWNED } from '../../src/connection/ra-tls-client.js';
import {
  type AttestationOptions,
  AttestedConnector,
  type ConnectionSettings,
  type ConnectionSettingsInput,
  RaTlsError,
  resolveConnectionSettings,
} from '../../src/index.js';
import { assertKnownOptions } from '../../src/util/known-options.js';

type PostgresTypes = Record<string, postgres.PostgresType>;

/** postgres.js options that pg-ra-tls decides: where to connect, as whom, and the transport. */
const TRANSPORT_KEYS = [
  'host',
  'hostname',
  'port',
  'path',
  'ssl',
  'sslnegotiation',
  'socket',
  'user',
  'username',
  'pass',
  'password',
  'database',
  'db',
] as const;

/** postgres.js's own options (pool size, timeouts, transforms, ...), minus the transport. */
export type PostgresJsOptions = Omit<
  postgres.Options<PostgresTypes>,
  (typeof TRANSPORT_KEYS)[number]
>;

/** Options of {@link postgresOptions}: where to connect and how to attest, plus postgres.js's own. */
export interface RaTlsPostgresOptions extends ConnectionSettingsInput, AttestationOptions {
  /** Passed to postgres.js as they are, e.g. `{ max: 10, idle_timeout: 20 }`. */
  readonly postgres?: PostgresJsOptions;
}

/** The postgres.js options {@link postgresOptions} returns; `socket` is not in postgres.js's types. */
export type RaTlsPostgresJsOptions = postgres.Options<PostgresTypes> & {
  readonly ssl: false;
  readonly socket: () => Promise<Socket>;
};

/** Session settings that are Postgres startup parameters; postgres.js sends them as `connection`. */
const STARTUP_PARAMETERS = [
  'application_name',
  'options',
  'client_encoding',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
] as const;
/** node-postgres-only settings with a postgres.js counterpart of another name or none. */
const PG_ONLY_SETTINGS = [
  'query_timeout',
  'keepAlive',
  'keepAliveInitialDelayMillis',
  'connectionTimeoutMillis',
  'types',
  'pipeline',
] as const;

/**
 * Builds postgres.js options whose every connection is attested:
 * `const sql = postgres(postgresOptions({ connectionString, policy }))`.
 * Configuration errors throw BAD_CONFIG here, before any network I/O; an
 * attestation failure rejects the query that opened the connection with the
 * RaTlsError.
 */
export function postgresOptions(options: RaTlsPostgresOptions): RaTlsPostgresJsOptions {
  if (options === null || typeof options !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'postgresOptions needs { connectionString, policy, ... }', {
      details: { option: 'options' },
    });
  }
  const { postgres: own = {}, ...attested } = options;
  for (const key of TRANSPORT_KEYS) {
    if ((own as Record<string, unknown>)[key] !== undefined) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `postgres.${key} must not be set: pg-ra-tls decides the transport and login ` +
          '(pass connectionString or host/port/user/password/database at the top level)',
        { details: { option: `postgres.${key}` } },
      );
    }
  }
  for (const key of PG_ONLY_SETTINGS) {
    if (attested[key] !== undefined) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `${key} is a node-postgres option; with postgres.js use its own options under postgres ` +
          '(e.g. connect_timeout, idle_timeout, keep_alive)',
        { details: { option: key } },
      );
    }
  }
  assertKnownOptions(
    attested,
    [...CONNECTION_OPTION_KEYS, ...CONNECTOR_OWNED, 'postgres'],
    'postgresOptions',
  );
  const { settings, connector } = connectionSource(attested);
  const target = settings.endpoint;
  const startup: Record<string, string> = {};
  for (const key of STARTUP_PARAMETERS) {
    const value = settings.session[key];
    if (value !== undefined) startup[key] = String(value);
  }
  const password = settings.password;
  return {
    ...own,
    host: settings.host,
    port: settings.port,
    ...(settings.user === undefined ? {} : { user: settings.user }),
    ...(settings.database === undefined ? {} : { database: settings.database }),
    connection: { ...startup, ...own.connection },
    // docs/protocol.md §5: the socket is TLS already; no SSLRequest may precede the startup.
    ssl: false,
    // A function, so that logging the options never prints the secret (postgres.js calls it).
    ...(password === undefined ? {} : { password: () => password }),
    socket: async (): Promise<Socket> => (await connector.open(target)).socket,
  } as RaTlsPostgresJsOptions;
}

/**
 * Creates a postgres.js `sql` whose every connection is attested:
 * `const sql = raTlsPostgres({ connectionString, policy })`; close it with `sql.end()`.
 */
export function raTlsPostgres(options: RaTlsPostgresOptions): postgres.Sql {
  return postgres(postgresOptions(options));
}

/**
 * Validated settings (BAD_CONFIG / BAD_CREDENTIALS before any I/O) and an
 * attested connector for them, with its per-fingerprint verification cache
 * and client identity.
 */
function connectionSource(options: ConnectionSettingsInput & AttestationOptions): {
  settings: ConnectionSettings;
  connector: AttestedConnector;
} {
  const settings = resolveConnectionSettings(options);
  return { settings, connector: new AttestedConnector(options) };
}
