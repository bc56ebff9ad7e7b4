/**
 * A connection that goes away under a session (a leader stopped, a sidecar
 * gone) reaches callers as a RaTlsError with code CONNECTION_LOST, not as
 * pg's plain "Connection terminated unexpectedly" Error (or a bare socket
 * error) that callers could only recognise by its message.
 */
import assert from 'node:assert/strict';
import { type EventEmitter, once } from 'node:events';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import pg from 'pg';
import { createClient } from '../integrations/pg/index.js';
import { createPool, isRaTlsError, type RaTlsError } from '../src/index.js';
import { useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack();
/** pg-cursor (a real submittable; the package ships no types). */
const Cursor = createRequire(import.meta.url)('pg-cursor') as new (
  text: string,
) => EventEmitter & pg.Submittable;

/** CONNECTION_LOST whose cause is what pg or the socket reported. */
const lost = (cause: RegExp) => (error: unknown) =>
  isRaTlsError(error, 'CONNECTION_LOST') &&
  error.cause instanceof Error &&
  cause.test(error.cause.message) &&
  /retry/.test(error.message);

test('queries on pooled connections that are dropped reject with CONNECTION_LOST; the pool recovers', async () => {
  const pool = createPool({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
    max: 2,
  });
  const checkedOut = [await pool.connect(), await pool.connect()];
  try {
    // A checked-out client reports its loss as pg's `error` event too (pg-pool
    // listens only while the client is idle), as an app handles it.
    const emitted = checkedOut.map((client) => once(client, 'error') as Promise<[unknown]>);
    // Each query is written at once on its own attested connection.
    const sleeping = checkedOut.map((client) => client.query('select pg_sleep(30)'));
    stack().sidecar.misbehave({ dropEstablished: true });
    await Promise.all(sleeping.map((query) => assert.rejects(query, lost(/ECONNRESET/))));
    for (const [error] of await Promise.all(emitted)) assert.ok(lost(/ECONNRESET/)(error));
    for (const client of checkedOut.splice(0)) client.release(true);
    const { rows } = await pool.query<{ one: number }>('select 1 as one');
    assert.equal(rows[0]?.one, 1, 'a new attested connection serves the next query');
  } finally {
    stack().sidecar.reset();
    for (const client of checkedOut) client.release(true);
    await pool.end();
  }
});

test('a backend that goes away: its error stays Postgres’s, what was queued and the error event get CONNECTION_LOST', async () => {
  const client = createClient({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  await client.connect();
  const emitted = once(client, 'error') as Promise<[RaTlsError]>;
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid;
  const active = client.query('select pg_sleep(30)');
  const waiting = client.query('select 2');
  const admin = new pg.Client({ connectionString: stack().postgres?.superuserUrl });
  await admin.connect();
  try {
    // The server says goodbye (FATAL 57P01) and closes: the query it ran gets that,
    // the one still queued gets pg's "Connection terminated unexpectedly".
    // Judged from before the termination: the goodbye may arrive before admin's answer.
    const judged = [
      assert.rejects(active, { code: '57P01' }),
      assert.rejects(waiting, lost(/^Connection terminated unexpectedly$/)),
    ];
    await admin.query('select pg_terminate_backend($1)', [pid]);
    await Promise.all(judged);
    const [error] = await emitted;
    assert.ok(
      lost(/^Connection terminated unexpectedly$/)(error),
      `the error event carries CONNECTION_LOST: ${String(error)}`,
    );
  } finally {
    await admin.end();
    await client.end().catch(() => {});
  }
});

test('a query on a client whose connection was lost, or that was ended, is typed in every form pg offers', async () => {
  const client = createClient({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  await client.connect();
  const emitted = once(client, 'error') as Promise<[RaTlsError]>;
  try {
    const active = client.query('select pg_sleep(30)');
    stack().sidecar.misbehave({ dropEstablished: true });
    await assert.rejects(active, lost(/ECONNRESET/));
    await emitted;
    // pg itself would answer these with its untyped "Client has encountered a
    // connection error and is not queryable".
    const lostEarlier = (error: unknown) =>
      lost(/ECONNRESET/)(error) && /lost earlier/.test((error as Error).message);
    await assert.rejects(client.query('select 1'), lostEarlier);
    const viaCallback = await new Promise<unknown>((resolve) => {
      client.query('select 1', (error: Error | null) => resolve(error));
    });
    assert.ok(lostEarlier(viaCallback), `callback form: ${String(viaCallback)}`);
    const cursor = client.query(new Cursor('select 1'));
    const [viaCursor] = (await once(cursor, 'error')) as [unknown];
    assert.ok(lostEarlier(viaCursor), `submittable (pg-cursor): ${String(viaCursor)}`);
  } finally {
    stack().sidecar.reset();
    await client.end().catch(() => {});
  }
  // Ended by its owner: CONNECTION_ENDED, not pg's "Client was closed and is not queryable".
  const ended = createClient({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  await ended.connect();
  await ended.end();
  await assert.rejects(
    ended.query('select 1'),
    (error: unknown) =>
      isRaTlsError(error, 'CONNECTION_ENDED') && /check out a new connection/.test(error.message),
  );
});
