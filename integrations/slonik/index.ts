/**
 * pg-ra-tls/slonik: Slonik (47.3 or later; 48 and later need Node 22 and
 * declare Node 24) over attested connections.
 *
 * Slonik opens connections through a driver factory (`driverFactory` in
 * `createPool`'s configuration), whose stock pg driver builds a plain
 * `pg.Client` from the connection URI. {@link createRaTlsDriverFactory} is a
 * driver made with Slonik's own `createDriverFactory` whose every connection
 * is a {@link RaTlsClient}: attested before Postgres sees a byte. Where and as
 * whom to connect is still the URI given to `createPool`; how to attest is
 * the factory's options.
 *
 * Slonik's pool hands out an idle connection synchronously, so it cannot
 * re-attest at checkout. Instead the pool never sees an idle connection whose
 * report is older than `reattestEvery`: it is closed and the pool opens a
 * freshly attested one. Connection lifetime is bounded to `reattestEvery`.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import { type Readable, Transform } from 'node:stream';
import pg from 'pg';
import {
  BackendTerminatedError,
  BackendTerminatedUnexpectedlyError,
  CheckExclusionConstraintViolationError,
  CheckIntegrityConstraintViolationError,
  createDriverFactory,
  type DriverClient,
  type DriverClientState,
  type DriverCommand,
  type DriverConfiguration,
  type DriverFactory,
  type DriverQueryResult,
  type DriverStreamResult,
  type DriverTypeParser,
  ForeignKeyIntegrityConstraintViolationError,
  IdleTransactionTimeoutError,
  InputSyntaxError,
  InvalidInputError,
  NotNullIntegrityConstraintViolationError,
  StatementCancelledError,
  StatementTimeoutError,
  UniqueIntegrityConstraintViolationError,
} from 'slonik';
import { sharedClientIdentity } from '../../src/identity/shared-identity.js';
import {
  type AttestationOptions,
  AttestedConnector,
  type ConnectionSettingsInput,
  isRaTlsError,
  RaTlsClient,
  RaTlsError,
  resolveConnectionSettings,
} from '../../src/index.js';
import { pinHooks, type ServerPin, serverPinFor } from '../../src/pool/server-pin.js';
import { CONNECTION_KEYS } from '../shared/pg-module.js';

export { RaTlsClient } from '../../src/index.js';

/** Session settings a Slonik connection may carry besides what Slonik's own configuration sets. */
const SESSION_KEYS = [
  'application_name',
  'options',
  'client_encoding',
  'lock_timeout',
  'keepAlive',
  'keepAliveInitialDelayMillis',
  'servername',
  'connectTimeout',
  'handshakeTimeout',
  'allowCustomRoles',
] as const satisfies readonly (keyof ConnectionSettingsInput)[];
type SessionOptions = Pick<ConnectionSettingsInput, (typeof SESSION_KEYS)[number]>;

/**
 * Options of {@link createRaTlsDriverFactory}: how to attest (`policy`,
 * `verifier`, `reattestEvery`, ...) and session settings. Where and as whom to
 * connect is the URI given to Slonik's `createPool`.
 */
export interface RaTlsDriverOptions extends AttestationOptions, SessionOptions {}

/** The pin of the pool each connection belongs to. */
const pins = new WeakMap<RaTlsClient, ServerPin>();

/** Calls back, inside one `createClient`, with the RaTlsClient the driver made for it. */
const creating = new AsyncLocalStorage<(client: RaTlsClient) => void>();

/**
 * A Slonik driver factory whose connections are attested:
 * `createPool(connectionString, { driverFactory: createRaTlsDriverFactory({ policy }) })`.
 *
 * Bad options throw BAD_CONFIG here; a connection setting in them, Slonik's
 * `ssl` (the transport is pg-ra-tls's) or a bad URI rejects `createPool` with
 * BAD_CONFIG before any network I/O. An attestation failure reaches the caller
 * as the RaTlsError itself (Slonik passes driver errors through).
 */
