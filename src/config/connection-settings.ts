import { isIP } from 'node:net';
import type { ClientConfig } from 'pg';
import { RaTlsError } from '../errors.js';
import { closestName } from '../util/did-you-mean.js';
import { parseTimeout } from '../util/duration.js';
import { assertKnownOptions } from '../util/known-options.js';
import { type ParsedConnectionString, parseConnectionString } from './connection-string.js';
import { checkTeesqlCredentials } from './credentials.js';

/** Where and as whom to connect, as discrete fields (they override the connection string). */
export interface ConnectionConfigInput {
  readonly host?: string;
  readonly port?: number | string;
  readonly user?: string;
  readonly password?: string;
  readonly database?: string;
}

/** node-postgres session options pg-ra-tls passes through unchanged. */
export type PgSessionOptions = Pick<
  ClientConfig,
  | 'application_name'
  | 'fallback_application_name'
  | 'options'
  | 'client_encoding'
  | 'statement_timeout'
  | 'query_timeout'
  | 'lock_timeout'
  | 'idle_in_transaction_session_timeout'
  | 'keepAlive'
  | 'keepAliveInitialDelayMillis'
  | 'connectionTimeoutMillis'
  | 'types'
  | 'pipeline'
>;

/** node-postgres's session settings, passed through to pg as given. */
export const SESSION_KEYS = [
  'application_name',
  'fallback_application_name',
  'options',
  'client_encoding',
  'statement_timeout',
  'query_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'keepAlive',
  'keepAliveInitialDelayMillis',
  'connectionTimeoutMillis',
  'types',
  'pipeline',
] as const satisfies readonly (keyof PgSessionOptions)[];

/**
 * Every key {@link resolveConnectionSettings} knows: pg-ra-tls's own and each
 * key of node-postgres's `ClientConfig`, so that a pg configuration moves over
 * unchanged (the ones that would bypass the attested TLS are refused with
 * their reason, the others are passed on).
 */
export const CONNECTION_OPTION_KEYS: readonly string[] = Object.freeze([
  'connectionString',
  'config',
  'host',
  'port',
  'user',
  'password',
  'database',
  'servername',
  'allowCustomRoles',
  'connectTimeout',
  'handshakeTimeout',
  'native',
  'ssl',
  'sslnegotiation',
  'enableChannelBinding',
  'stream',
  ...SESSION_KEYS,
]);

/**
 * pg-pool's options. A pool passes them on; a client ignores them, as
 * `pg.Client` does, so one pg configuration serves both (pg-promise does that).
 */
export const PG_POOL_OPTION_KEYS = [
  'max',
  'min',
  'idleTimeoutMillis',
  'allowExitOnIdle',
  'maxUses',
  'maxLifetimeSeconds',
  'log',
  'onConnect',
  'connectionTimeoutMillis',
  'Promise',
  'verify',
] as const;

const CONFIG_KEYS = ['host', 'port', 'user', 'password', 'database'] as const;

/** Everything that decides the transport and the Postgres login of one connection. */
export interface ConnectionSettingsInput extends ConnectionConfigInput, PgSessionOptions {
  /** `postgres://user:secret@host:5433/db` or libpq `host=... port=... user=...`. */
  readonly connectionString?: string;
  /** Discrete fields; override `connectionString` and the top-level fields. */
  readonly config?: ConnectionConfigInput;
  /** TLS SNI; defaults to the host unless it is an IP address (RFC 6066). */
  readonly servername?: string;
  /** Skip the teesql role/secret check (for non-teesql servers). Default false. */
  readonly allowCustomRoles?: boolean;
  /** TCP connect timeout; default `"10s"` (or the connection string's connect_timeout). */
  readonly connectTimeout?: number | string;
  /** TLS handshake timeout; default `"10s"`. */
  readonly handshakeTimeout?: number | string;
  /** Refused: pg-native cannot carry an attested socket. */
  readonly native?: boolean;
  /** Refused unless false: pg-ra-tls carries Postgres in its own attested TLS. */
  readonly ssl?: unknown;
  /** Refused: pg-ra-tls's TLS starts with the first byte, there is nothing to negotiate. */
  readonly sslnegotiation?: unknown;
  /** Refused unless false: it binds pg's own TLS, which pg-ra-tls replaces by an attested one. */
  readonly enableChannelBinding?: boolean;
  /** Refused: the stream is the attested socket. */
  readonly stream?: unknown;
}

