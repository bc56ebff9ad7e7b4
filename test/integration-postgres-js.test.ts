import assert from 'node:assert/strict';
import { test } from 'node:test';
import postgres from 'postgres';
import { postgresOptions, raTlsPostgres } from '../integrations/postgres-js/index.js';
import { isOwnRaTlsError, isRaTlsError } from '../src/errors.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    const sql = raTlsPostgres({ connectionString: databaseUrl, ...clientOptions });
    try {
      await sql`create table events (id serial primary key, kind text not null)`;
    } finally {
      await sql.end();
    }
  },
});

test('postgres.js commits one transaction and rolls back another over attested sockets', async () => {
  const before = stack().sidecar.stats.established;
  const sql = postgres(
    postgresOptions({
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      postgres: { max: 2 },
    }),
  );
  try {
    await sql.begin(async (tx) => {
      await tx`insert into events (kind) values ('kept')`;
    });
    await assert.rejects(
      sql.begin(async (tx) => {
        await tx`insert into events (kind) values ('dropped')`;
        throw new Error('roll back');
      }),
      /roll back/,
    );
    const rows = await sql<{ kind: string }[]>`select kind from events`;
    assert.deepEqual([...rows], [{ kind: 'kept' }]);
    const [session] = await sql<{ who: string }[]>`select current_user as who`;
    assert.equal(session?.who, 'teesql_readwrite');
  } finally {
    await sql.end();
  }
  assert.ok(stack().sidecar.stats.established > before, 'the sessions went through the sidecar');
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const sql = raTlsPostgres({
    connectionString: stack().databaseUrlFor('teesql_read'),
    ...stack().clientOptions,
  });
  try {
    assert.equal((await sql`select * from events`).length, 1);
    await assert.rejects(sql`insert into events (kind) values ('x')`, {
      name: 'PostgresError',
      code: '42501',
    });
  } finally {
    await sql.end();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const seen = await presentForeignMrtd(stack());
  const sql = raTlsPostgres({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    await assert.rejects(sql`select 1`, (error: unknown) =>
      isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  } finally {
    stack().sidecar.reset();
    await sql.end();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.equal(attempts.length, 1);
  assert.equal(attempts[0]?.bytesToUpstream, 0);
});

test('query.cancel() sends the CancelRequest over a new attested connection (57014)', async () => {
  const sql = raTlsPostgres({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    const sleeping = sql`select pg_sleep(30)`.execute();
    await waitUntil(async () => {
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where state = 'active' and query like 'select pg_sleep%'`;
      return row?.n === 1;
    });
    const before = stack().sidecar.stats;
    await sleeping.cancel();
    await assert.rejects(sleeping, { code: '57014', message: /cancel.*user request/ });
    const cancelConnections = attemptsSince(stack(), before.accepted);
    assert.equal(cancelConnections.length, 1, 'the cancel opened exactly one connection');
    assert.equal(cancelConnections[0]?.bytesToUpstream, 16, 'a CancelRequest is 16 bytes');
    const [alive] = await sql<{ ok: number }[]>`select 1 as ok`;
    assert.equal(alive?.ok, 1);
  } finally {
    await sql.end();
  }
});

test('postgresOptions keeps the secret out of logs and refuses transport overrides', () => {
  const options = postgresOptions({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
  });
  const password = new URL(stack().databaseUrl).password;
  assert.equal(options.ssl, false);
  assert.equal(typeof options.socket, 'function');
  assert.ok(!JSON.stringify(options).includes(password));
  assert.equal((options.password as () => string)(), password);
  for (const key of ['ssl', 'host', 'socket'] as const) {
    assert.throws(
      () =>
        postgresOptions({
          connectionString: stack().databaseUrl,
          ...stack().clientOptions,
          postgres: { [key]: 'x' } as never,
        }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && error.message.includes(key),
    );
  }
});

async function waitUntil(condition: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error('condition not reached within 5 s');
}
