/**
 * pg-ra-tls/mikro-orm: MikroORM 6 (`@mikro-orm/postgresql`) over attested connections.
 *
 * MikroORM 6 runs on Knex and merges its `driverOptions` into the Knex
 * configuration, `client` included. The client given here is MikroORM's own
 * PostgreSQL Knex dialect with one change: the pg module it opens connections
 * with is pg with an attested Client, so every connection is attested before
 * Postgres sees a byte. Knex's pool (tarn) keeps its own connections and asks
 * the dialect to validate one at checkout; the dialect refuses a connection
 * whose report is older than `reattestEvery` (or that the pool's server pin
 * no longer accepts, as with `onServerChange`), and the pool replaces it by a
 * freshly attested one: connection lifetime is bounded to `reattestEvery`.
 *
 * MikroORM 7 needs Node 22 and no longer runs on Knex; this module is for 6.x.
 */
import { PostgreSqlKnexDialect } from '@mikro-orm/postgresql';
import { RaTlsError, type RaTlsPoolOptions, resolveConnectionSettings } from '../../src/index.js';
import { boundPgModule } from '../shared/pg-module.js';

/** The MikroORM options {@link mikroOrmOptions} returns; spread them into `MikroORM.init`. */
export interface RaTlsMikroOrmOptions {
  readonly dbName: string;
  readonly driverOptions: { readonly client: typeof PostgreSqlKnexDialect };
}

/**
 * The MikroORM options that make every connection attested:
 * `await MikroORM.init({ ...mikroOrmOptions({ connectionString, policy }), entities })`
 * (with `MikroORM` from `@mikro-orm/postgresql`).
 *
 * Where and as whom to connect are set here only: MikroORM's own `clientUrl`,
 * `host`, `port`, `user` and `password` would be ignored, so do not set them
 * (`dbName` is filled in from the connection string). Pool sizing is
 * MikroORM's `pool` option. Configuration errors throw BAD_CONFIG here,
 * before any network I/O.
 */
export function mikroOrmOptions(options: RaTlsPoolOptions): RaTlsMikroOrmOptions {
  if (options === null || typeof options !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'mikroOrmOptions needs { connectionString, policy, ... }', {
      details: { option: 'options' },
    });
  }
  const database = resolveConnectionSettings(options).database;
  if (database === undefined) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'MikroORM needs the database name: put it in the connection string (or set database)',
      { details: { option: 'database' } },
    );
  }
  // MikroORM fills host, port and user with defaults of its own before Knex
  // calls `new Client(...)`: those are ignored, the options here decide.
  const pgModule = boundPgModule(options, 'MikroORM', 'ignore');
  class RaTlsKnexDialect extends PostgreSqlKnexDialect {
    _driver(): unknown {
      return pgModule;
    }

    validateConnection(connection: unknown): boolean {
      return pgModule.fresh(connection);
    }
  }
  return { dbName: database, driverOptions: { client: RaTlsKnexDialect } };
}