export function createRaTlsDriverFactory(options: RaTlsDriverOptions = {}): DriverFactory {
  if (options === null || typeof options !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'createRaTlsDriverFactory needs { policy, ... }', {
      details: { option: 'options' },
    });
  }
  for (const key of CONNECTION_KEYS) {
    if ((options as Record<string, unknown>)[key] !== undefined) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `createRaTlsDriverFactory was given ${key}: with Slonik, where and as whom to connect ` +
          "is the connection URI given to Slonik's createPool",
        { details: { option: key } },
      );
    }
  }
  // One connector per factory (verification cache); the process-wide client
  // identity unless one is given, so nothing here needs closing.
  const connector = new AttestedConnector({
    ...options,
    ...(options.clientIdentity === undefined && options.clientCertOverride === undefined
      ? { clientIdentity: sharedClientIdentity(options.dstackEndpoint) }
      : {}),
  });
  const session: Record<string, unknown> = {};
  for (const key of SESSION_KEYS) if (options[key] !== undefined) session[key] = options[key];
  const attested = createDriverFactory(async ({ driverConfiguration }) => {
    const settings = clientSettings(driverConfiguration, session);
    // Slonik's pool keeps these clients: they obey one pin per pool, as a RaTlsPool's do.
    const pin = serverPinFor(connector, {
      mode: 'reverify',
      description: resolveConnectionSettings(settings as ConnectionSettingsInput).description,
    });
    const hooks = pinHooks(pin);
    const types = await typesOf(
      await connectOne(settings, connector, driverConfiguration),
      driverConfiguration.typeParsers,
    );
    return {
      createPoolClient: async ({ clientEventEmitter }) => {
        const client = new RaTlsClient(
          {},
          {
            settings: resolveConnectionSettings({
              ...settings,
              password: await passwordOf(driverConfiguration),
              types,
            } as ConnectionSettingsInput),
            connector,
            hooks,
          },
        );
        pins.set(client, pin);
        creating.getStore()?.(client);
        client.on('error', (error: Error) => clientEventEmitter.emit('error', slonikError(error)));
        client.on('notice', (notice: { message?: string }) => {
          if (notice.message) clientEventEmitter.emit('notice', { message: notice.message });
        });
        return {
          connect: async () => {
            await client.connect();
          },
          end: async () => {
            await client.end();
          },
          query: async (text: string, values?: unknown[], queryOptions?: { name?: string }) => {
            let result: PgResult | PgResult[];
            try {
              result = (await client.query({
                text,
                values: values as unknown[],
                ...(queryOptions?.name === undefined ? {} : { name: queryOptions.name }),
              })) as PgResult | PgResult[];
            } catch (error) {
              throw slonikError(error, { sql: text, values: values ?? [] });
            }
            if (Array.isArray(result)) {
              throw new InvalidInputError('Must not use multiple statements in a single query.');
            }
            return {
              command: result.command as DriverCommand,
              fields: result.fields.map((field) => ({
                dataTypeId: field.dataTypeID,
                name: field.name,
              })),
              rowCount: result.rowCount,
              rows: result.rows,
            } satisfies DriverQueryResult;
          },
          stream: (text: string, values?: unknown[]) => streamOf(client, text, values),
        };
      },
    };
  });
  return async (input) => {
    const driver = await attested(input);
    return {
      createClient: async () => {
        let made: RaTlsClient | undefined;
        const client = await creating.run(
          (ratls) => {
            made = ratls;
          },
          () => driver.createClient(),
        );
        return boundedLifetime(client, () => {
          const pin = made === undefined ? undefined : pins.get(made);
          return pin !== undefined && pin.refusal === undefined && pin.freshness(made!) === 'fresh';
        });
      },
    };
  };
}

/** What pg's `query` resolves to, as far as the driver reads it. */
interface PgResult {
  readonly command: string;
  readonly fields: readonly { readonly dataTypeID: number; readonly name: string }[];
  readonly rowCount: number | null;
  readonly rows: Record<string, unknown>[];
}

