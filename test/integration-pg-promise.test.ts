import assert from 'node:assert/strict';
import { test } from 'node:test';
import pgPromise, { type IDatabase } from 'pg-promise';
import { attestedPool, usePgRaTls } from '../integrations/pg-promise/index.js';
import { isOwnRaTlsError } from '../src/errors.js';
import { type AttestationReport, isRaTlsError, RaTlsClient } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

const pgp = usePgRaTls(pgPromise());
let db: IDatabase<unknown>;
const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    db = pgp({ connectionString: databaseUrl, ...clientOptions, max: 4 });
    await db.none('create table payments (id serial primary key, payee text not null)');
  },
  teardown: async () => {
    await db?.$pool.end();
  },
});

test('pg-promise commits one transaction and rolls back another over attested connections', async () => {
  await db.tx(async (t) => {
    await t.none('insert into payments (payee) values ($1)', ['kept']);
  });
  await assert.rejects(
    db.tx(async (t) => {
      await t.none('insert into payments (payee) values ($1)', ['discarded']);
      throw new Error('roll back');
    }),
    /roll back/,
  );
  const payees = await db.map('select payee from payments', [], (row) => row.payee);
  assert.deepEqual(payees, ['kept']);
  assert.equal(attestedPool(db)?.attestation?.mrtd, stack().expected.mrtd);
});

test('a direct connection is an attested RaTlsClient too', async () => {
  const connection = await db.connect({ direct: true });
  try {
    assert.ok(connection.client instanceof RaTlsClient);
    assert.equal(connection.client.attestation?.app?.appId, stack().expected.appId);
    assert.deepEqual(await connection.one('select current_user as who'), {
      who: 'teesql_readwrite',
    });
  } finally {
    await connection.done();
  }
});

test('a stale pooled connection is re-attested when pg-promise checks it out', async () => {
  let offset = 0;
  const timed = pgp({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
    max: 1,
    reattestEvery: '1m',
    now: () => new Date(Date.now() + offset),
  });
  try {
    const pool = attestedPool(timed);
    assert.ok(pool !== undefined);
    const reattested: AttestationReport[] = [];
    pool.on('reattested', (report: AttestationReport) => reattested.push(report));
    const first = await timed.one('select pg_backend_pid() as pid');
    offset += 61_000;
    const second = await timed.one('select pg_backend_pid() as pid');
    assert.equal(reattested.length, 1);
    assert.equal(second.pid, first.pid, 'on the same connection');
  } finally {
    await timed.$pool.end();
  }
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const reader = pgp({
    connectionString: stack().databaseUrlFor('teesql_read'),
    ...stack().clientOptions,
  });
  try {
    assert.equal((await reader.one('select count(*)::int as n from payments')).n, 1);
    await assert.rejects(reader.none("insert into payments (payee) values ('eve')"), {
      code: '42501',
    });
  } finally {
    await reader.$pool.end();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const fresh = pgp({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  const seen = await presentForeignMrtd(stack());
  try {
    // pg-promise rejects with the pool's (or the client's) error as it is.
    const refused = (error: unknown) => isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED');
    await assert.rejects(fresh.one('select 1 as one'), refused);
    await assert.rejects(fresh.connect({ direct: true }), refused);
  } finally {
    stack().sidecar.reset();
    await fresh.$pool.end();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.equal(attempts.length, 2);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    [0, 0],
  );
});

test('usePgRaTls refuses what is not a pg-promise instance', () => {
  assert.throws(
    () => usePgRaTls({} as never),
    (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && error.details?.option === 'pgp',
  );
  assert.equal((pgp.pg as unknown as { native: unknown }).native, null);
});
