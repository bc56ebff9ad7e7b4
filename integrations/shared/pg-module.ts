/**
 * Attested stand-ins for the `pg` module, for query layers that accept a pg
 * module of the caller's choosing (TypeORM's `driver`, Sequelize's
 * `dialectModule`, pg-promise's `pgp.pg`). Internal to the integrations: not a
 * subpath of its own.
 *
 * The stand-in carries everything of pg (types, defaults, errors, escaping)
 * except `native`: an ORM that finds `pg.native` may switch to pg-native,
 * which cannot carry an attested socket, so it is always `null` here.
 */
import pg from 'pg';
import { SESSION_KEYS as PG_SESSION_KEYS } from '../../src/config/connection-settings.js';
import { sharedClientIdentity } from '../../src/identity/shared-identity.js';
import {
  AttestedConnector,
  type ConnectionSettingsInput,
  createPool,
  RaTlsClient,
  RaTlsError,
  RaTlsPool,
  type RaTlsPoolOptions,
  resolveConnectionSettings,
} from '../../src/index.js';
import { POOL_OPTION_KEYS } from '../../src/pool/ra-tls-pool.js';
import { pinHooks, serverChangeMode, serverPinFor } from '../../src/pool/server-pin.js';
import { assertKnownOptions } from '../../src/util/known-options.js';

/** The parts of the `pg` module the ORMs use, with attested Pool and Client. */
export interface AttestedPgModule {
  readonly Pool: new (config?: never) => pg.Pool;
  readonly Client: new (config?: never) => pg.Client;
  readonly types: typeof pg.types;
  readonly defaults: typeof pg.defaults;
  readonly native: null;
  readonly [key: string]: unknown;
}

/** pg's exports minus `native` (a getter that would load pg-native), plus attested classes. */
function pgModuleWith(
  Pool: AttestedPgModule['Pool'],
  Client: AttestedPgModule['Client'],
): AttestedPgModule {
  const module: Record<string, unknown> = {};
  for (const key of Object.getOwnPropertyNames(pg)) {
    if (key === 'native' || key === 'default') continue;
    const descriptor = Object.getOwnPropertyDescriptor(pg, key);
    if (descriptor !== undefined) Object.defineProperty(module, key, descriptor);
  }
  Object.assign(module, { Pool, Client, native: null });
  return Object.freeze(module) as unknown as AttestedPgModule;
}

/**
 * The pg module whose `Pool` is {@link RaTlsPool} and `Client` is
 * {@link RaTlsClient}: whatever options the ORM passes to `new Pool(...)` or
 * `new Client(...)` are pg-ra-tls options (connection string, policy, ...).
 */
export const attestedPg: AttestedPgModule = pgModuleWith(
  RaTlsPool as unknown as AttestedPgModule['Pool'],
  RaTlsClient as unknown as AttestedPgModule['Client'],
);

/** Keys of the configuration an ORM may hand `new Pool(...)`/`new Client(...)` that we honour. */
const POOL_KEYS = [
  'max',
  'min',
  'idleTimeoutMillis',
  'allowExitOnIdle',
  'maxUses',
  'maxLifetimeSeconds',
  'connectionTimeoutMillis',
] as const;
/**
 * Session settings an ORM may set: pg's own (connectionTimeoutMillis is a pool
 * key here; `pipeline` stays pg-ra-tls's own option).
 */
const SESSION_KEYS = PG_SESSION_KEYS.filter(
  (key) => key !== 'connectionTimeoutMillis' && key !== 'pipeline',
);
/** Where and as whom to connect, and the transport: only pg-ra-tls's own options decide these. */
export const CONNECTION_KEYS = [
  'connectionString',
  'host',
  'port',
  'user',
  'password',
  'database',
  'ssl',
  'stream',
  'config',
] as const;

/** How a bound module treats connection settings in the ORM's configuration. */
export type OrmConnectionKeys = 'refuse' | 'ignore';

