/**
 * pg-ra-tls/drizzle: Drizzle ORM (node-postgres driver) over attested
 * connections. Drizzle's own `drizzle({ client: createPool(...) })` works as
 * it is, because the pool is a real `pg.Pool`; the {@link drizzle} here only
 * saves the `createPool` call and refuses pools that do not attest.
 */
import { type DrizzleConfig, sql } from 'drizzle-orm';
import { readMigrationFiles } from 'drizzle-orm/migrator';
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

/** Options of {@link migrate}. */
export interface RaTlsMigrationConfig {
  /** The folder drizzle-kit generates (`meta/_journal.json` and the `.sql` files). */
  readonly migrationsFolder: string;
  /** Journal table in schema `public`; default Drizzle's `__drizzle_migrations`. */
  readonly migrationsTable?: string;
}

/**
 * Applies drizzle-kit migrations as `teesql_readwrite`. Drizzle's own
 * `migrate()` first runs `CREATE SCHEMA IF NOT EXISTS`, which needs the CREATE
 * privilege on the database, and teesql's roles have none (they may create
 * tables in `public` only, docs/protocol.md §5), even for `migrationsSchema:
 * 'public'`. This one keeps the same journal (a table of hash and
 * `created_at`, here in `public`) and applies the same files the same way:
 * every migration newer than the last recorded one, in one transaction.
 */
export async function migrate<TSchema extends Record<string, unknown>>(
  db: NodePgDatabase<TSchema>,
  config: RaTlsMigrationConfig,
): Promise<void> {
  const journal = sql.identifier(config.migrationsTable ?? '__drizzle_migrations');
  const migrations = readMigrationFiles({ migrationsFolder: config.migrationsFolder });
  await db.execute(
    sql`CREATE TABLE IF NOT EXISTS public.${journal} (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint)`,
  );
  await db.transaction(async (tx) => {
    const last = await tx.execute<{ created_at: string | null }>(
      sql`select created_at from public.${journal} order by created_at desc limit 1`,
    );
    const lastMillis = Number(last.rows[0]?.created_at ?? Number.NEGATIVE_INFINITY);
    for (const migration of migrations) {
      if (migration.folderMillis <= lastMillis) continue;
      for (const statement of migration.sql) await tx.execute(sql.raw(statement));
      await tx.execute(
        sql`insert into public.${journal} (hash, created_at) values (${migration.hash}, ${migration.folderMillis})`,
      );
    }
  });
}
