import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EntitySchema, MikroORM } from '@mikro-orm/postgresql';
import { mikroOrmOptions } from '../integrations/mikro-orm/index.js';
import { isOwnRaTlsError } from '../src/errors.js';
import { isRaTlsError, RaTlsClient, type RaTlsPoolOptions } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

interface Shipment {
  id: number;
  parcel: string;
}

const ShipmentSchema = new EntitySchema<Shipment>({
  name: 'Shipment',
  tableName: 'shipments',
  properties: {
    id: { type: 'number', primary: true, autoincrement: true },
    parcel: { type: 'string' },
  },
});

function init(options: RaTlsPoolOptions, pool: { min?: number; max?: number } = {}) {
  return MikroORM.init({
    ...mikroOrmOptions(options),
    entities: [ShipmentSchema],
    pool: { min: 0, ...pool },
    allowGlobalContext: true,
    debug: false,
  });
}

/** The attested client of one connection from the ORM's Knex pool (checked out and released). */
async function peekConnection(orm: MikroORM): Promise<RaTlsClient> {
  const client = orm.em.getConnection().getKnex().client as {
    acquireConnection(): Promise<unknown>;
    releaseConnection(connection: unknown): Promise<unknown>;
  };
  const connection = await client.acquireConnection();
  await client.releaseConnection(connection);
  assert.ok(connection instanceof RaTlsClient);
  return connection;
}

let orm: MikroORM;
const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    orm = await init({ connectionString: databaseUrl, ...clientOptions }, { max: 4 });
    await orm.schema.createSchema();
  },
  teardown: async () => {
    await orm?.close(true);
  },
});

test('MikroORM commits one transaction and rolls back another over attested connections', async () => {
  await orm.em.fork().transactional(async (em) => {
    em.create(ShipmentSchema, { parcel: 'kept' });
  });
  await assert.rejects(
    orm.em.fork().transactional(async (em) => {
      em.create(ShipmentSchema, { parcel: 'discarded' });
      await em.flush();
      throw new Error('roll back');
    }),
    /roll back/,
  );
  const parcels = (await orm.em.fork().find(ShipmentSchema, {})).map((row) => row.parcel);
  assert.deepEqual(parcels, ['kept']);
  const client = await peekConnection(orm);
  assert.equal(client.attestation?.mrtd, stack().expected.mrtd);
  assert.equal(client.attestation?.app?.appId, stack().expected.appId);
});

test('a connection is not used once its report is older than reattestEvery: a fresh one replaces it', async () => {
  let offset = 0;
  const timed = await init(
    {
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      reattestEvery: '1m',
      now: () => new Date(Date.now() + offset),
    },
    { max: 1 },
  );
  try {
    const pid = async () =>
      (
        (await timed.em.getConnection().execute('select pg_backend_pid() as pid')) as {
          pid: number;
        }[]
      )[0]?.pid;
    const first = await pid();
    assert.equal(await pid(), first, 'a fresh connection is reused');
    const firstReport = (await peekConnection(timed)).attestation;
    offset += 61_000;
    const second = await pid();
    assert.notEqual(second, first, 'the stale connection was replaced');
    const secondReport = (await peekConnection(timed)).attestation;
    assert.ok(firstReport !== undefined && secondReport !== undefined);
    assert.ok(secondReport.verifiedAt > firstReport.verifiedAt, 'the server was verified again');
  } finally {
    await timed.close(true);
  }
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const reader = await init({
    connectionString: stack().databaseUrlFor('teesql_read'),
    ...stack().clientOptions,
  });
  try {
    assert.equal(await reader.em.fork().count(ShipmentSchema, {}), 1);
    const em = reader.em.fork();
    em.create(ShipmentSchema, { parcel: 'eve' });
    await assert.rejects(em.flush(), (error: unknown) => {
      const { code, cause } = error as { code?: string; cause?: { code?: string } };
      return code === '42501' || cause?.code === '42501';
    });
  } finally {
    await reader.close(true);
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const seen = await presentForeignMrtd(stack());
  try {
    // MikroORM (init, or the first query) rejects with the RaTlsError as it is.
    await assert.rejects(
      async () => {
        const fresh = await init({
          connectionString: stack().databaseUrl,
          ...stack().clientOptions,
        });
        try {
          await fresh.em.fork().count(ShipmentSchema, {});
        } finally {
          await fresh.close(true);
        }
      },
      (error: unknown) => isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  } finally {
    stack().sidecar.reset();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.ok(attempts.length >= 1);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
  );
});

test('options without a database name are refused before any I/O', () => {
  assert.throws(
    () => mikroOrmOptions({ host: '127.0.0.1', user: 'app', allowCustomRoles: true }),
    (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && error.details?.option === 'database',
  );
});