/** Slonik's timeouts, where `DISABLE_TIMEOUT` means none and 0 the smallest one (as in Slonik). */
function timeout(value: 'DISABLE_TIMEOUT' | number | undefined): number | undefined {
  if (value === undefined || value === 'DISABLE_TIMEOUT') return undefined;
  return Math.max(1, value);
}

/** The RaTlsClient settings of Slonik's configuration; throws BAD_CONFIG before any I/O. */
function clientSettings(
  configuration: DriverConfiguration,
  session: Record<string, unknown>,
): Record<string, unknown> {
  if (configuration.ssl !== undefined) {
    throw new RaTlsError(
      'BAD_CONFIG',
      "Slonik's ssl option must not be set: pg-ra-tls dials TLS and attests the server itself",
      { details: { option: 'ssl' } },
    );
  }
  const settings: Record<string, unknown> = {
    ...session,
    connectionString: configuration.connectionUri,
  };
  const connectionTimeout = timeout(configuration.connectionTimeout);
  if (connectionTimeout !== undefined) settings.connectionTimeoutMillis = connectionTimeout;
  const statementTimeout = timeout(configuration.statementTimeout);
  if (statementTimeout !== undefined) settings.statement_timeout = statementTimeout;
  const idleInTransaction = timeout(configuration.idleInTransactionSessionTimeout);
  if (idleInTransaction !== undefined) {
    settings.idle_in_transaction_session_timeout = idleInTransaction;
  }
  resolveConnectionSettings(settings as ConnectionSettingsInput);
  return settings;
}

/** Slonik 48+ may take the password apart from the URI, as a string or a function. */
async function passwordOf(configuration: DriverConfiguration): Promise<string | undefined> {
  const password = (configuration as { password?: unknown }).password;
  if (typeof password === 'function') return String(await password());
  return typeof password === 'string' ? password : undefined;
}

/** One attested connection, for looking up the type parsers' oids. */
async function connectOne(
  settings: Record<string, unknown>,
  connector: AttestedConnector,
  configuration: DriverConfiguration,
): Promise<RaTlsClient> {
  const client = new RaTlsClient({
    ...settings,
    password: await passwordOf(configuration),
    connector,
  } as never);
  await client.connect();
  return client;
}

/** pg's parser of `text[]` (oid 1009): the elements of any array as text, for Slonik's parsers. */
const parseTextArray = pg.types.getTypeParser(1009 as never, 'text');

/** pg's `types` with Slonik's type parsers, by the oids this server gives their names. */
async function typesOf(
  client: RaTlsClient,
  parsers: readonly DriverTypeParser[],
): Promise<{ getTypeParser: (oid: number, format?: string) => unknown }> {
  const byOid = new Map<number, (value: string) => unknown>();
  try {
    const { rows } = await client.query<{ oid: number; typarray: number; typname: string }>(
      'select oid::int, typarray::int, typname from pg_type where typname = any($1::text[])',
      [parsers.map((parser) => parser.name)],
    );
    for (const parser of parsers) {
      const row = rows.find((candidate) => candidate.typname === parser.name);
      if (row === undefined) {
        throw new RaTlsError(
          'BAD_CONFIG',
          `Slonik type parser ${parser.name}: no such type in pg_type on this server`,
          { details: { option: 'typeParsers' } },
        );
      }
      byOid.set(row.oid, (value) => parser.parse(value));
      if (row.typarray !== 0) {
        byOid.set(row.typarray, (value) =>
          (parseTextArray(value) as (string | null)[]).map((item) =>
            item === null ? null : parser.parse(item),
          ),
        );
      }
    }
  } finally {
    await client.end();
  }
  return {
    getTypeParser: (oid, format) => byOid.get(oid) ?? pg.types.getTypeParser(oid, format as 'text'),
  };
}

/**
 * Slonik's error classes for what Postgres and pg report, as Slonik's own pg
 * driver gives them (users branch on those); a RaTlsError passes through as it is.
 */