/** One server endpoint and the transport limits to reach it: what a dial needs. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** SNI to send; undefined for an IP address without an explicit servername. */
  readonly servername?: string | undefined;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
}

/** Resolved, validated, frozen connection settings. The password is not enumerable. */
export interface ConnectionSettings {
  readonly host: string;
  readonly port: number;
  /** SNI to send; undefined for an IP address without an explicit servername. */
  readonly servername: string | undefined;
  readonly user: string | undefined;
  readonly password: string | undefined;
  readonly database: string | undefined;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  readonly session: Readonly<PgSessionOptions>;
  /** `postgres://user:****@host:port/db`, safe to log. */
  readonly description: string;
  /** The endpoint to dial (host, port, SNI, timeouts), resolved once here. */
  readonly endpoint: Endpoint;
}

/** Port of the teesql sidecar (docs/protocol.md §5), used when none is given. */
export const DEFAULT_SIDECAR_PORT = 5433;
const DEFAULT_TIMEOUT = '10s';

/** DSN parameters that configure libpq's own TLS or host selection: meaningless here, dropped. */
const IGNORED_PARAMETERS = new Set([
  'sslmode',
  'ssl',
  'sslcert',
  'sslkey',
  'sslrootcert',
  'sslcrl',
  'sslcrldir',
  'sslpassword',
  'sslnegotiation',
  'sslcompression',
  'sslsni',
  'ssl_min_protocol_version',
  'ssl_max_protocol_version',
  'requiressl',
  'gssencmode',
  'channel_binding',
  'target_session_attrs',
  'uselibpqcompat',
]);
const STRING_PARAMETERS = [
  'application_name',
  'fallback_application_name',
  'options',
  'client_encoding',
] as const;
const MS_PARAMETERS = [
  'statement_timeout',
  'query_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
] as const;

/**
 * Resolves connection settings from a connection string and/or discrete fields.
 * Pure apart from reading `env`: NODE_PG_FORCE_NATIVE, and PGHOST, PGHOSTADDR, PGPORT,
 * PGUSER, PGPASSWORD, PGDATABASE, PGAPPNAME and PGCONNECT_TIMEOUT for what neither the
 * options nor the connection string set (as pg does); PGSSLMODE is ignored on purpose
 * (our own TLS carries pg). Throws BAD_CONFIG, BAD_CREDENTIALS or PG_NATIVE_UNSUPPORTED
 * before any network I/O.
 */
