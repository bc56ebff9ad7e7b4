import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Generated, Kysely, sql } from 'kysely';
import pg from 'pg';
import { type RaTlsDialect, raTlsDialect } from '../integrations/kysely/index.js';
import { createPool } from '../integrations/pg/index.js';
import { isOwnRaTlsError, isRaTlsError } from '../src/errors.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

interface Database {
  notes: { id: Generated<number>; body: string };
}

let dialect: RaTlsDialect;
let db: Kysely<Database>;
const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    dialect = raTlsDialect({
      connectionString: databaseUrl,
      ...clientOptions,
      pool: { max: 4, reattestEvery: '5m' },
    });
    db = new Kysely<Database>({ dialect });
    await db.schema
      .createTable('notes')
      .addColumn('id', 'serial', (column) => column.primaryKey())
      .addColumn('body', 'text', (column) => column.notNull())
      .execute();
  },
  teardown: async () => {
    await db?.destroy();
  },
});

test('Kysely commits one transaction and rolls back another over attested connections', async () => {
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('notes').values({ body: 'kept' }).execute();
  });
  await assert.rejects(
    db.transaction().execute(async (trx) => {
      await trx.insertInto('notes').values({ body: 'discarded' }).execute();
      throw new Error('roll back');
    }),
    /roll back/,
  );
  // Only this test's rows: the result must not depend on which tests ran before.
  const bodies = await db
    .selectFrom('notes')
    .select('body')
    .where('body', 'in', ['kept', 'discarded'])
    .execute();
  assert.deepEqual(bodies, [{ body: 'kept' }]);
  assert.equal(dialect.pool.attestation?.mrtd, stack().expected.mrtd);
  assert.equal(dialect.pool.attestation?.app?.appId, stack().expected.appId);
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const reader = new Kysely<Database>({
    dialect: raTlsDialect({
      connectionString: stack().databaseUrlFor('teesql_read'),
      ...stack().clientOptions,
    }),
  });
  try {
    // A row of its own: the count must not depend on what earlier tests left.
    const body = `visible to readers ${process.pid}`;
    await db.insertInto('notes').values({ body }).execute();
    const seen = await reader.selectFrom('notes').select('body').where('body', '=', body).execute();
    assert.deepEqual(seen, [{ body }]);
    await assert.rejects(reader.insertInto('notes').values({ body: 'nope' }).execute(), {
      code: '42501',
    });
  } finally {
    await reader.destroy();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const fresh = new Kysely<Database>({
    dialect: raTlsDialect({ connectionString: stack().databaseUrl, ...stack().clientOptions }),
  });
  const seen = await presentForeignMrtd(stack());
  try {
    await assert.rejects(fresh.selectFrom('notes').selectAll().execute(), (error: unknown) =>
      isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  } finally {
    stack().sidecar.reset();
    await fresh.destroy();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.ok(attempts.length >= 1);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
  );
});

test('.stream() reads a large result through pg-cursor and can stop early', async () => {
  const count = async () =>
    (await sql<{ n: number }>`select count(*)::int as n from notes`.execute(db)).rows[0]?.n ?? -1;
  const before = await count();
  await sql`insert into notes (body) select 'row ' || n from generate_series(1, 250) n`.execute(db);
  const query = db
    .selectFrom('notes')
    .select(['id', 'body'])
    .where('body', 'like', 'row %')
    .orderBy('id');
  const ids: number[] = [];
  for await (const row of query.stream(40)) ids.push(row.id);
  assert.equal(ids.length, 250);
  assert.deepEqual(
    ids,
    [...ids].sort((a, b) => a - b),
  );

  let read = 0;
  for await (const _row of query.stream(10)) if (++read === 15) break;
  assert.equal(read, 15);
  assert.equal(await count(), before + 250, 'the connection is usable after an early stop');

  const noCursor = new Kysely<Database>({
    dialect: raTlsDialect({
      pool: createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions }),
      cursor: false,
    }),
  });
  try {
    await assert.rejects(async () => {
      for await (const _row of noCursor.selectFrom('notes').selectAll().stream()) break;
    }, /.cursor. is not present/); // quoted 'cursor' up to Kysely 0.28, `cursor` from 0.29
  } finally {
    await noCursor.destroy();
  }
});

test('a running query is cancelled with pg_cancel_backend from another connection (57014)', async () => {
  await db.connection().execute(async (connection) => {
    const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(connection);
    const pid = rows[0]!.pid;
    const sleeping = sql`select pg_sleep(30)`.execute(connection);
    sleeping.catch(() => {});
    await waitUntil(async () => {
      const active = await sql<{ n: number }>`
        select count(*)::int as n from pg_stat_activity
        where pid = ${pid} and state = 'active' and query like '%pg_sleep%'`.execute(db);
      return active.rows[0]?.n === 1;
    });
    await sql`select pg_cancel_backend(${pid})`.execute(db);
    await assert.rejects(sleeping, { code: '57014', message: /cancel.*user request/ });
    // The connection survives the cancel and serves the next query.
    const again = await sql<{ ok: number }>`select 1 as ok`.execute(connection);
    assert.deepEqual(again.rows, [{ ok: 1 }]);
  });
});

test('statement_timeout in the dialect options times a query out (57014)', async () => {
  const limited = new Kysely<Database>({
    dialect: raTlsDialect({
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      statement_timeout: 200,
    }),
  });
  try {
    await assert.rejects(sql`select pg_sleep(10)`.execute(limited), {
      code: '57014',
      message: /statement timeout/,
    });
  } finally {
    await limited.destroy();
  }
});

test('an existing RaTlsPool is accepted; a plain pg.Pool or mixed options are refused', async () => {
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  const shared = new Kysely<Database>({ dialect: raTlsDialect({ pool }) });
  try {
    const { rows } = await sql<{ who: string }>`select current_user as who`.execute(shared);
    assert.deepEqual(rows, [{ who: 'teesql_readwrite' }]);
    assert.equal(pool.totalCount, 1);
  } finally {
    await shared.destroy();
  }
  assert.equal(pool.ending, true, 'kysely.destroy() ended the pool');

  const plain = new pg.Pool();
  try {
    assert.throws(
      () => raTlsDialect({ pool: plain as never }),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') && /would not attest/.test(error.message),
    );
  } finally {
    await plain.end();
  }
  const other = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    assert.throws(
      () => raTlsDialect({ pool: other, connectionString: stack().databaseUrl }),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') && /also connectionString/.test(error.message),
    );
  } finally {
    await other.end();
  }
});

async function waitUntil(condition: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error('condition not reached within 5 s');
}
