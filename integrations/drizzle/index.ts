/**
 * pg-ra-tls/drizzle: Drizzle ORM (node-postgres driver) over attested
 * connections. Drizzle's own `drizzle({ client: createPool(...) })` works as
 * it is, because the pool is a real `pg.Pool`; the {@link drizzle} here only
 * saves the `createPool` call and refuses pools that do not attest.
 */
import type { DrizzleConfig } from 'drizzle-orm';
import { type NodePgDatabase, drizzle as nodePgDrizzle } from 'drizzle-orm/node-postgres';
import {
  createPool,
  RaTlsClient,
  RaTlsError,
  RaTlsPool,
  type RaTlsPoolOptions,
} from '../../src/index.js';

export { createPool, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';

/**
 * Drizzle's config plus where the database is: `connection` (pool options,
 * as for `createPool`) or `client` (an existing RaTlsPool or connected RaTlsClient).
 */
export type RaTlsDrizzleConfig<
  TSchema extends Record<string, unknown>,
  TClient extends RaTlsPool | RaTlsClient,
> = DrizzleConfig<TSchema> &
  ({ readonly connection: RaTlsPoolOptions } | { readonly client: TClient });

/**
 * Creates a Drizzle database whose every connection is attested. Mirrors
 * `drizzle({ connection, schema })` of drizzle-orm/node-postgres; `db.$client`
 * is the pool (its events and `attestation`), ended with `db.$client.end()`.
 * Configuration errors throw BAD_CONFIG here, before any network I/O.
 */
export function drizzle<
  TSchema extends Record<string, unknown> = Record<string, never>,
  TClient extends RaTlsPool | RaTlsClient = RaTlsPool,
>(config: RaTlsDrizzleConfig<TSchema, TClient>): NodePgDatabase<TSchema> & { $client: TClient } {
  if (config === null || typeof config !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'drizzle needs { connection: { connectionString, ... } }', {
      details: { option: 'config' },
    });
  }
  if ('client' in config) {
    const { client, ...drizzleConfig } = config;
    if (!(client instanceof RaTlsPool) && !(client instanceof RaTlsClient)) {
      throw new RaTlsError(
        'BAD_CONFIG',
        'drizzle option client must be a RaTlsPool (createPool) or RaTlsClient: ' +
          'a plain pg.Pool or pg.Client would not attest its connections',
        { details: { option: 'client' } },
      );
    }
    return withClient(nodePgDrizzle({ ...drizzleConfig, client }));
  }
  const { connection, ...drizzleConfig } = config;
  return withClient(nodePgDrizzle({ ...drizzleConfig, client: createPool(connection) }));
}

/** Drizzle types `$client` from its own generic; ours is exactly the client passed in. */
function withClient<TSchema extends Record<string, unknown>, TClient>(
  db: NodePgDatabase<TSchema>,
): NodePgDatabase<TSchema> & { $client: TClient } {
  return db as NodePgDatabase<TSchema> & { $client: TClient };
}