export function resolveConnectionSettings(
  input: ConnectionSettingsInput,
  env: NodeJS.ProcessEnv = process.env,
): ConnectionSettings {
  if (input.native === true || (env['NODE_PG_FORCE_NATIVE'] ?? '') !== '') {
    throw new RaTlsError(
      'PG_NATIVE_UNSUPPORTED',
      'pg-native (native: true or NODE_PG_FORCE_NATIVE) cannot carry an attested TLS socket: ' +
        'use the pure JavaScript pg client',
    );
  }
  if (input.ssl !== undefined && input.ssl !== false) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'ssl must not be set: pg-ra-tls carries Postgres inside its own attested TLS connection',
      { details: { option: 'ssl' } },
    );
  }
  if (input.sslnegotiation !== undefined) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'sslnegotiation must not be set: pg-ra-tls speaks TLS from the first byte itself',
      { details: { option: 'sslnegotiation' } },
    );
  }
  if (input.enableChannelBinding !== undefined && input.enableChannelBinding !== false) {
    throw new RaTlsError(
      'BAD_CONFIG',
      "enableChannelBinding must not be set: it binds pg's own TLS; pg-ra-tls binds the attestation to its TLS key instead",
      { details: { option: 'enableChannelBinding' } },
    );
  }
  if (input.config !== undefined && input.config !== null && typeof input.config === 'object') {
    assertKnownOptions(input.config, CONFIG_KEYS, 'config', 'config.');
  }
  if (input.stream !== undefined) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'stream must not be set: pg-ra-tls gives pg the attested socket itself',
      { details: { option: 'stream' } },
    );
  }

  const parsed =
    input.connectionString === undefined
      ? { parameters: {} as Record<string, string> }
      : parseConnectionString(input.connectionString);

  const session: Record<string, unknown> = {};
  let connectTimeoutDefault: number | string = DEFAULT_TIMEOUT;
  for (const [key, value] of Object.entries(parsed.parameters)) {
    if (IGNORED_PARAMETERS.has(key)) continue;
    if ((STRING_PARAMETERS as readonly string[]).includes(key)) {
      session[key] = value;
    } else if ((MS_PARAMETERS as readonly string[]).includes(key)) {
      // Postgres and pg's query timer hold at most 2^31-1 ms, as a Node timer does.
      session[key] = parseTimeout(value, `connection string parameter ${key}`);
    } else if (key === 'connect_timeout') {
      // libpq: seconds, and 0 means "wait forever", which we do not allow.
      const seconds = Number(value);
      if (Number.isFinite(seconds) && seconds > 0) connectTimeoutDefault = seconds * 1000;
    } else {
      throw unsupportedParameter(key);
    }
  }
  const fromEnv = environmentDefaults(env);
  if (fromEnv.application_name !== undefined)
    session['application_name'] ??= fromEnv.application_name;
  if (parsed.parameters['connect_timeout'] === undefined && fromEnv.connectTimeoutMs !== undefined)
    connectTimeoutDefault = fromEnv.connectTimeoutMs;
  for (const key of SESSION_KEYS) {
    if (input[key] !== undefined) session[key] = input[key];
  }

  // pg's precedence: discrete fields, then the connection string, then PG* variables.
  const fields = {
    ...fromEnv.fields,
    ...parsed,
    ...definedFields(input),
    ...definedFields(input.config ?? {}),
  };
  // libpq semantics: `hostaddr` is where TCP goes, `host` stays the name (here: the TLS SNI,
  // which the dstack gateway routes by, docs/protocol.md §5).
  const name = fields.host === '' ? undefined : fields.host;
  const host = fields.hostaddr ?? name;
  if (host === undefined || host === '') {
    throw new RaTlsError(
      'BAD_CONFIG',
      'no host is set: pass connectionString (postgres://user:secret@host:5433/db) or config.host',
      { details: { option: 'host' } },
    );
  }
  if (host.startsWith('/')) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `host ${JSON.stringify(host)} is a unix socket directory; the teesql sidecar is reached over TCP`,
      { details: { option: 'host' } },
    );
  }
  const port = parsePort(fields.port);

  if (input.allowCustomRoles !== true) checkTeesqlCredentials(fields.user, fields.password);

  const servername =
    input.servername ?? (name !== undefined && isIP(name) === 0 ? name : undefined);
  const hostInUrl = isIP(host) === 6 ? `[${host}]` : host;
  const userInUrl =
    fields.user === undefined
      ? ''
      : `${encodeURIComponent(fields.user)}${fields.password === undefined ? '' : ':****'}@`;
  const endpoint: Endpoint = Object.freeze({
    host,
    port,
    servername,
    connectTimeoutMs: parseTimeout(input.connectTimeout ?? connectTimeoutDefault, 'connectTimeout'),
    handshakeTimeoutMs: parseTimeout(input.handshakeTimeout ?? DEFAULT_TIMEOUT, 'handshakeTimeout'),
  });
  const settings: ConnectionSettings = {
    host,
    port,
    servername,
    user: fields.user,
    password: fields.password,
    database: fields.database,
    connectTimeoutMs: endpoint.connectTimeoutMs,
    handshakeTimeoutMs: endpoint.handshakeTimeoutMs,
    endpoint,
    session: Object.freeze(session as PgSessionOptions),
    description: `postgres://${userInUrl}${hostInUrl}:${port}/${fields.database ?? ''}`,
  };
  // Hidden from console.log and JSON, as pg does with its own password field.
  Object.defineProperty(settings, 'password', { enumerable: false });
  return Object.freeze(settings);
}

/**
 * The node-postgres client config for settings: `ssl: false` always, because the
 * attested TLS socket already carries the session (docs/protocol.md §5: no SSLRequest).
 */
export function toPgClientConfig(settings: ConnectionSettings): ClientConfig {
  const config: ClientConfig = {
    ...settings.session,
    host: settings.host,
    port: settings.port,
    ssl: false,
  };
  if (settings.user !== undefined) config.user = settings.user;
  if (settings.database !== undefined) config.database = settings.database;
  if (settings.password !== undefined) {
    Object.defineProperty(config, 'password', {
      value: settings.password,
      enumerable: false,
      writable: true,
      configurable: true,
    });
  }
  return config;
}