/**
 * A pg module bound to one set of pg-ra-tls options: `new Pool(ormConfig)`
 * is a {@link RaTlsPool} (attested at open, re-attested at checkout) and
 * `new Client(ormConfig)` a {@link RaTlsClient} sharing one connector
 * (verification cache). From the ORM's configuration only pool sizing and
 * session settings are taken (they win over `options`); connection settings
 * there are refused with BAD_CONFIG (`refuse`) or, for an ORM that fills them
 * with defaults of its own, ignored (`ignore`).
 */
export function boundPgModule(
  options: RaTlsPoolOptions,
  ormName: string,
  connectionKeys: OrmConnectionKeys,
): AttestedPgModule & {
  readonly connector: AttestedConnector;
  /**
   * True while `connection` may be used as it is (see ServerPin's freshness):
   * for ORM pools whose checkout check is synchronous, so a connection whose
   * report is due, or that is attested to a certificate no longer pinned, is
   * closed and replaced by a freshly attested one instead of being
   * re-attested in place (its lifetime is bounded by `reattestEvery`).
   */
  readonly fresh: (connection: unknown) => boolean;
} {
  if (options === null || typeof options !== 'object') {
    throw new RaTlsError('BAD_CONFIG', `${ormName} needs { connectionString, policy, ... }`, {
      details: { option: 'options' },
    });
  }
  // Resolve now, so that configuration errors throw before any network I/O.
  assertKnownOptions(options, POOL_OPTION_KEYS, `${ormName} (pg-ra-tls options)`);
  const { description } = resolveConnectionSettings(options);
  const mode = serverChangeMode(options.onServerChange);
  // Like a standalone RaTlsClient: the process-wide client identity unless one
  // is given, so that this connector owns nothing that would need closing.
  const connector = new AttestedConnector({
    ...options,
    ...(options.clientIdentity === undefined && options.clientCertOverride === undefined
      ? { clientIdentity: sharedClientIdentity(options.dstackEndpoint) }
      : {}),
  });
  const fromOrm = (config: unknown, keys: readonly string[]): Record<string, unknown> => {
    const picked: Record<string, unknown> = {};
    if (config === null || typeof config !== 'object') return picked;
    const record = config as Record<string, unknown>;
    if (connectionKeys === 'refuse') {
      for (const key of CONNECTION_KEYS) {
        if (record[key] !== undefined) {
          throw new RaTlsError(
            'BAD_CONFIG',
            `${ormName} was given ${key}: with pg-ra-tls, where and as whom to connect are ` +
              `set in the pg-ra-tls options only (connectionString, host, user, ...)`,
            { details: { option: key } },
          );
        }
      }
    }
    for (const key of keys) if (record[key] !== undefined) picked[key] = record[key];
    return picked;
  };
  const Pool = class extends RaTlsPool {
    constructor(config?: unknown) {
      super({ ...options, ...fromOrm(config, [...POOL_KEYS, ...SESSION_KEYS]) });
    }
  };
  // The ORM's own pool keeps these clients: they obey one pin, as a RaTlsPool's do.
  const pin = serverPinFor(connector, { mode, description });
  const hooks = pinHooks(pin);
  const Client = class extends RaTlsClient {
    constructor(config?: unknown) {
      const settings = resolveConnectionSettings({
        ...options,
        ...(fromOrm(config, SESSION_KEYS) as ConnectionSettingsInput),
      });
      super({}, { settings, connector, hooks });
    }
  };
  return Object.freeze({
    ...pgModuleWith(
      Pool as unknown as AttestedPgModule['Pool'],
      Client as unknown as AttestedPgModule['Client'],
    ),
    connector,
    fresh: (connection: unknown) =>
      connection instanceof RaTlsClient &&
      pin.refusal === undefined &&
      pin.freshness(connection) === 'fresh',
  });
}

export { createPool };
