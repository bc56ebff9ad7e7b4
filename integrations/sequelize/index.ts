/**
 * pg-ra-tls/sequelize: Sequelize (6, postgres dialect) over attested connections.
 *
 * Sequelize takes the `pg` module to use as `dialectModule` and opens each
 * connection with `new dialectModule.Client(...)`; the module given here is
 * pg with an attested Client, so every connection is attested before Postgres
 * sees a byte. Sequelize's own pool checks a connection at checkout with a
 * synchronous `validate`, which cannot re-attest; instead it refuses a
 * connection whose report is older than `reattestEvery` (or that the server
 * pin no longer accepts, as with `onServerChange`), and the pool replaces it
 * by a freshly attested one: connection lifetime is bounded to
 * `reattestEvery`.
 *
 * This module imports nothing of Sequelize at run time.
 */
import type { Options, PoolOptions } from 'sequelize';
import { RaTlsError, type RaTlsPoolOptions } from '../../src/index.js';
import { boundPgModule } from '../shared/pg-module.js';

export type { AttestedPgModule } from '../shared/pg-module.js';

/** Sequelize options that pg-ra-tls decides: the dialect, driver, where and as whom to connect. */
const TRANSPORT_KEYS = [
  'dialect',
  'dialectModule',
  'dialectModulePath',
  'native',
  'host',
  'port',
  'username',
  'password',
  'database',
  'ssl',
  'protocol',
  'replication',
] as const;
/** Keys of `dialectOptions` that would replace the attested transport. */
const TRANSPORT_DIALECT_OPTIONS = ['ssl', 'stream'] as const;

/** Sequelize's own options (models' defaults, logging, pool sizing, ...), minus the transport. */
export type SequelizeOwnOptions = Omit<Options, (typeof TRANSPORT_KEYS)[number]>;

/** Options of {@link sequelizeOptions}: where to connect and how to attest, plus Sequelize's own. */
export interface RaTlsSequelizeOptions extends RaTlsPoolOptions {
  /** Passed to Sequelize as they are, e.g. `{ logging: false, pool: { max: 10 } }`. */
  readonly sequelize?: SequelizeOwnOptions;
}

/** Sequelize connections carry these flags (its postgres connection manager sets them). */
interface SequelizeConnectionState {
  _invalid?: boolean;
  _ending?: boolean;
}

/**
 * Builds Sequelize options whose every connection is attested:
 * `new Sequelize(sequelizeOptions({ connectionString, policy, sequelize: { logging: false } }))`.
 *
 * Pool sizing goes in `sequelize.pool` (Sequelize's own pool); a connection is
 * used for at most `reattestEvery` after its attestation (see the module
 * comment). Configuration errors throw BAD_CONFIG here, before any network
 * I/O. An attestation failure reaches the caller as Sequelize's
 * ConnectionError whose `parent` (and `original`) is the RaTlsError.
 */
export function sequelizeOptions(options: RaTlsSequelizeOptions): Options {
  if (options === null || typeof options !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'sequelizeOptions needs { connectionString, policy, ... }', {
      details: { option: 'options' },
    });
  }
  const { sequelize: own = {}, ...attested } = options;
  for (const key of TRANSPORT_KEYS) {
    if ((own as Record<string, unknown>)[key] !== undefined) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `sequelize.${key} must not be set: pg-ra-tls decides the driver, transport and login ` +
          '(pass connectionString or host/port/user/password/database at the top level)',
        { details: { option: `sequelize.${key}` } },
      );
    }
  }
  const dialectOptions = (own.dialectOptions ?? {}) as Record<string, unknown>;
  for (const key of TRANSPORT_DIALECT_OPTIONS) {
    if (dialectOptions[key] !== undefined) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `sequelize.dialectOptions.${key} must not be set: pg-ra-tls carries Postgres in its own ` +
          'attested TLS connection',
        { details: { option: `sequelize.dialectOptions.${key}` } },
      );
    }
  }
  // Sequelize fills host, port and user with defaults of its own before it
  // calls `new Client(...)`: those are ignored, the options here decide.
  const dialectModule = boundPgModule(attested, 'Sequelize', 'ignore');
  const ownPool: PoolOptions = own.pool ?? {};
  const ownValidate = ownPool.validate;
  const validate = (connection?: unknown): boolean => {
    const state = connection as SequelizeConnectionState | undefined;
    // Sequelize's own check, which a `validate` option would otherwise replace.
    if (state === undefined || state._invalid === true || state._ending === true) return false;
    if (!dialectModule.fresh(connection)) return false;
    return ownValidate === undefined ? true : ownValidate(connection) !== false;
  };
  return {
    ...own,
    dialect: 'postgres',
    dialectModule,
    native: false,
    pool: { ...ownPool, validate },
  };
}
