import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import type { SqlQuery } from '@prisma/driver-adapter-utils';
import pg from 'pg';
import { createPool } from '../integrations/pg/index.js';
import { prismaAdapter } from '../integrations/prisma/index.js';
import { isOwnRaTlsError, isRaTlsError } from '../src/errors.js';
import { RaTlsPool } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack();

/** A query as Prisma's query engine hands it to a driver adapter. */
function query(sql: string, args: unknown[] = []): SqlQuery {
  return {
    sql,
    args,
    argTypes: args.map(() => ({ scalarType: 'unknown' as const, arity: 'scalar' as const })),
  };
}

test("Prisma's pg adapter runs its queries on our attested pool, not a pool of its own", async () => {
  const before = stack().sidecar.stats;
  const adapter = prismaAdapter({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
  });
  const driver = await adapter.connect();
  const pool = driver.underlyingDriver();
  assert.ok(pool instanceof RaTlsPool, 'PrismaPg kept our pool instead of building its own');
  let attestations = 0;
  pool.on('attested', () => attestations++);
  try {
    await driver.executeRaw(query('create table items (id serial primary key, name text)'));
    const result = await driver.queryRaw(query('select $1::int + 1 as answer', [41]));
    assert.deepEqual(result.columnNames, ['answer']);
    assert.deepEqual(result.rows, [[42]]);
  } finally {
    await driver.dispose();
  }
  assert.equal(pool.ending, true, 'dispose ended the pool the adapter created');

  const after = stack().sidecar.stats;
  assert.equal(attestations, 1, 'one attested connection carried both queries');
  assert.equal(after.established - before.established, 1, 'the sidecar piped exactly that one');
  assert.ok(after.bytesToUpstream > before.bytesToUpstream);
  assert.equal(pool.attestation?.mrtd, stack().expected.mrtd);
});

test('Prisma transactions commit and roll back on one attested connection', async () => {
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  const driver = await prismaAdapter(pool).connect();
  try {
    // What Prisma's engine does for an adapter transaction (usePhantomQuery: false):
    // it sends COMMIT/ROLLBACK itself, then lets the adapter release the connection.
    const kept = await driver.startTransaction();
    await kept.executeRaw(query('insert into items (name) values ($1)', ['kept']));
    await kept.executeRaw(query('COMMIT'));
    await kept.commit();
    const dropped = await driver.startTransaction();
    await dropped.executeRaw(query('insert into items (name) values ($1)', ['dropped']));
    await dropped.executeRaw(query('ROLLBACK'));
    await dropped.rollback();
    const { rows } = await driver.queryRaw(query('select name from items'));
    assert.deepEqual(rows, [['kept']]);
    assert.equal(pool.idleCount, pool.totalCount, 'every connection went back to the pool');
  } finally {
    await driver.dispose();
    assert.equal(pool.ending, false, 'a pool passed in stays the caller’s');
    await pool.end();
  }
});

test('a shadow database is refused: PrismaPg would build it on our pool and hit the real database', async () => {
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    await assert.rejects(prismaAdapter(pool).connectToShadowDb(), (error: unknown) =>
      isRaTlsError(error, 'BAD_CONFIG'),
    );
    assert.equal(pool.totalCount, 0, 'nothing was sent to the server');
  } finally {
    await pool.end();
  }
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const driver = await prismaAdapter({
    connectionString: stack().databaseUrlFor('teesql_read'),
    ...stack().clientOptions,
  }).connect();
  try {
    await assert.rejects(
      driver.executeRaw(query("insert into items (name) values ('x')")),
      (error: Error & { cause?: { kind?: string; originalCode?: string } }) =>
        error.name === 'DriverAdapterError' &&
        error.cause?.kind === 'postgres' &&
        error.cause.originalCode === '42501',
    );
  } finally {
    await driver.dispose();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const seen = await presentForeignMrtd(stack());
  const driver = await prismaAdapter({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
  }).connect();
  try {
    // The adapter passes errors that are not Postgres', socket or TLS errors through unchanged.
    await assert.rejects(driver.queryRaw(query('select 1')), (error: unknown) =>
      isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  } finally {
    stack().sidecar.reset();
    await driver.dispose();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.equal(attempts.length, 1);
  assert.equal(attempts[0]?.bytesToUpstream, 0);
});

test('a second copy of pg under @prisma/adapter-pg, or a plain pg.Pool, is refused with BAD_CONFIG', async () => {
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  // Simulate a duplicate install: drop pg's entry module from the CommonJS cache,
  // so the adapter's location resolves pg to a freshly evaluated copy with its own Pool class.
  const require = createRequire(import.meta.url);
  const pgEntry = createRequire(require.resolve('@prisma/adapter-pg')).resolve('pg');
  const cached = require.cache[pgEntry];
  delete require.cache[pgEntry];
  try {
    assert.throws(
      () => prismaAdapter(pool),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') &&
        /another copy/.test(error.message) &&
        /overrides/.test(error.message),
    );
  } finally {
    if (cached !== undefined) require.cache[pgEntry] = cached;
    await pool.end();
  }
  const restored = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    assert.doesNotThrow(() => prismaAdapter(restored), 'one pg again once the cache is restored');
  } finally {
    await restored.end();
  }

  const plain = new pg.Pool();
  try {
    assert.throws(
      () => prismaAdapter(plain as never),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') && /would not attest/.test(error.message),
    );
  } finally {
    await plain.end();
  }
});
