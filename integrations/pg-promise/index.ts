/**
 * pg-ra-tls/pg-promise: pg-promise over attested connections.
 *
 * pg-promise builds each Database's pool with `new pgp.pg.Pool(cn)` and its
 * direct connections with `new pgp.pg.Client(cn)`, and keeps `pgp.pg`
 * replaceable for this purpose. {@link usePgRaTls} puts pg there with
 * {@link RaTlsPool} and {@link RaTlsClient} in place of pg's classes: the
 * connection details given to `pgp(cn)` are pg-ra-tls options, every
 * connection is attested before Postgres sees a byte, and pooled connections
 * are re-attested at checkout once their report is older than `reattestEvery`.
 */
import type { IDatabase, IMain } from 'pg-promise';
import { RaTlsError, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';
import { type AttestedPgModule, attestedPg } from '../shared/pg-module.js';

export { RaTlsClient, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';
export type { AttestedPgModule } from '../shared/pg-module.js';

/** A pg-promise instance whose `pgp(cn)` takes pg-ra-tls pool options. */
export type RaTlsPgp<T extends IMain> = T &
  // biome-ignore lint/complexity/noBannedTypes: pg-promise's own default for its extension type.
  (<Ext = {}>(cn: string | RaTlsPoolOptions, dc?: unknown) => IDatabase<Ext> & Ext);

/**
 * Makes every Database of this pg-promise instance attested, and returns it:
 * `const pgp = usePgRaTls(pgPromise()); const db = pgp({ connectionString, policy, max: 10 });`
 *
 * From then on `pgp(cn)` takes pg-ra-tls pool options (a connection string
 * alone is attested under the default verifier and policy). Throws
 * BAD_CONFIG when given something else than a pg-promise instance. Databases
 * created before the call keep the pools they have.
 */
export function usePgRaTls<T extends IMain>(pgp: T): RaTlsPgp<T> {
  const current = typeof pgp === 'function' ? (pgp as { pg?: unknown }).pg : undefined;
  if (current === null || typeof current !== 'object') {
    throw new RaTlsError(
      'BAD_CONFIG',
      'usePgRaTls needs the pg-promise instance: usePgRaTls(pgPromise(initOptions))',
      { details: { option: 'pgp' } },
    );
  }
  // Even with pg-promise's pgNative, this replaces the native binding: every
  // connection then goes through pg-ra-tls's attested JavaScript client.
  (pgp as unknown as { pg: AttestedPgModule }).pg = attestedPg;
  return pgp as RaTlsPgp<T>;
}

/** The pool of a Database made by a pgp given to {@link usePgRaTls}, or undefined. */
export function attestedPool(db: { readonly $pool: unknown }): RaTlsPool | undefined {
  const pool = db?.$pool;
  return pool instanceof RaTlsPool ? pool : undefined;
}
