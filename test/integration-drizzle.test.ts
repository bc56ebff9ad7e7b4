import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DrizzleQueryError, eq, sql } from 'drizzle-orm';
import { drizzle as nodePgDrizzle } from 'drizzle-orm/node-postgres';
import { migrate as drizzleMigrate } from 'drizzle-orm/node-postgres/migrator';
import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { createPool, drizzle, migrate } from '../integrations/drizzle/index.js';
import { findRaTlsError, isRaTlsError } from '../src/errors.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

const orders = pgTable('orders', {
  id: serial('id').primaryKey(),
  item: text('item').notNull(),
  quantity: integer('quantity').notNull(),
});

const stack = useLocalStack();

/** The error a query failed with, under Drizzle's DrizzleQueryError wrapper when there is one. */
function rootCause(error: unknown): unknown {
  return error instanceof Error && error.cause !== undefined ? error.cause : error;
}

test("Drizzle's own node-postgres driver takes the pool: typed insert/select and transactions", async () => {
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  const db = nodePgDrizzle({ client: pool, schema: { orders } });
  try {
    await db.execute(
      sql`create table orders (id serial primary key, item text not null, quantity integer not null)`,
    );
    const [created] = await db.insert(orders).values({ item: 'tea', quantity: 2 }).returning();
    assert.deepEqual(created, { id: 1, item: 'tea', quantity: 2 });

    await db.transaction(async (tx) => {
      await tx.update(orders).set({ quantity: 3 }).where(eq(orders.id, 1));
    });
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.insert(orders).values({ item: 'coffee', quantity: 1 });
        tx.rollback();
      }),
      /Rollback/,
    );
    const rows = await db.select().from(orders);
    assert.deepEqual(rows, [{ id: 1, item: 'tea', quantity: 3 }]);
    assert.equal(db.$client.attestation?.mrtd, stack().expected.mrtd);
  } finally {
    await pool.end();
  }
});

test('drizzle({ connection }) from pg-ra-tls/drizzle creates the attested pool itself', async () => {
  const db = drizzle({
    connection: { connectionString: stack().databaseUrl, ...stack().clientOptions },
    schema: { orders },
  });
  try {
    const found = await db.query.orders.findFirst({ where: eq(orders.item, 'tea') });
    assert.equal(found?.quantity, 3);
    assert.equal(db.$client.totalCount, 1);
    assert.equal(db.$client.attestation?.app?.appId, stack().expected.appId);
  } finally {
    await db.$client.end();
  }
  const plain = new pg.Pool();
  try {
    assert.throws(
      () => drizzle({ client: plain as never }),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') && /would not attest/.test(error.message),
    );
  } finally {
    await plain.end();
  }
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const db = drizzle({
    connection: {
      connectionString: stack().databaseUrlFor('teesql_read'),
      ...stack().clientOptions,
    },
  });
  try {
    assert.equal((await db.select().from(orders)).length, 1);
    await assert.rejects(db.insert(orders).values({ item: 'x', quantity: 1 }), (error) => {
      assert.equal((rootCause(error) as { code?: string }).code, '42501');
      return true;
    });
  } finally {
    await db.$client.end();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const seen = await presentForeignMrtd(stack());
  const db = drizzle({
    connection: { connectionString: stack().databaseUrl, ...stack().clientOptions },
  });
  try {
    await assert.rejects(db.select().from(orders), (error: unknown) => {
      // Drizzle 0.44+ wraps driver errors in DrizzleQueryError; ours is its cause,
      // and isRaTlsError / findRaTlsError see through the wrapper.
      assert.ok(error instanceof DrizzleQueryError);
      assert.ok(isRaTlsError(rootCause(error), 'MRTD_NOT_ALLOWED'));
      assert.equal(findRaTlsError(error), error.cause);
      return isRaTlsError(error, 'MRTD_NOT_ALLOWED');
    });
  } finally {
    stack().sidecar.reset();
    await db.$client.end();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.equal(attempts.length, 1);
  assert.equal(attempts[0]?.bytesToUpstream, 0);
});

test("drizzle-kit migrations run on teesql as teesql_readwrite through pg-ra-tls/drizzle's migrate()", async () => {
  // Given the teesql roles: teesql_readwrite creates tables in public, but no schema
  const migrationsFolder = fileURLToPath(new URL('./fixtures/drizzle-migrations', import.meta.url));
  const db = drizzle({
    connection: { connectionString: stack().databaseUrl, ...stack().clientOptions },
  });
  try {
    // When drizzle-orm's own migrate() runs, its CREATE SCHEMA IF NOT EXISTS is refused,
    // even for the existing schema public (Postgres checks the privilege first)
    for (const migrationsSchema of [undefined, 'public']) {
      await assert.rejects(
        drizzleMigrate(db, { migrationsFolder, ...(migrationsSchema ? { migrationsSchema } : {}) }),
        (error: unknown) => (rootCause(error) as { code?: string }).code === '42501',
      );
    }
    // Then pg-ra-tls/drizzle's migrate() applies every migration, once
    await migrate(db, { migrationsFolder });
    await migrate(db, { migrationsFolder });
    const applied = await db.execute(
      sql`select count(*)::int as n from public.__drizzle_migrations`,
    );
    assert.equal(applied.rows[0]?.['n'], 2);
    await db.execute(sql`insert into invoices (customer, cents) values ('acme', 1200)`);
    const rows = await db.execute(sql`select customer, cents, paid from invoices`);
    assert.deepEqual(rows.rows, [{ customer: 'acme', cents: 1200, paid: false }]);
  } finally {
    await db.execute(sql`drop table if exists invoices, public.__drizzle_migrations`);
    await db.$client.end();
  }
});
