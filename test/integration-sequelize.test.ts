import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import {
  ConnectionError,
  DatabaseError,
  DataTypes,
  type Model,
  type ModelStatic,
  Sequelize,
} from 'sequelize';
import { sequelizeOptions } from '../integrations/sequelize/index.js';
import { findRaTlsError, isRaTlsError, RaTlsClient } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

function defineOrder(sequelize: Sequelize): ModelStatic<Model> {
  return sequelize.define(
    'Order',
    { item: { type: DataTypes.TEXT, allowNull: false } },
    { tableName: 'orders', timestamps: false },
  );
}

/** The attested client under a Sequelize connection (checked out and released). */
async function peekConnection(sequelize: Sequelize): Promise<RaTlsClient> {
  const connection = await sequelize.connectionManager.getConnection({ type: 'read' });
  sequelize.connectionManager.releaseConnection(connection);
  assert.ok(connection instanceof RaTlsClient);
  return connection;
}

let sequelize: Sequelize;
let Order: ModelStatic<Model>;
const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    sequelize = new Sequelize(
      sequelizeOptions({
        connectionString: databaseUrl,
        ...clientOptions,
        sequelize: { logging: false, pool: { max: 4 } },
      }),
    );
    Order = defineOrder(sequelize);
    await sequelize.sync();
  },
  teardown: async () => {
    await sequelize?.close();
  },
});

test('Sequelize commits one transaction and rolls back another over attested connections', async () => {
  await sequelize.transaction(async (transaction) => {
    await Order.create({ item: 'kept' }, { transaction });
  });
  await assert.rejects(
    sequelize.transaction(async (transaction) => {
      await Order.create({ item: 'discarded' }, { transaction });
      throw new Error('roll back');
    }),
    /roll back/,
  );
  const orders = await Order.findAll({ attributes: ['item'], raw: true });
  assert.deepEqual(orders, [{ item: 'kept' }]);
  const client = await peekConnection(sequelize);
  assert.equal(client.attestation?.mrtd, stack().expected.mrtd);
  assert.equal(client.attestation?.app?.composeHash, stack().expected.composeHash);
});

test('a connection is not used once its report is older than reattestEvery: a fresh one replaces it', async () => {
  let offset = 0;
  const timed = new Sequelize(
    sequelizeOptions({
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      reattestEvery: '1m',
      now: () => new Date(Date.now() + offset),
      sequelize: { logging: false, pool: { max: 1 } },
    }),
  );
  try {
    const pid = async () =>
      ((await timed.query('select pg_backend_pid() as pid', { plain: true })) as { pid: number })
        .pid;
    const first = await pid();
    const firstReport = (await peekConnection(timed)).attestation;
    assert.equal(await pid(), first, 'a fresh connection is reused');
    offset += 61_000;
    const second = await pid();
    assert.notEqual(second, first, 'the stale connection was replaced');
    const secondReport = (await peekConnection(timed)).attestation;
    assert.ok(firstReport !== undefined && secondReport !== undefined);
    assert.ok(secondReport.verifiedAt > firstReport.verifiedAt, 'the server was verified again');
  } finally {
    await timed.close();
  }
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const reader = new Sequelize(
    sequelizeOptions({
      connectionString: stack().databaseUrlFor('teesql_read'),
      ...stack().clientOptions,
      sequelize: { logging: false },
    }),
  );
  try {
    const ReadOrder = defineOrder(reader);
    assert.equal(await ReadOrder.count(), 1);
    await assert.rejects(
      ReadOrder.create({ item: 'eve' }),
      (error: unknown) =>
        error instanceof DatabaseError && (error.parent as { code?: string }).code === '42501',
    );
  } finally {
    await reader.close();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const fresh = new Sequelize(
    sequelizeOptions({
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      sequelize: { logging: false },
    }),
  );
  const seen = await presentForeignMrtd(stack());
  try {
    // Sequelize wraps it in its ConnectionError; the RaTlsError is its parent (and
    // original), which isRaTlsError / findRaTlsError follow.
    const refused = (error: unknown) =>
      error instanceof ConnectionError &&
      isRaTlsError(error.parent, 'MRTD_NOT_ALLOWED') &&
      findRaTlsError(error) === error.parent &&
      isRaTlsError(error, 'MRTD_NOT_ALLOWED');
    await assert.rejects(fresh.authenticate(), refused);
    await assert.rejects(defineOrder(fresh).count(), refused);
  } finally {
    stack().sidecar.reset();
    await fresh.close();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.ok(attempts.length >= 2);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
  );
});

test('transport and login options given to Sequelize are refused before any I/O', () => {
  const base = { connectionString: stack().databaseUrl, ...stack().clientOptions };
  const refused = (option: string) => (error: unknown) =>
    isRaTlsError(error, 'BAD_CONFIG') && error.details?.option === option;
  assert.throws(
    () => sequelizeOptions({ ...base, sequelize: { host: 'db.example' } as never }),
    refused('sequelize.host'),
  );
  assert.throws(
    () => sequelizeOptions({ ...base, sequelize: { dialectModule: pg } as never }),
    refused('sequelize.dialectModule'),
  );
  assert.throws(
    () => sequelizeOptions({ ...base, sequelize: { dialectOptions: { ssl: true } } }),
    refused('sequelize.dialectOptions.ssl'),
  );
  assert.throws(() => sequelizeOptions({ ...base, port: 'x' }), refused('port'));
  const options = sequelizeOptions(base);
  assert.equal((options.dialectModule as { native: unknown }).native, null);
});
