/**
 * pg-ra-tls/knex: Knex (3.3 or later) over attested connections.
 *
 * Knex 3.3 takes an external pg pool as `connectionPool` and then checks its
 * connections out with `pool.connect()`. Given a {@link RaTlsPool} that is
 * where every connection is attested before Postgres sees a byte and
 * re-attested at checkout once its report is older than `reattestEvery`, so
 * queries, transactions and `knex.migrate` all run attested. Knex's own
 * tarn pool is never created (its `validate` could only drop connections).
 */
import knexFactory, { type Knex } from 'knex';
import { createPool, RaTlsError, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';

export { createPool, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';

/** Knex's own configuration minus what pg-ra-tls decides: the client, connection and pool. */
export type KnexOptions = Omit<
  Knex.Config,
  'client' | 'connection' | 'connectionPool' | 'pool' | 'acquireConnectionTimeout'
>;

/**
 * Options of {@link knex}: Knex's configuration plus either `connection`
 * (pool options, as for `createPool`; `knex.destroy()` ends the pool) or
 * `connectionPool` (an existing RaTlsPool, whose lifetime stays the caller's).
 */
export type RaTlsKnexConfig = KnexOptions &
  ({ readonly connection: RaTlsPoolOptions } | { readonly connectionPool: RaTlsPool });

const pools = new WeakMap<object, RaTlsPool>();

/**
 * The attested pool under a Knex instance made by {@link knex}: its events
 * (`attested`, `reattested`, `serverChanged`), `attestation` and counters.
 */
export function attestedPool(instance: Knex): RaTlsPool | undefined {
  return pools.get(instance);
}

/** Keys of Knex's configuration that would bypass or duplicate the attested pool. */
const REFUSED_KEYS = ['client', 'pool', 'acquireConnectionTimeout'] as const;

/**
 * Creates a Knex instance whose every connection is attested:
 * `knex({ connection: { connectionString, policy, max: 10 }, migrations })`.
 * Pool sizing and timeouts go in `connection` (`max`, `min`,
 * `idleTimeoutMillis`, `connectionTimeoutMillis`, `reattestEvery`), not in
 * Knex's `pool`. Configuration errors throw BAD_CONFIG here, before any
 * network I/O; an attestation failure rejects the query with the RaTlsError
 * itself (Knex passes the pool's error through).
 */
export function knex<TRecord extends {} = Record<string, unknown>, TResult = unknown[]>(
  config: RaTlsKnexConfig,
): Knex<TRecord, TResult> {
  const { knexOptions, connectionPool, owned } = checkConfig(config);
  const instance = knexFactory<TRecord, TResult>({ ...knexOptions, client: 'pg', connectionPool });
  pools.set(instance, connectionPool);
  if (!owned) return instance;
  const pool = connectionPool;
  // Knex leaves an external pool alone on destroy(); this one is ours to end.
  const client = instance.client as { destroy(callback?: (error?: unknown) => void): unknown };
  const destroyKnex = client.destroy.bind(client);
  client.destroy = (callback?: (error?: unknown) => void) => {
    const done = (async () => {
      try {
        await destroyKnex();
      } finally {
        if (!pool.ending) await pool.end();
      }
    })();
    if (callback === undefined) return done;
    done.then(
      () => callback(),
      (error: unknown) => callback(error),
    );
    return undefined;
  };
  return instance;
}

/**
 * The configuration a knexfile exports for the `knex` CLI
 * (`npx knex migrate:latest --knexfile knexfile.mjs`):
 * `export default knexConfig({ connection: { connectionString, policy }, migrations })`.
 * It is Knex's `pg` client over a {@link RaTlsPool} given as `connectionPool`,
 * so every connection the CLI opens is attested before its first byte and
 * re-attested at checkout like {@link knex}'s. Checks as {@link knex} does
 * (BAD_CONFIG before any I/O). The CLI exits without ending the pool; a program
 * that gives the result to Knex itself ends `connectionPool` after `destroy()`.
 */
export function knexConfig(config: RaTlsKnexConfig): Knex.Config & {
  readonly client: 'pg';
  readonly connectionPool: RaTlsPool;
} {
  const { knexOptions, connectionPool } = checkConfig(config);
  return { ...knexOptions, client: 'pg', connectionPool };
}

/** The Knex options and the attested pool of a configuration; throws BAD_CONFIG. */
function checkConfig(config: RaTlsKnexConfig): {
  readonly knexOptions: KnexOptions;
  readonly connectionPool: RaTlsPool;
  /** True when the pool was made here from `connection` (ours to end). */
  readonly owned: boolean;
} {
  if (config === null || typeof config !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'knex needs { connection: { connectionString, ... } }', {
      details: { option: 'config' },
    });
  }
  const record = config as Record<string, unknown>;
  for (const key of REFUSED_KEYS) {
    if (record[key] !== undefined) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `knex option ${key} must not be set: pg-ra-tls runs Knex's pg client over an attested ` +
          'pool (put max, min, idleTimeoutMillis and connectionTimeoutMillis in connection)',
        { details: { option: key } },
      );
    }
  }
  if ('connectionPool' in config && config.connectionPool !== undefined) {
    const { connectionPool, ...knexOptions } = config;
    if (!(connectionPool instanceof RaTlsPool) || 'connection' in knexOptions) {
      throw new RaTlsError(
        'BAD_CONFIG',
        'knex option connectionPool must be a RaTlsPool (from createPool), without connection: ' +
          'a plain pg.Pool would not attest its connections',
        { details: { option: 'connectionPool' } },
      );
    }
    return { knexOptions, connectionPool, owned: false };
  }
  const { connection, ...knexOptions } = config as KnexOptions & {
    connection?: RaTlsPoolOptions;
  };
  if (connection === null || typeof connection !== 'object' || connection instanceof RaTlsPool) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'knex needs connection: pool options such as { connectionString, policy } ' +
        '(or connectionPool: an existing RaTlsPool)',
      { details: { option: 'connection' } },
    );
  }
  return { knexOptions, connectionPool: createPool(connection), owned: true };
}
