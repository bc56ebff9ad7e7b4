/**
 * pg-ra-tls relies on five node-postgres / pg-pool internals, all behind
 * src/connection/pg-internals.ts. These tests pin that module to the supported
 * peer range and show an incompatible pg fails at construction, typed.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import pg from 'pg';
import { clientInternals, poolInternals } from '../src/connection/pg-internals.js';
import { isRaTlsError } from '../src/errors.js';
import { createPool } from '../src/pool/ra-tls-pool.js';

const require = createRequire(import.meta.url);
const ownPackage = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
/** The installed version of `name` (its package.json next to its entry point). */
function version(name: string): number[] {
  let dir = dirname(require.resolve(name));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  return (manifest.version as string).split('.').map(Number);
}

const options = {
  connectionString: `postgres://teesql_readwrite:${'a'.repeat(64)}@127.0.0.1:5433/teesql`,
  clientCertOverride: { key: 'unused', cert: 'unused' },
  logger: () => {},
};

/** Runs `fn` with `name` removed from the prototype chain of `object` that defines it. */
function without(object: object, name: string, fn: () => void): void {
  let owner: object | null = object;
  while (owner !== null && !Object.hasOwn(owner, name)) owner = Object.getPrototypeOf(owner);
  assert.ok(owner !== null, `${name} exists`);
  const descriptor = Object.getOwnPropertyDescriptor(owner, name)!;
  delete (owner as Record<string, unknown>)[name];
  try {
    fn();
  } finally {
    Object.defineProperty(owner, name, descriptor);
  }
}

