import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DataSource,
  EntitySchema,
  type MigrationInterface,
  QueryFailedError,
  type QueryRunner,
} from 'typeorm';
import { attestedPool, typeormOptions } from '../integrations/typeorm/index.js';
import { isOwnRaTlsError } from '../src/errors.js';
import { type AttestationReport, isRaTlsError } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

interface Invoice {
  id: number;
  customer: string;
}

const InvoiceEntity = new EntitySchema<Invoice>({
  name: 'Invoice',
  tableName: 'invoices',
  columns: {
    id: { type: Number, primary: true, generated: 'increment' },
    customer: { type: String },
  },
});

class CreateInvoices1767225600000 implements MigrationInterface {
  readonly name = 'CreateInvoices1767225600000';
  async up(runner: QueryRunner): Promise<void> {
    await runner.query('create table invoices (id serial primary key, customer text not null)');
  }
  async down(runner: QueryRunner): Promise<void> {
    await runner.query('drop table invoices');
  }
}

class IndexInvoices1767312000000 implements MigrationInterface {
  readonly name = 'IndexInvoices1767312000000';
  async up(runner: QueryRunner): Promise<void> {
    await runner.query('create index invoices_customer on invoices (customer)');
  }
  async down(runner: QueryRunner): Promise<void> {
    await runner.query('drop index invoices_customer');
  }
}

const migrations = [CreateInvoices1767225600000, IndexInvoices1767312000000];

let dataSource: DataSource;
const stack = useLocalStack({
  setup: async ({ databaseUrl, clientOptions }) => {
    dataSource = new DataSource({
      ...typeormOptions({ connectionString: databaseUrl, ...clientOptions }),
      poolSize: 4,
      entities: [InvoiceEntity],
      migrations,
    });
    await dataSource.initialize();
  },
  teardown: async () => {
    if (dataSource?.isInitialized) await dataSource.destroy();
  },
});

test('TypeORM migrations run over attested connections, and are undone', async () => {
  const applied = await dataSource.runMigrations();
  assert.deepEqual(
    applied.map((migration) => migration.name),
    ['CreateInvoices1767225600000', 'IndexInvoices1767312000000'],
  );
  assert.deepEqual(await dataSource.runMigrations(), [], 'nothing left to run');
  await dataSource.undoLastMigration();
  const indexes = await dataSource.query(
    "select indexname from pg_indexes where tablename = 'invoices' order by indexname",
  );
  assert.deepEqual(indexes, [{ indexname: 'invoices_pkey' }]);
  assert.equal((await dataSource.runMigrations()).length, 1);
  assert.equal(attestedPool(dataSource)?.attestation?.mrtd, stack().expected.mrtd);
});

test('TypeORM commits one transaction and rolls back another', async () => {
  await dataSource.transaction(async (manager) => {
    await manager.getRepository(InvoiceEntity).insert({ customer: 'kept' });
  });
  await assert.rejects(
    dataSource.transaction(async (manager) => {
      await manager.getRepository(InvoiceEntity).insert({ customer: 'discarded' });
      throw new Error('roll back');
    }),
    /roll back/,
  );
  const rows = await dataSource.getRepository(InvoiceEntity).find({ select: { customer: true } });
  assert.deepEqual(
    rows.map((row) => row.customer),
    ['kept'],
  );
});

test('a stale connection is re-attested when TypeORM checks it out', async () => {
  let offset = 0;
  const timed = new DataSource({
    ...typeormOptions({
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      reattestEvery: '1m',
      now: () => new Date(Date.now() + offset),
    }),
    poolSize: 1,
  });
  await timed.initialize();
  try {
    const pool = attestedPool(timed);
    assert.ok(pool !== undefined, 'the DataSource runs on the attested pool');
    const reattested: AttestationReport[] = [];
    pool.on('reattested', (report: AttestationReport) => reattested.push(report));
    const [first] = await timed.query('select pg_backend_pid() as pid');
    assert.equal(reattested.length, 0);
    offset += 61_000;
    const [second] = await timed.query('select pg_backend_pid() as pid');
    assert.equal(reattested.length, 1);
    assert.equal(second.pid, first.pid, 'on the same connection');
  } finally {
    await timed.destroy();
  }
  assert.equal(attestedPool(timed), undefined);
});

test('teesql_read is refused an INSERT by Postgres itself (42501)', async () => {
  const reader = new DataSource({
    ...typeormOptions({
      connectionString: stack().databaseUrlFor('teesql_read'),
      ...stack().clientOptions,
    }),
    entities: [InvoiceEntity],
  });
  await reader.initialize();
  try {
    assert.equal(await reader.getRepository(InvoiceEntity).count(), 1);
    await assert.rejects(
      reader.getRepository(InvoiceEntity).insert({ customer: 'eve' }),
      (error: unknown) =>
        error instanceof QueryFailedError &&
        (error.driverError as { code?: string }).code === '42501',
    );
  } finally {
    await reader.destroy();
  }
});

test('a server with a foreign MRTD is refused with MRTD_NOT_ALLOWED and Postgres gets no byte', async () => {
  const options = typeormOptions({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
  });
  const running = new DataSource({ ...options, poolSize: 2 });
  await running.initialize();
  const fresh = new DataSource({ ...options, poolSize: 2 });
  const seen = await presentForeignMrtd(stack());
  const held = running.createQueryRunner();
  const second = running.createQueryRunner();
  try {
    // TypeORM rejects initialize() with the pool's error as it is.
    await assert.rejects(fresh.initialize(), (error: unknown) =>
      isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
    // A running DataSource: the idle, attested connection still serves; a new one is refused.
    await held.connect();
    await assert.rejects(second.connect(), (error: unknown) =>
      isOwnRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  } finally {
    stack().sidecar.reset();
    await second.release();
    await held.release();
    await running.destroy();
    if (fresh.isInitialized) await fresh.destroy();
  }
  const attempts = attemptsSince(stack(), seen);
  assert.ok(attempts.length >= 2);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
  );
});

test('connection settings given to the DataSource instead of typeormOptions are refused', async () => {
  const mixed = new DataSource({
    ...typeormOptions({ connectionString: stack().databaseUrl, ...stack().clientOptions }),
    host: 'db.example',
  });
  await assert.rejects(
    mixed.initialize(),
    (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && error.details?.option === 'host',
  );
  assert.throws(
    () => typeormOptions({ connectionString: 'postgres://u@h/db', ssl: true }),
    (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
  );
  const { driver } = typeormOptions({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
  });
  assert.equal(driver.native, null, 'TypeORM cannot switch to pg-native');
});
