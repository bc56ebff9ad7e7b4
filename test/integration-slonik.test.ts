import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ConnectionError,
  createPool,
  type DatabasePool,
  sql,
  UniqueIntegrityConstraintViolationError,
} from 'slonik';
import { createRaTlsDriverFactory } from '../integrations/slonik/index.js';
import { isRaTlsError } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

let pool: DatabasePool;
const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    pool = await createPool(databaseUrl, {
      driverFactory: createRaTlsDriverFactory(clientOptions),
      maximumPoolSize: 4,
    });
    await pool.query(
      sql.unsafe`create table invoices (id serial primary key, number text unique not null)`,
    );
  },
  teardown: async () => {
    await pool?.end();
  },
});

test('Slonik commits one transaction and rolls back another over attested connections', async () => {
  await pool.transaction(async (trx) => {
    await trx.query(sql.unsafe`insert into invoices (number) values ('kept')`);
  });
  await assert.rejects(
    pool.transaction(async (trx) => {
      await trx.query(sql.unsafe`insert into invoices (number) values ('discarded')`);
      throw new Error('roll back');
    }),
    /roll back/,
  );
  assert.deepEqual(await pool.anyFirst(sql.unsafe`select number from invoices`), ['kept']);
  assert.equal(await pool.oneFirst(sql.unsafe`select current_user`), 'teesql_readwrite');
  // Postgres errors keep Slonik's own classes, which Slonik users branch on.
  await assert.rejects(
    pool.query(sql.unsafe`insert into invoices (number) values ('kept')`),
    UniqueIntegrityConstraintViolationError,
  );
  // Slonik's type parsers apply: int8 and timestamptz arrive parsed.
  const row = await pool.one(
    sql.unsafe`select 2::int8 as big, '2026-01-01T00:00:00Z'::timestamptz as at, array[2,3]::int8[] as list`,
  );
  assert.deepEqual(row, { big: 2n, at: Date.parse('2026-01-01T00:00:00Z'), list: [2n, 3n] });
});

test('a Slonik stream reads rows over the attested connection', async () => {
  const rows: unknown[] = [];
  await pool.stream(sql.unsafe`select generate_series(1, 3) as n`, (stream) => {
    stream.on('data', (datum: { data: { n: number } }) => rows.push(datum.data.n));
  });
  assert.deepEqual(rows, [1, 2, 3]);
});

test('an idle connection older than reattestEvery is closed and replaced by a freshly attested one', async () => {
  let offset = 0;
  const timed = await createPool(stack().databaseUrl, {
    driverFactory: createRaTlsDriverFactory({
      ...stack().clientOptions,
      reattestEvery: '1m',
      now: () => new Date(Date.now() + offset),
    }),
    maximumPoolSize: 1,
  });
  try {
    const seen = stack().sidecar.stats.accepted;
    const first = await timed.oneFirst(sql.unsafe`select pg_backend_pid()`);
    const again = await timed.oneFirst(sql.unsafe`select pg_backend_pid()`);
    assert.equal(again, first, 'a fresh connection is reused');
    offset += 61_000;
    const later = await timed.oneFirst(sql.unsafe`select pg_backend_pid()`);
    assert.notEqual(later, first, 'the stale connection was replaced');
    assert.equal(attemptsSince(stack(), seen).length, 2, 'by a newly attested one');
  } finally {
    await timed.end();
  }
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const reader = await createPool(stack().databaseUrlFor('teesql_read'), {
    driverFactory: createRaTlsDriverFactory(stack().clientOptions),
  });
  try {
    assert.equal(await reader.oneFirst(sql.unsafe`select count(*)::int from invoices`), 1);
    // Postgres's own error, passed through by the driver as Slonik's pg driver does.
    await assert.rejects(reader.query(sql.unsafe`insert into invoices (number) values ('eve')`), {
      code: '42501',
    });
  } finally {
    await reader.end();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const fresh = await createPool(stack().databaseUrl, {
    driverFactory: createRaTlsDriverFactory(stack().clientOptions),
  });
  const seen = await presentForeignMrtd(stack());
  try {
    // Slonik wraps a failed connection in its ConnectionError, with the RaTlsError as cause.
    const refused = (error: unknown) =>
      error instanceof ConnectionError && isRaTlsError(error.cause, 'MRTD_NOT_ALLOWED');
    await assert.rejects(fresh.oneFirst(sql.unsafe`select 1`), refused);
    await assert.rejects(
      createPool(stack().databaseUrl, {
        driverFactory: createRaTlsDriverFactory(stack().clientOptions),
      }),
      (error: unknown) => isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  } finally {
    stack().sidecar.reset();
    await fresh.end();
  }
  const attempts = attemptsSince(stack(), seen);
  // Slonik retries a failed connection (connectionRetryLimit): each attempt is refused alike.
  assert.ok(attempts.length >= 2);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
  );
});

test('connection settings and Slonik’s ssl are refused with BAD_CONFIG before any I/O', async () => {
  const refused = (option: string) => (error: unknown) =>
    isRaTlsError(error, 'BAD_CONFIG') && error.details?.option === option;
  assert.throws(
    () => createRaTlsDriverFactory({ connectionString: stack().databaseUrl } as never),
    refused('connectionString'),
  );
  assert.throws(() => createRaTlsDriverFactory(null as never), refused('options'));
  const seen = stack().sidecar.stats.accepted;
  await assert.rejects(
    createPool(stack().databaseUrl, {
      driverFactory: createRaTlsDriverFactory(stack().clientOptions),
      ssl: { rejectUnauthorized: false },
    }),
    refused('ssl'),
  );
  assert.equal(stack().sidecar.stats.accepted, seen, 'no connection was attempted');
});
