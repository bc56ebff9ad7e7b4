/**
 * The `knex` CLI as users run it (`npx knex migrate:latest --knexfile ...`),
 * with a knexfile that exports `knexConfig(...)` from pg-ra-tls/knex and
 * reads the environment `pg-ra-tls dev` prints: every connection the CLI
 * opens is attested, and a refused server stops the migration.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { devEnvironment } from '../src/cli/dev.js';
import { createPool } from '../src/index.js';
import { attemptsSince, presentForeignMrtd, useLocalStack } from './support/integration-stack.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const knexfile = 'test/support/knex-cli/knexfile.ts';

const stack = useLocalStack();

/** `npx knex <command> --knexfile ...` in the environment `pg-ra-tls dev` prints. */
async function knexCli(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const { NODE_TEST_CONTEXT: _runner, ...inherited } = process.env;
  const env = {
    ...inherited,
    // A TypeScript knexfile, as with ts-node or tsx in a user's project.
    NODE_OPTIONS: '--import tsx',
    // PEM text stands for the trust-root file `pg-ra-tls dev` writes.
    ...devEnvironment(stack(), stack().trustRoot.rootCaPem),
  };
  try {
    const { stdout, stderr } = await run(
      'npx',
      ['--no-install', 'knex', command, '--knexfile', knexfile],
      { cwd: root, env },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const {
      code,
      stdout = '',
      stderr = '',
    } = error as {
      code?: number;
      stdout?: string;
      stderr?: string;
    };
    return { code: code ?? -1, stdout, stderr };
  }
}

/** What the migration bookkeeping and the schema say, read over an attested pool. */
async function database(): Promise<{ migrations: string[]; ledger: boolean }> {
  const pool = createPool({ connectionString: stack().databaseUrl, ...stack().clientOptions });
  try {
    const { rows } = await pool.query<{ name: string }>(
      'select name from knex_migrations order by id',
    );
    const ledger = await pool.query(
      "select 1 from information_schema.tables where table_name = 'ledger'",
    );
    return { migrations: rows.map((row) => row.name), ledger: ledger.rowCount === 1 };
  } finally {
    await pool.end();
  }
}

test('npx knex migrate:latest runs the migrations over attested connections, then rolls them back', async () => {
  const latest = await knexCli('migrate:latest');
  assert.equal(latest.code, 0, latest.stderr);
  assert.match(latest.stdout, /Batch 1 run: 2 migrations/);
  assert.deepEqual(await database(), {
    migrations: ['20260101000000_create_ledger.ts', '20260102000000_add_amount.ts'],
    ledger: true,
  });

  const again = await knexCli('migrate:latest');
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /Already up to date/);

  const rollback = await knexCli('migrate:rollback');
  assert.equal(rollback.code, 0, rollback.stderr);
  assert.match(rollback.stdout, /Batch 1 rolled back: 2 migrations/);
  assert.deepEqual(await database(), { migrations: [], ledger: false });
});

test('against a server with a foreign MRTD the CLI fails with the refusal and Postgres gets no byte', async () => {
  const seen = await presentForeignMrtd(stack());
  let refused: Awaited<ReturnType<typeof knexCli>>;
  try {
    refused = await knexCli('migrate:latest');
  } finally {
    stack().sidecar.reset();
  }
  assert.equal(refused.code, 1);
  // The CLI prints the error's stack: the RaTlsError of the MRTD pin.
  assert.match(refused.stderr, /RaTlsError: MRTD e{96} is not in policy\.allowedMrtds/);
  const attempts = attemptsSince(stack(), seen);
  assert.ok(attempts.length >= 1);
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
  );
  assert.deepEqual((await database()).ledger, false, 'nothing was migrated');
});