describe('pg internals', () => {
  test('the installed pg is inside the declared peer range and has every internal', () => {
    assert.equal(ownPackage.peerDependencies.pg, '^8.11.0', 'update this test with the range');
    const [major, minor] = version('pg');
    assert.ok(major === 8 && minor! >= 11, `pg ${version('pg').join('.')}`);
    assert.equal(version('pg-pool')[0], 3, 'pg 8 ships pg-pool 3');
    const pool = new pg.Pool();
    const internals = poolInternals(pool);
    assert.deepEqual(internals.idleClients(), []);
    const client = new pg.Client();
    const clientSide = clientInternals(client);
    assert.equal(clientSide.backendKey(), undefined, 'no session yet');
    assert.equal(typeof clientSide.stream().once, 'function');
  });

  test('a pg-pool without _idle, _remove or _pulseQueue fails createPool with PG_UNSUPPORTED_VERSION', () => {
    assert.throws(
      () => poolInternals({} as pg.Pool),
      (error: unknown) => isRaTlsError(error, 'PG_UNSUPPORTED_VERSION'),
    );
    for (const name of ['_remove', '_pulseQueue']) {
      without(pg.Pool.prototype, name, () => {
        assert.throws(
          () => createPool(options),
          (error: unknown) =>
            isRaTlsError(error, 'PG_UNSUPPORTED_VERSION') && error.message.includes(name),
        );
      });
    }
  });

  test('a pg Client without connection.stream, the backend key fields or its queryable state fails RaTlsClient with PG_UNSUPPORTED_VERSION', () => {
    const streamless = new pg.Client();
    (streamless as unknown as { connection: { stream: unknown } }).connection.stream = undefined;
    assert.throws(
      () => clientInternals(streamless),
      (error: unknown) => isRaTlsError(error, 'PG_UNSUPPORTED_VERSION'),
    );
    const keyless = new pg.Client();
    delete (keyless as unknown as { processID?: unknown }).processID;
    assert.throws(
      () => clientInternals(keyless),
      (error: unknown) => isRaTlsError(error, 'PG_UNSUPPORTED_VERSION'),
    );
    // Without its queryable/ending state a lost or ended client could not be told apart.
    for (const state of ['_queryable', '_ending']) {
      const stateless = new pg.Client();
      delete (stateless as unknown as Record<string, unknown>)[state];
      assert.throws(
        () => clientInternals(stateless),
        (error: unknown) =>
          isRaTlsError(error, 'PG_UNSUPPORTED_VERSION') &&
          error.message.includes('_queryable/_ending'),
      );
    }
  });

  test('each missing internal is named in the message and in details', () => {
    const cases: Array<[string, (client: Record<string, unknown>) => void]> = [
      [
        'Client#connection',
        (client) => {
          client['connection'] = null;
        },
      ],
      [
        'Client#processID/secretKey',
        (client) => {
          delete client['secretKey'];
        },
      ],
      [
        'Client#_errorAllQueries()',
        (client) => {
          client['_errorAllQueries'] = undefined;
        },
      ],
      [
        'Client#_handleErrorEvent()',
        (client) => {
          client['_handleErrorEvent'] = 'no';
        },
      ],
      [
        'Connection#stream socket',
        (client) => {
          (client['connection'] as { stream: unknown }).stream = { once: 'no' };
        },
      ],
    ];
    for (const [missing, damage] of cases) {
      const client = new pg.Client();
      damage(client as unknown as Record<string, unknown>);
      assert.throws(
        () => clientInternals(client),
        (error: unknown) =>
          isRaTlsError(error, 'PG_UNSUPPORTED_VERSION') &&
          error.message ===
            `the installed pg/pg-pool has no ${missing}, which pg-ra-tls relies on: install a pg release within the supported peer range (^8.11.0)` &&
          (error.details as { missing?: unknown }).missing === missing,
        missing,
      );
    }
    assert.throws(
      () => poolInternals({ _idle: [], _remove() {} } as unknown as pg.Pool),
      (error: unknown) =>
        isRaTlsError(error, 'PG_UNSUPPORTED_VERSION') &&
        (error.details as { missing?: unknown }).missing === 'Pool#_pulseQueue()',
    );
  });

  test('removeIdle hands pg-pool its queue pulse, so a waiting checkout sees the freed slot', () => {
    let pulses = 0;
    let removed: unknown;
    const internals = poolInternals({
      _idle: [{ client: 'a' }],
      _remove(client: unknown, callback: () => void) {
        removed = client;
        callback();
      },
      _pulseQueue() {
        pulses++;
      },
    } as unknown as pg.Pool);
    assert.deepEqual(internals.idleClients(), ['a']);
    internals.removeIdle('a' as never);
    assert.equal(removed, 'a');
    assert.equal(pulses, 1);
  });

  test('a query on an unusable client is refused in every calling form, nothing sent', async () => {
    const client = new pg.Client();
    const states: string[] = [];
    const internals = clientInternals(client);
    let connectFailed = false;
    internals.refuseQueriesWhenUnusable(
      (state) => {
        states.push(state);
        return new Error(`refused: ${state}`) as never;
      },
      () => connectFailed,
    );
    const privates = client as unknown as { _queryable: boolean; _ending: boolean };
    privates._queryable = false;
    await assert.rejects(client.query('select 1'), /refused: broken/);
    const viaCallback = (call: (done: (error: Error | null) => void) => void) =>
      new Promise<Error | null>((resolve) => call(resolve));
    assert.match(
      String(await viaCallback((done) => client.query('select 1', done as never))),
      /refused: broken/,
    );
    assert.match(
      String(await viaCallback((done) => client.query('select $1', [1], done as never))),
      /refused: broken/,
    );
    assert.match(
      String(
        await viaCallback((done) => client.query({ text: 'select 1', callback: done } as never)),
      ),
      /refused: broken/,
    );
    // A submittable (pg.Query) gets the callback passed next to it, and its error.
    const submitted = new pg.Query('select 1');
    assert.match(
      String(await viaCallback((done) => client.query(submitted as never, done as never))),
      /refused: broken/,
    );
    const own = new pg.Query('select 1', [], () => {});
    let ownError: unknown;
    (own as unknown as { callback: (error: unknown) => void }).callback = (error) => {
      ownError = error;
    };
    const other = () => assert.fail('a submittable keeps its own callback');
    client.query(own as never, other as never);
    await new Promise((resolve) => setImmediate(resolve));
    assert.match(String(ownError), /refused: broken/);
    privates._queryable = true;
    privates._ending = true;
    await assert.rejects(client.query('select 1'), /refused: ending/);
    // pg's own states first; a failed connect() (which pg does not track) after them.
    connectFailed = true;
    await assert.rejects(client.query('select 1'), /refused: ending/);
    privates._ending = false;
    await assert.rejects(client.query('select 1'), /refused: failed/);
    assert.deepEqual(states, [
      'broken',
      'broken',
      'broken',
      'broken',
      'broken',
      'broken',
      'ending',
      'ending',
      'failed',
    ]);
  });

  test('a missing _idle list or a connection that is no object is named, not a TypeError later', () => {
    assert.throws(
      () => poolInternals({ _remove() {}, _pulseQueue() {} } as unknown as pg.Pool),
      (error: unknown) =>
        isRaTlsError(error, 'PG_UNSUPPORTED_VERSION') &&
        (error.details as { missing?: unknown }).missing === 'Pool#_idle list',
    );
    for (const connection of [undefined, 'connection']) {
      const client = new pg.Client();
      (client as unknown as { connection: unknown }).connection = connection;
      assert.throws(
        () => clientInternals(client),
        (error: unknown) =>
          isRaTlsError(error, 'PG_UNSUPPORTED_VERSION') &&
          (error.details as { missing?: unknown }).missing === 'Client#connection',
        String(connection),
      );
    }
  });

  test("on an unusable client a missing query is still pg's TypeError, and a submittable without a callback function takes the callback after its values", async () => {
    const client = new pg.Client();
    clientInternals(client).refuseQueriesWhenUnusable(
      (state) => new Error(`refused: ${state}`) as never,
      () => false,
    );
    (client as unknown as { _queryable: boolean })._queryable = false;
    for (const missing of [null, undefined]) {
      assert.throws(
        () => client.query(missing as never),
        (error: unknown) =>
          error instanceof TypeError && /null or undefined query/.test(error.message),
      );
    }
    // (submittable, values, callback): the values are no callback, pg takes the third argument.
    for (const values of [[1], undefined]) {
      const submitted = new pg.Query('select $1');
      const error = await new Promise((resolve) =>
        client.query(submitted as never, values as never, resolve as never),
      );
      assert.match(String(error), /refused: broken/);
    }
  });

  test("the guarded query stays replaceable and removable, like pg's own", () => {
    const client = new pg.Client();
    clientInternals(client).refuseQueriesWhenUnusable(
      () => new Error('refused') as never,
      () => false,
    );
    assert.ok(Object.hasOwn(client, 'query'));
    // Instrumentation wraps a client's query by assignment.
    const wrapped = () => 'wrapped';
    (client as unknown as { query: unknown }).query = wrapped;
    assert.equal(client.query, wrapped);
    assert.ok(delete (client as unknown as { query?: unknown }).query);
    assert.equal(client.query, pg.Client.prototype.query);
  });

  test('a submittable given a non-function after it is refused through its own error event, no crash', async () => {
    const client = new pg.Client();
    clientInternals(client).refuseQueriesWhenUnusable(
      () => new Error('refused') as never,
      () => false,
    );
    (client as unknown as { _queryable: boolean })._queryable = false;
    const submitted = new pg.Query('select 1');
    const refused = new Promise<unknown>((resolve) => submitted.once('error', resolve));
    client.query(submitted as never, [1] as never, 'not a function' as never);
    assert.match(String(await refused), /refused/);
  });

  test('failQueued fails what pg holds in its queue with the error given, nothing sent', async () => {
    const client = new pg.Client();
    const internals = clientInternals(client);
    // Queued before connect(), as pg allows: sent once a session is ready.
    const first = client.query('select 1');
    const second = client.query('select 2');
    const error = new Error('the connect failed');
    internals.failQueued(error);
    await assert.rejects(first, (failure) => failure === error);
    await assert.rejects(second, (failure) => failure === error);
    assert.equal((client as unknown as { queryQueue: unknown[] }).queryQueue.length, 0);
  });
});
