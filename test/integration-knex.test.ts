import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Knex } from 'knex';
import pg from 'pg';
import { attestedPool, createPool, knex } from '../integrations/knex/index.js';
import { isOwnRaTlsError } from '../src/errors.js';
import { type AttestationReport, isRaTlsError, type RaTlsPool } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

const migrations = fileURLToPath(new URL('./support/migrations/knex', import.meta.url));

let db: Knex;
const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    db = knex({
      connection: { connectionString: databaseUrl, ...clientOptions, max: 4 },
      migrations: { directory: migrations, loadExtensions: ['.ts'] },
    });
  },
  teardown: async () => {
    await db?.destroy();
  },
});

test('knex.migrate runs the migrations over attested connections, then rolls them back', async () => {
  const [batch, applied] = (await db.migrate.latest()) as [number, string[]];
  assert.equal(batch, 1);
  assert.deepEqual(applied, ['20260101000000_create_ledger.ts', '20260102000000_add_amount.ts']);
  const columns = await db('information_schema.columns')
    .where({ table_name: 'ledger' })
    .orderBy('ordinal_position')
    .pluck('column_name');
  assert.deepEqual(columns, ['id', 'entry', 'amount']);
  assert.deepEqual(await db.migrate.latest(), [batch, []], 'nothing left to run');

  await db.migrate.rollback();
  assert.equal(await db.schema.hasTable('ledger'), false);
  await db.migrate.latest();
  assert.equal(await db.schema.hasTable('ledger'), true);
});

test('Knex commits one transaction and rolls back another', async () => {
  await db.transaction(async (trx) => {
    await trx('ledger').insert({ entry: 'kept', amount: 1 });
  });
  await assert.rejects(
    db.transaction(async (trx) => {
      await trx('ledger').insert({ entry: 'discarded', amount: 2 });
      throw new Error('roll back');
    }),
    /roll back/,
  );
  assert.deepEqual(await db('ledger').select('entry', 'amount'), [{ entry: 'kept', amount: 1 }]);
  assert.equal(attestedPool(db)?.attestation?.app?.appId, stack().expected.appId);
});

test('every Knex checkout goes through the attested pool, which re-attests a stale connection', async () => {
  let offset = 0;
  const pool = createPool({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
    max: 1,
    reattestEvery: '1m',
    now: () => new Date(Date.now() + offset),
  });
  const reattested: AttestationReport[] = [];
  pool.on('reattested', (report: AttestationReport) => reattested.push(report));
  const shared = knex({ connectionPool: pool });
  try {
    const first = await shared.raw('select pg_backend_pid() as pid');
    assert.equal(reattested.length, 0);
    offset += 61_000;
    const second = await shared.raw('select pg_backend_pid() as pid');
    assert.equal(reattested.length, 1, 'the stale connection was re-attested at checkout');
    assert.equal(second.rows[0].pid, first.rows[0].pid, 'on the same connection');
    assert.equal(pool.attestation?.mrtd, stack().expected.mrtd);
  } finally {
    await shared.destroy();
  }
  assert.equal(pool.ending, false, 'a pool passed in stays the caller’s');
  await pool.end();
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const reader = knex({
    connection: {
      connectionString: stack().databaseUrlFor('teesql_read'),
      ...stack().clientOptions,
    },
  });
  try {
    assert.ok((await reader('ledger').select()).length >= 1);
    await assert.rejects(reader('ledger').insert({ entry: 'nope' }), { code: '42501' });
  } finally {
    await reader.destroy();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const fresh = knex({
    connection: { connectionString: stack().databaseUrl, ...stack().clientOptions },
    log: { warn: () => {} },
  });
  const seen = await presentForeignMrtd(stack());
  try {
    // Knex hands the pool's error to the caller as it is.
    await assert.rejects(fresh('ledger').select(), (error: unknown) =>
      isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
    await assert.rejects(fresh.migrate.latest({ directory: migrations }), (error: unknown) =>
      isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  } finally {
    stack().sidecar.reset();
    await fresh.destroy();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.ok(attempts.length >= 2);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
  );
});

test('knex.destroy() ends the pool it created; bad configurations are refused before any I/O', async () => {
  const own = knex({
    connection: { connectionString: stack().databaseUrl, ...stack().clientOptions },
  });
  await own.raw('select 1');
  const pool = attestedPool(own);
  assert.equal(pool?.totalCount, 1);
  assert.equal(pool?.attestation?.mrtd, stack().expected.mrtd);
  await own.destroy();
  assert.equal(pool?.ending, true);
  assert.equal(pool?.totalCount, 0);

  const refused = (option: string) => (error: unknown) =>
    isRaTlsError(error, 'BAD_CONFIG') && error.details?.option === option;
  const plain = new pg.Pool();
  try {
    assert.throws(
      () => knex({ connectionPool: plain as unknown as RaTlsPool }),
      refused('connectionPool'),
    );
  } finally {
    await plain.end();
  }
  assert.throws(
    () =>
      knex({ connection: { connectionString: stack().databaseUrl }, pool: { max: 3 } } as never),
    refused('pool'),
  );
  assert.throws(
    () => knex({ connection: { connectionString: stack().databaseUrl }, client: 'mysql' } as never),
    refused('client'),
  );
  assert.throws(() => knex({ connection: 'postgres://x' } as never), refused('connection'));
});
