/**
 * A misspelled option must not be ignored: `reattesEvery: '5m'` would leave the
 * default re-attestation period in force and `allowedMeasurment` would pin
 * nothing. Every options object refuses unknown keys with BAD_CONFIG and names
 * the option that was probably meant; the keys node-postgres accepts still work.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pgPromise from 'pg-promise';
import { drizzle } from '../integrations/drizzle/index.js';
import { knex } from '../integrations/knex/index.js';
import { raTlsDialect } from '../integrations/kysely/index.js';
import { mikroOrmOptions } from '../integrations/mikro-orm/index.js';
import { createClient, createPool } from '../integrations/pg/index.js';
import { usePgRaTls } from '../integrations/pg-promise/index.js';
import { postgresOptions } from '../integrations/postgres-js/index.js';
import { prismaAdapter } from '../integrations/prisma/index.js';
import { sequelizeOptions } from '../integrations/sequelize/index.js';
import { typeormOptions } from '../integrations/typeorm/index.js';
import { isRaTlsError } from '../src/errors.js';
import { inspectServer, pgConnectOptsRaTls, verifyServer } from '../src/index.js';
import { normalizePolicy } from '../src/policy/policy.js';
import { type LocalStack, startLocalStack } from '../src/testing/index.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';
import { IntelApiVerifier } from '../src/verification/intel-api-verifier.js';

const connectionString = `postgres://teesql_readwrite:${'a3'.repeat(32)}@db.example.com:5433/app`;

function refusedNaming(option: string, suggestion?: string) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error, 'BAD_CONFIG'), `expected BAD_CONFIG, got ${String(error)}`);
    assert.equal(error.details['option'], option, error.message);
    if (suggestion !== undefined) {
      assert.equal(error.details['suggestion'], suggestion, error.message);
      assert.match(error.message, new RegExp(`did you mean "${suggestion.replace('.', '\\.')}"`));
    }
    return true;
  };
}

describe('misspelled options are BAD_CONFIG with a suggestion, before any I/O', () => {
  const typo = { connectionString, reattesEvery: '5m' };

  test('createPool, RaTlsClient and the pg integration', () => {
    assert.throws(() => createPool(typo), refusedNaming('reattesEvery', 'reattestEvery'));
    assert.throws(() => createClient(typo), refusedNaming('reattesEvery', 'reattestEvery'));
    assert.throws(
      () => createPool({ connectionString, idleTimeoutMilis: 1000 } as never),
      refusedNaming('idleTimeoutMilis', 'idleTimeoutMillis'),
    );
    assert.throws(
      () => createPool({ config: { hots: 'db' } } as never),
      refusedNaming('config.hots', 'config.host'),
    );
  });

  test('verifyServer, inspectServer and pgConnectOptsRaTls, before any dial', async () => {
    await assert.rejects(
      verifyServer('db.example.com:5433', { reattesEvery: '5m' } as never),
      refusedNaming('reattesEvery', 'reattestEvery'),
    );
    await assert.rejects(
      inspectServer('db.example.com:5433', { handshakeTimout: '1s' } as never),
      refusedNaming('handshakeTimout', 'handshakeTimeout'),
    );
    await assert.rejects(
      pgConnectOptsRaTls(connectionString, { verifyTimout: '1s' } as never),
      refusedNaming('verifyTimout', 'verifyTimeout'),
    );
    // The DSN is pgConnectOptsRaTls's first argument: a second one in the options
    // would be silently overridden, so it is not an option.
    await assert.rejects(
      pgConnectOptsRaTls(connectionString, {
        connectionString: 'postgres://teesql_read:x@other.example.com/db',
      } as never),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') &&
        /^pgConnectOptsRaTls has no option "connectionString"/.test(error.message),
    );
  });

  test('verifyServer, inspectServer and pgConnectOptsRaTls without an options object: BAD_CONFIG, not a TypeError', async () => {
    const calls = {
      verifyServer: (options: unknown) => verifyServer('db.example.com:5433', options as never),
      inspectServer: (options: unknown) => inspectServer('db.example.com:5433', options as never),
      pgConnectOptsRaTls: (options: unknown) =>
        pgConnectOptsRaTls(connectionString, options as never),
    };
    for (const [name, call] of Object.entries(calls)) {
      for (const options of [undefined, null, 'verifier', 5]) {
        await assert.rejects(call(options), (error: unknown) => {
          assert.ok(
            isRaTlsError(error, 'BAD_CONFIG'),
            `${name}(${String(options)}): ${String(error)}`,
          );
          assert.equal(
            error.message,
            `${name} needs an options object with at least { verifier } as its second argument`,
          );
          assert.deepEqual(error.details, { option: 'options' });
          return true;
        });
      }
    }
  });

  test('cluster options', () => {
    assert.throws(
      () =>
        createPool({
          connectionString,
          cluster: { domain: 'db.example.com', signer: `0x${'ab'.repeat(20)}`, refreshEvry: '30s' },
        } as never),
      refusedNaming('cluster.refreshEvry', 'cluster.refreshEvery'),
    );
  });

  test('an option far from every known one lists the known ones', () => {
    assert.throws(
      () => createPool({ connectionString, somethingElse: 1 } as never),
      (error: unknown) => {
        refusedNaming('somethingElse')(error);
        assert.match((error as Error).message, /reattestEvery/);
        return true;
      },
    );
  });

  test('policy', () => {
    assert.throws(
      () => normalizePolicy({ allowedMeasurment: [] } as never),
      refusedNaming('policy.allowedMeasurment', 'policy.allowedMeasurements'),
    );
    assert.throws(
      () => createPool({ connectionString, policy: { allowedAppID: [] } as never }),
      refusedNaming('policy.allowedAppID', 'policy.allowedAppIds'),
    );
  });

  test('DcapVerifier and IntelApiVerifier', () => {
    assert.throws(
      () => new DcapVerifier({ pccsURL: 'https://pccs' } as never),
      refusedNaming('pccsURL', 'pccsUrl'),
    );
    assert.throws(
      () => new IntelApiVerifier({ apiKey: 'k', jwksURL: 'https://x' } as never),
      refusedNaming('jwksURL', 'jwksUrl'),
    );
  });

  test('every integration', () => {
    const cases: [string, () => unknown][] = [
      ['raTlsDialect', () => raTlsDialect(typo)],
      [
        'raTlsDialect pool',
        () => raTlsDialect({ connectionString, pool: { reattesEvery: '5m' } as never }),
      ],
      ['drizzle', () => drizzle({ connection: typo })],
      ['prismaAdapter', () => prismaAdapter(typo)],
      ['knex', () => knex({ connection: typo })],
      ['typeormOptions', () => typeormOptions(typo)],
      ['sequelizeOptions', () => sequelizeOptions(typo)],
      ['mikroOrmOptions', () => mikroOrmOptions(typo)],
      ['postgresOptions', () => postgresOptions(typo)],
      ['pg-promise', () => usePgRaTls(pgPromise())(typo)],
    ];
    for (const [name, make] of cases) {
      assert.throws(make, refusedNaming('reattesEvery', 'reattestEvery'), name);
    }
  });

  test('startLocalStack', async () => {
    await assert.rejects(
      startLocalStack({ gatway: false } as never),
      refusedNaming('gatway', 'gateway'),
    );
  });
});

describe('a node-postgres pool configuration moves over unchanged', () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ gateway: false });
  });
  after(() => stack?.stop());

  test('max, timeouts, allowExitOnIdle, session settings and ssl: false are accepted and applied', async () => {
    // Given a typical pg.Pool config, plus pg-ra-tls's connection and attestation options
    const pool = createPool({
      connectionString: stack.databaseUrl,
      ...stack.clientOptions,
      max: 3,
      min: 0,
      idleTimeoutMillis: 10_000,
      connectionTimeoutMillis: 30_000,
      allowExitOnIdle: true,
      maxUses: 100,
      application_name: 'option-keys-test',
      statement_timeout: 4_000,
      query_timeout: 20_000,
      keepAlive: true,
      ssl: false,
    });
    try {
      // When a query runs
      const { rows } = await pool.query<{ app: string; timeout: string }>(
        "select current_setting('application_name') as app, current_setting('statement_timeout') as timeout",
      );
      // Then the session settings reached Postgres and the pool settings reached pg-pool
      assert.deepEqual(rows[0], { app: 'option-keys-test', timeout: '4s' });
      assert.equal(pool.options.max, 3);
      assert.equal(pool.options.idleTimeoutMillis, 10_000);
      assert.equal(pool.options.allowExitOnIdle, true);
    } finally {
      await pool.end();
    }
  });

  test('ssl other than false, and pg options that would bypass the attested TLS, say why', () => {
    const base = { connectionString: stack.databaseUrl, ...stack.clientOptions };
    assert.throws(() => createPool({ ...base, ssl: true }), refusedNaming('ssl'));
    assert.throws(
      () => createPool({ ...base, sslnegotiation: 'direct' }),
      refusedNaming('sslnegotiation'),
    );
    assert.throws(
      () => createPool({ ...base, enableChannelBinding: true }),
      refusedNaming('enableChannelBinding'),
    );
    assert.throws(
      () => createPool({ ...base, Client: class {} } as never),
      refusedNaming('Client'),
    );
  });
});