/** libpq parameters pg-ra-tls knows and refuses by name (the name is safe to echo). */
const UNSUPPORTED_LIBPQ_PARAMETERS = [
  'service',
  'passfile',
  'krbsrvname',
  'gsslib',
  'gssdelegation',
  'requirepeer',
  'require_auth',
  'load_balance_hosts',
  'replication',
  'keepalives',
  'keepalives_idle',
  'keepalives_interval',
  'keepalives_count',
  'tcp_user_timeout',
  'min_protocol_version',
  'max_protocol_version',
  'sslkeylogfile',
];
const KNOWN_PARAMETERS = [
  'host',
  'hostaddr',
  'port',
  'user',
  'password',
  'dbname',
  'connect_timeout',
  ...STRING_PARAMETERS,
  ...MS_PARAMETERS,
  ...IGNORED_PARAMETERS,
];

/**
 * BAD_CONFIG for a connection string parameter pg-ra-tls does not take. An
 * unknown name is not echoed: in a URL whose password holds an unencoded "?"
 * or "&", or a keyword string with an unquoted space in it, the "parameter"
 * is a piece of the password. Only a name from our own lists is named.
 */
function unsupportedParameter(key: string): RaTlsError {
  if (UNSUPPORTED_LIBPQ_PARAMETERS.includes(key)) {
    return new RaTlsError(
      'BAD_CONFIG',
      `connection string parameter ${JSON.stringify(key)} is not supported by pg-ra-tls: remove it`,
      { details: { option: 'connectionString', parameter: key } },
    );
  }
  const suggestion = closestName(key, KNOWN_PARAMETERS);
  return new RaTlsError(
    'BAD_CONFIG',
    'connection string has a parameter pg-ra-tls does not know (not shown: it may be part of a ' +
      'password with an unencoded "?", "&" or space)' +
      (suggestion === undefined
        ? `; supported: ${[...STRING_PARAMETERS, ...MS_PARAMETERS, 'connect_timeout', 'hostaddr'].join(', ')}`
        : `: did you mean ${JSON.stringify(suggestion)}?`),
    {
      details: {
        option: 'connectionString',
        ...(suggestion === undefined ? {} : { suggestion }),
      },
    },
  );
}

/**
 * The PG* environment variables node-postgres and libpq read, for fields
 * neither the options nor the connection string set. PGSSLMODE and the other
 * TLS variables are ignored on purpose: our own attested TLS carries pg.
 */
function environmentDefaults(env: NodeJS.ProcessEnv): {
  fields: Partial<Omit<ParsedConnectionString, 'parameters'>>;
  application_name?: string;
  connectTimeoutMs?: number;
} {
  const read = (name: string) => {
    const value = env[name];
    return value === undefined || value === '' ? undefined : value;
  };
  const fields: Record<string, string> = {};
  for (const [field, name] of [
    ['host', 'PGHOST'],
    ['hostaddr', 'PGHOSTADDR'],
    ['port', 'PGPORT'],
    ['user', 'PGUSER'],
    ['password', 'PGPASSWORD'],
    ['database', 'PGDATABASE'],
  ] as const) {
    const value = read(name);
    if (value !== undefined) fields[field] = value;
  }
  const appName = read('PGAPPNAME');
  const seconds = Number(read('PGCONNECT_TIMEOUT'));
  return {
    fields,
    ...(appName === undefined ? {} : { application_name: appName }),
    ...(Number.isFinite(seconds) && seconds > 0 ? { connectTimeoutMs: seconds * 1000 } : {}),
  };
}

function definedFields(input: ConnectionConfigInput): {
  host?: string;
  port?: string | number;
  user?: string;
  password?: string;
  database?: string;
} {
  const out: Record<string, string | number> = {};
  for (const key of ['host', 'port', 'user', 'password', 'database'] as const) {
    const value = input[key];
    if (value !== undefined) out[key] = value;
  }
  return out;
}

function parsePort(value: string | number | undefined): number {
  if (value === undefined || value === '') return DEFAULT_SIDECAR_PORT;
  const port = typeof value === 'number' ? value : /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new RaTlsError(
      'BAD_CONFIG',
      // Only a number is echoed: in a malformed keyword string (`port= password=…`)
      // the value read as the port may be the password.
      Number.isNaN(port)
        ? 'port is not a number from 1 to 65535 (its value is not shown: check the connection string around port=)'
        : `port ${port} is not a TCP port (1-65535)`,
      {
        details: { option: 'port' },
      },
    );
  }
  return port;
}