function slonikError(error: unknown, query?: { sql: string; values: readonly unknown[] }): Error {
  if (!(error instanceof Error) || isRaTlsError(error)) return error as Error;
  const message = error.message.toLowerCase();
  if (message.includes('connection terminated unexpectedly')) {
    return new BackendTerminatedUnexpectedlyError(error);
  }
  if (message.includes('connection terminated')) return new BackendTerminatedError(error);
  const cause = error as never;
  switch ((error as { code?: unknown }).code) {
    case '22P02':
      return new InvalidInputError(error.message);
    case '25P03':
      return new IdleTransactionTimeoutError(error);
    case '57P01':
      return new BackendTerminatedError(error);
    case '57014':
      return message.includes('canceling statement due to user request')
        ? new StatementCancelledError(error)
        : new StatementTimeoutError(error);
    case '23502':
      return new NotNullIntegrityConstraintViolationError(cause);
    case '23503':
      return new ForeignKeyIntegrityConstraintViolationError(cause);
    case '23505':
      return new UniqueIntegrityConstraintViolationError(cause);
    case '23P01':
      return new CheckExclusionConstraintViolationError(cause);
    case '23514':
      return new CheckIntegrityConstraintViolationError(cause);
    case '42601':
      return query === undefined ? error : new InputSyntaxError(error, query as never);
    default:
      return error;
  }
}

/**
 * The driver client as Slonik's pool sees it, except that an idle connection
 * whose report is older than `reattestEvery` reads as being destroyed, and is:
 * the pool, which picks idle connections by `state()`, then opens a freshly
 * attested one instead (bounded lifetime; see the module comment).
 */
function boundedLifetime(client: DriverClient, fresh: () => boolean): DriverClient {
  let expired = false;
  const state = (): DriverClientState => {
    const current = client.state();
    if (current !== 'IDLE' || (!expired && fresh())) return current;
    if (!expired) {
      expired = true;
      // Not now: the pool may be iterating over its connections.
      queueMicrotask(() => {
        client.destroy().catch(() => {
          // The connection is gone either way; the pool learns of it by its destroy event.
        });
      });
    }
    return 'PENDING_DESTROY';
  };
  return { ...client, state };
}

/** Where Slonik's own pg driver comes from: its pg-query-stream streams rows. */
type QueryStreamClass = new (text: string, values?: unknown[]) => Readable;
let queryStream: QueryStreamClass | undefined;

/** Rows of one query as Slonik's `stream` wants them: `{ fields, row }` objects. */
function streamOf(
  client: RaTlsClient,
  text: string,
  values: unknown[] | undefined,
): ReturnType<DriverClient['stream']> {
  if (queryStream === undefined) {
    // Installed with Slonik (through @slonik/pg-driver), not by pg-ra-tls.
    const fromSlonik = createRequire(createRequire(import.meta.url).resolve('slonik'));
    const fromDriver = createRequire(fromSlonik.resolve('@slonik/pg-driver'));
    const loaded = fromDriver('pg-query-stream') as
      | QueryStreamClass
      | { default: QueryStreamClass };
    queryStream = 'default' in loaded ? loaded.default : loaded;
  }
  const rows = client.query(new queryStream(text, values) as never) as unknown as Readable;
  let fields: DriverStreamResult['fields'] = [];
  const connection = (client as unknown as { connection: NodeJS.EventEmitter }).connection;
  connection.once(
    'rowDescription',
    (description: { fields: { dataTypeID: number; name: string }[] }) => {
      fields = description.fields.map((field) => ({
        dataTypeId: field.dataTypeID,
        name: field.name,
      }));
    },
  );
  const out = new Transform({
    objectMode: true,
    transform(row: Record<string, unknown>, _encoding, callback) {
      callback(null, { fields, row });
    },
  });
  rows.on('error', (error: unknown) => {
    out.destroy(slonikError(error, { sql: text, values: values ?? [] }));
  });
  return rows.pipe(out) as unknown as ReturnType<DriverClient['stream']>;
}
