// A user's program against the installed tarball: every subpath is imported
// and used with its types (strict, nodenext); the local stack answers a query
// through the core pool, Kysely and node-postgres.
import { Kysely, sql } from 'kysely';
import {
  type AttestationReport,
  createPool,
  DcapVerifier,
  ErrorCodes,
  isRaTlsError,
  RaTlsError,
  type RaTlsPoolOptions,
  verifyServer,
} from 'pg-ra-tls';
import { createPool as createDrizzlePool, drizzle } from 'pg-ra-tls/drizzle';
import { raTlsDialect } from 'pg-ra-tls/kysely';
import { createClient, createPool as createPgPool } from 'pg-ra-tls/pg';
import { postgresOptions } from 'pg-ra-tls/postgres-js';
import { prismaAdapter } from 'pg-ra-tls/prisma';
import { createRaTlsDriverFactory } from 'pg-ra-tls/slonik';
import { createTestAuthority, startLocalStack } from 'pg-ra-tls/testing';

// Type-level uses of the subpaths this program does not run.
export const unused = {
  drizzle: (options: RaTlsPoolOptions) => drizzle({ connection: options }),
  drizzlePool: (options: RaTlsPoolOptions) => createDrizzlePool(options),
  pgClient: (options: RaTlsPoolOptions) => createClient(options),
  postgresJs: (options: RaTlsPoolOptions) => postgresOptions(options),
  prisma: (options: RaTlsPoolOptions) => prismaAdapter(options),
  slonik: (policy: NonNullable<RaTlsPoolOptions['policy']>) => createRaTlsDriverFactory({ policy }),
  verifier: () => new DcapVerifier({ engine: 'both' }),
  authority: createTestAuthority,
};

const stack = await startLocalStack();
try {
  const options: RaTlsPoolOptions = { connectionString: stack.databaseUrl, ...stack.clientOptions };
  const report: AttestationReport = await verifyServer(stack.databaseUrl, stack.clientOptions);

  const pool = createPool(options);
  const core = await pool.query<{ one: number }>('select 1 as one');
  await pool.end();

  const db = new Kysely<Record<string, never>>({ dialect: raTlsDialect(options) });
  const kysely = await sql<{ who: string }>`select current_user as who`.execute(db);
  await db.destroy();

  const pgPool = createPgPool(options);
  const pg = await pgPool.query<{ two: number }>('select 2 as two');
  await pgPool.end();

  let refused = '';
  try {
    await verifyServer(stack.databaseUrl, {
      ...stack.clientOptions,
      policy: { allowedMrtds: ['ee'.repeat(48)] },
    });
  } catch (error) {
    if (isRaTlsError(error) && error instanceof RaTlsError) refused = error.code;
  }
  console.log(
    JSON.stringify({
      one: core.rows[0]?.one,
      who: kysely.rows[0]?.who,
      two: pg.rows[0]?.two,
      mrtd: report.mrtd.length,
      refused,
      known: 'MRTD_NOT_ALLOWED' in ErrorCodes,
    }),
  );
} finally {
  await stack.stop();
}
