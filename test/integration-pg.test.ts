import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import pg from 'pg';
import {
  type AttestationReport,
  createClient,
  createPool,
  Pool,
  RaTlsClient,
} from '../integrations/pg/index.js';
import { isOwnRaTlsError } from '../src/errors.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    const pool = createPool({ connectionString: databaseUrl, ...clientOptions });
    try {
      await pool.query('create table accounts (id serial primary key, owner text not null)');
    } finally {
      await pool.end();
    }
  },
});

test('pg code runs unchanged on the attested pool: transactions commit and roll back', async () => {
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    assert.ok(pool instanceof pg.Pool);
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('insert into accounts (owner) values ($1)', ['alice']);
      await client.query('COMMIT');
      await client.query('BEGIN');
      await client.query('insert into accounts (owner) values ($1)', ['mallory']);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    const { rows } = await pool.query<{ owner: string }>('select owner from accounts');
    assert.deepEqual(rows, [{ owner: 'alice' }]);
    assert.ok(client instanceof RaTlsClient);
    assert.equal(client.attestation?.mrtd, stack().expected.mrtd);
  } finally {
    await pool.end();
  }
});

test('the pool keeps pg-pool counters and events', async () => {
  const pool = new Pool({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
    max: 2,
  });
  const events: string[] = [];
  for (const name of ['connect', 'acquire', 'release', 'remove'] as const) {
    pool.on(name, () => events.push(name));
  }
  const attested: AttestationReport[] = [];
  pool.on('attested', (report) => attested.push(report));

  // Clients still held when an assertion fails are released in `finally`:
  // otherwise pool.end() would wait for them until the test times out.
  let first: pg.PoolClient | undefined;
  let second: pg.PoolClient | undefined;
  try {
    const firstClient = await pool.connect();
    first = firstClient;
    const secondClient = await pool.connect();
    second = secondClient;
    assert.deepEqual([pool.totalCount, pool.idleCount, pool.waitingCount], [2, 0, 0]);
    const third = pool.connect();
    assert.equal(pool.waitingCount, 1);
    firstClient.release();
    const reused = await third;
    assert.equal(reused, firstClient, 'the waiter got the released connection');
    reused.release();
    assert.deepEqual([pool.totalCount, pool.idleCount, pool.waitingCount], [2, 1, 0]);
    const removed = once(pool, 'remove');
    secondClient.release(true);
    await removed;
    assert.deepEqual([pool.totalCount, pool.idleCount, pool.waitingCount], [1, 1, 0]);
    await pool.end();
  } finally {
    if (!pool.ended) {
      for (const client of [first, second]) {
        try {
          client?.release(true);
        } catch {
          // Already released by the test.
        }
      }
      await pool.end();
    }
  }
  assert.equal(pool.totalCount, 0);

  assert.equal(attested.length, 2, 'one attestation per new connection');
  assert.ok(attested.every((report) => report.mrtd === stack().expected.mrtd));
  assert.deepEqual(
    events.filter((name) => name === 'connect'),
    ['connect', 'connect'],
  );
  assert.equal(events.filter((name) => name === 'acquire').length, 3);
  assert.equal(events.filter((name) => name === 'release').length, 3);
  assert.ok(events.includes('remove'));
});

test('createClient gives one attested pg.Client', async () => {
  const client = createClient({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  await client.connect();
  try {
    assert.ok(client instanceof pg.Client);
    const { rows } = await client.query('select current_user as who');
    assert.deepEqual(rows, [{ who: 'teesql_readwrite' }]);
    assert.equal(client.attestation?.app?.composeHash, stack().expected.composeHash);
  } finally {
    await client.end();
  }
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const pool = createPool({
    connectionString: stack().databaseUrlFor('teesql_read'),
    ...stack().clientOptions,
  });
  try {
    assert.ok((await pool.query('select * from accounts')).rowCount! >= 1);
    await assert.rejects(pool.query("insert into accounts (owner) values ('eve')"), {
      code: '42501',
    });
  } finally {
    await pool.end();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const seen = await presentForeignMrtd(stack());
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  const client = createClient({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    const refused = (error: unknown) => isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED');
    await assert.rejects(pool.query('select 1'), refused);
    await assert.rejects(client.connect(), refused);
  } finally {
    stack().sidecar.reset();
    await pool.end();
    await client.end();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.equal(attempts.length, 2);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    [0, 0],
  );
});
