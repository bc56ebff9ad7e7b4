/**
 * pg-ra-tls/prisma: Prisma ORM (7, driver adapters) over attested connections.
 *
 * `@prisma/adapter-pg` takes an existing pool only when `pool instanceof pg.Pool`
 * holds for ITS copy of pg; otherwise it silently builds its own, unattested
 * pool from the object's options. {@link prismaAdapter} proves the copies are
 * one before handing our pool over, and refuses loudly when they are not.
 */
import { createRequire } from 'node:module';
import { PrismaPg } from '@prisma/adapter-pg';
import { createPool, RaTlsError, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';

/**
 * PrismaPg over an attested pool. Only the shadow database is refused: PrismaPg
 * builds it as `new pg.Pool({ ...pool.options, database })`, and our pool's
 * options carry a client class bound to the configured database, so the
 * "shadow" migrations would run on the real database.
 */
export class RaTlsPrismaPg extends PrismaPg {
  override async connectToShadowDb(): Promise<never> {
    throw new RaTlsError(
      'BAD_CONFIG',
      'pg-ra-tls does not provide a Prisma shadow database (PrismaPg would run the shadow ' +
        'migrations on the configured database): run `prisma migrate dev` against a local ' +
        'development database instead',
      { details: { option: 'shadowDatabase' } },
    );
  }
}

/** The options of `new PrismaPg(pool, options)` (schema, error callbacks, ...). */
export type PrismaPgOptions = NonNullable<ConstructorParameters<typeof PrismaPg>[1]>;

/**
 * Creates Prisma's pg driver adapter over an attested pool:
 * `new PrismaClient({ adapter: prismaAdapter({ connectionString, policy }) })`.
 *
 * Given pool options it creates the pool and, unless `disposeExternalPool` is
 * set, lets `prisma.$disconnect()` end it; given a {@link RaTlsPool} it leaves
 * the pool's lifetime to the caller (Prisma's default). Throws BAD_CONFIG when
 * the input is not a RaTlsPool or pool options, or when @prisma/adapter-pg
 * resolves another copy of `pg` than pg-ra-tls (it would bypass attestation).
 */
export function prismaAdapter(
  poolOrOptions: RaTlsPool | RaTlsPoolOptions,
  options: PrismaPgOptions = {},
): RaTlsPrismaPg {
  if (poolOrOptions instanceof RaTlsPool) {
    assertAdapterSharesPg(poolOrOptions);
    return new RaTlsPrismaPg(poolOrOptions, options);
  }
  if (
    poolOrOptions === null ||
    typeof poolOrOptions !== 'object' ||
    typeof (poolOrOptions as { connect?: unknown }).connect === 'function'
  ) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'prismaAdapter needs a RaTlsPool (from createPool) or pool options such as ' +
        '{ connectionString, policy }; a plain pg.Pool would not attest its connections',
      { details: { option: 'pool' } },
    );
  }
  const pool = createPool(poolOrOptions);
  try {
    assertAdapterSharesPg(pool);
  } catch (error) {
    pool.end().catch(() => {});
    throw error;
  }
  return new RaTlsPrismaPg(pool, { disposeExternalPool: true, ...options });
}

/**
 * Throws BAD_CONFIG unless the `pg` that @prisma/adapter-pg imports (resolved
 * from the adapter's own location, as Node resolves it) exports the Pool class
 * `pool` is an instance of.
 */
export function assertAdapterSharesPg(pool: RaTlsPool): void {
  const here = createRequire(import.meta.url);
  const adapterEntry = here.resolve('@prisma/adapter-pg');
  const fromAdapter = createRequire(adapterEntry);
  const adapterPg = fromAdapter('pg') as { Pool?: unknown };
  if (typeof adapterPg.Pool === 'function' && pool instanceof adapterPg.Pool) return;
  throw new RaTlsError(
    'BAD_CONFIG',
    `@prisma/adapter-pg loads pg from ${fromAdapter.resolve('pg')}, another copy than the one ` +
      `pg-ra-tls extends (${here.resolve('pg')}); PrismaPg would silently open its own ` +
      'unattested pool. Install a single pg: run `npm dedupe`, or pin it with ' +
      '"overrides": { "pg": "$pg" } in package.json (pnpm: "pnpm.overrides"; yarn: "resolutions")',
    { details: { option: 'pool' } },
  );
}
