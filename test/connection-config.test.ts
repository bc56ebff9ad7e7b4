import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { resolveConnectionSettings, toPgClientConfig } from '../src/config/connection-settings.js';
import { maskConnectionString, parseConnectionString } from '../src/config/connection-string.js';
import { RaTlsClient } from '../src/connection/ra-tls-client.js';
import { pgConnectOptsRaTls, verifyServer } from '../src/connection/verify-server.js';
import { isRaTlsError } from '../src/errors.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';

const SECRET = 'a3'.repeat(32);
const verifier: RaTlsVerifier = {
  name: 'never-called',
  verify: () => Promise.reject(new Error('the verifier must not be reached')),
};

describe('connection strings', () => {
  test('a teesql DATABASE_URL yields host, port, user, database and a hidden password', () => {
    const settings = resolveConnectionSettings({
      connectionString: `postgres://teesql_readwrite:${SECRET}@db.example.com:5433/app`,
    });
    assert.equal(settings.host, 'db.example.com');
    assert.equal(settings.port, 5433);
    assert.equal(settings.user, 'teesql_readwrite');
    assert.equal(settings.database, 'app');
    assert.equal(settings.servername, 'db.example.com');
    assert.equal(settings.password, SECRET);
    assert.ok(!JSON.stringify(settings).includes(SECRET), 'password is not enumerable');
    assert.equal(settings.description, 'postgres://teesql_readwrite:****@db.example.com:5433/app');
    assert.ok(Object.isFrozen(settings));
  });

  test('libpq keyword strings are read, quotes and escapes included', () => {
    const parsed = parseConnectionString(
      `host=10.0.0.7 port=6000 user=teesql_read password='${SECRET}' dbname='my \\'db\\'' application_name=svc`,
    );
    assert.deepEqual(
      { ...parsed },
      {
        host: '10.0.0.7',
        port: '6000',
        user: 'teesql_read',
        password: SECRET,
        database: "my 'db'",
        parameters: { application_name: 'svc' },
      },
    );
  });

  test('sslmode is stripped, PGSSLMODE ignored, pg gets ssl: false and session options', () => {
    const previous = process.env['PGSSLMODE'];
    process.env['PGSSLMODE'] = 'verify-full';
    try {
      const settings = resolveConnectionSettings({
        connectionString: `postgresql://teesql_read:${SECRET}@[::1]:5433/db?sslmode=require&application_name=api&statement_timeout=5s`,
      });
      const config = toPgClientConfig(settings);
      assert.equal(config.ssl, false);
      assert.equal(config.host, '::1');
      assert.equal(config.application_name, 'api');
      assert.equal(config.statement_timeout, 5000);
      assert.equal(settings.servername, undefined, 'no SNI for an IP address (RFC 6066)');
      assert.equal(config.password, SECRET);
      assert.ok(!Object.keys(config).includes('password'));
    } finally {
      if (previous === undefined) delete process.env['PGSSLMODE'];
      else process.env['PGSSLMODE'] = previous;
    }
  });

  test('hostaddr (libpq) sends TCP to the address while host stays the TLS name', () => {
    const name = 'ab12-5433s.dstack.example';
    for (const connectionString of [
      `postgres://teesql_read:${SECRET}@${name}:443/db?hostaddr=127.0.0.1`,
      `host=${name} hostaddr=127.0.0.1 port=443 user=teesql_read password=${SECRET} dbname=db`,
    ]) {
      const settings = resolveConnectionSettings({ connectionString });
      assert.equal(settings.host, '127.0.0.1');
      assert.equal(settings.servername, name);
      assert.equal(settings.port, 443);
    }
  });

  test('discrete config fields override the URL; the default port is the sidecar port', () => {
    const settings = resolveConnectionSettings({
      connectionString: `postgres://teesql_read:${SECRET}@old-host/db`,
      config: { host: 'new-host', database: 'other' },
      servername: 'app-5433s.gateway.example',
    });
    assert.equal(settings.host, 'new-host');
    assert.equal(settings.port, 5433);
    assert.equal(settings.database, 'other');
    assert.equal(settings.servername, 'app-5433s.gateway.example');
  });

  test('the password is masked in every echo of a DSN', () => {
    assert.equal(
      maskConnectionString(`postgres://u:${SECRET}@h:1/d?password=${SECRET}`),
      'postgres://u:****@h:1/d?password=****',
    );
    assert.equal(
      maskConnectionString(`host=h password='x y' user=u`),
      'host=h password=**** user=u',
    );
    assert.throws(
      () => resolveConnectionSettings({ connectionString: `postgres://u:${SECRET}@h:99999999/d` }),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') &&
        !error.message.includes(SECRET) &&
        error.message.includes('not shown'),
    );
    assert.throws(
      () =>
        resolveConnectionSettings({
          connectionString: `postgres://teesql_read:${SECRET}@h/d?frobnicate=1`,
        }),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') &&
        /parameter pg-ra-tls does not know/.test(error.message) &&
        !error.message.includes(SECRET),
    );
  });

  test('non-teesql users and malformed secrets are BAD_CREDENTIALS, never echoing the password', () => {
    const cases = [
      `postgres://postgres:${SECRET}@h/db`,
      'postgres://teesql_read:hunter2@h/db',
      `postgres://teesql_read:${SECRET.toUpperCase()}@h/db`,
      'postgres://teesql_readwrite@h/db',
    ];
    for (const connectionString of cases) {
      assert.throws(
        () => resolveConnectionSettings({ connectionString }),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CREDENTIALS') &&
          !error.message.includes('hunter2') &&
          !error.message.includes(SECRET) &&
          !error.message.includes(SECRET.toUpperCase()),
        connectionString.replace(/:[^@/]*@/, ':****@'),
      );
    }
  });

  test('allowCustomRoles turns the teesql rule off', () => {
    const settings = resolveConnectionSettings({
      connectionString: 'postgres://postgres:hunter2@h/db',
      allowCustomRoles: true,
    });
    assert.equal(settings.user, 'postgres');
  });

  test('pg-native, ssl, unix sockets and bad durations are refused', () => {
    assert.throws(
      () => resolveConnectionSettings({ host: 'h', native: true, allowCustomRoles: true }),
      (error: unknown) => isRaTlsError(error, 'PG_NATIVE_UNSUPPORTED'),
    );
    assert.throws(
      () =>
        resolveConnectionSettings(
          { host: 'h', allowCustomRoles: true },
          { NODE_PG_FORCE_NATIVE: '1' },
        ),
      (error: unknown) => isRaTlsError(error, 'PG_NATIVE_UNSUPPORTED'),
    );
    assert.throws(
      () => resolveConnectionSettings({ host: 'h', allowCustomRoles: true, ssl: true }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /ssl/.test(error.message),
    );
    assert.throws(
      () => resolveConnectionSettings({ host: '/var/run/postgresql', allowCustomRoles: true }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /unix socket/.test(error.message),
    );
    assert.throws(
      () =>
        resolveConnectionSettings({ host: 'h', allowCustomRoles: true, connectTimeout: 'soon' }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /connectTimeout/.test(error.message),
    );
    assert.throws(
      () =>
        resolveConnectionSettings({ connectionString: `postgres://teesql_read:${SECRET}@a,b/db` }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /several hosts/.test(error.message),
    );
  });
});

describe('policy warnings', () => {
  const dsn = `postgres://teesql_read:${SECRET}@db.example.com/db`;
  const base = { connectionString: dsn, verifier, clientCertOverride: { key: 'k', cert: 'c' } };

  test('a pool that accepts any MRTD says so when it is made, and again when updatePolicy keeps it open', async () => {
    const warnings: string[] = [];
    const pool = createPool({ ...base, logger: (message) => warnings.push(message) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /allowedMrtds is empty: any MRTD/);

    pool.updatePolicy({ allowDebugMode: true });
    assert.equal(warnings.length, 3);
    assert.match(warnings[2]!, /allowDebugMode is true/);
    await pool.end();
  });

  test('a pinned policy makes no noise', async () => {
    const warnings: string[] = [];
    const pool = createPool({
      ...base,
      policy: {
        allowedMeasurements: [
          { mrtd: 'ab'.repeat(48), rtmr1: 'cd'.repeat(48), rtmr2: 'ef'.repeat(48) },
        ],
      },
      logger: (message) => warnings.push(message),
    });
    assert.deepEqual(warnings, []);
    await pool.end();
  });
});

describe('the weak-pin warning (issue 9)', () => {
  const dsn = `postgres://teesql_read:${SECRET}@db.example.com/db`;
  const base = { connectionString: dsn, verifier, clientCertOverride: { key: 'k', cert: 'c' } };
  const appOnly = { allowedMrtds: ['ab'.repeat(48)], allowedAppIds: ['cd'.repeat(20)] };

  test('fires exactly once per policy for app pins without a boot-chain or KMS pin', async () => {
    const warnings: string[] = [];
    const logger = (message: string) => warnings.push(message);
    const policy = { ...appOnly };
    const first = createPool({ ...base, policy, logger });
    const second = createPool({ ...base, policy, logger });
    first.updatePolicy(policy);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /foreign kernel on genuine firmware/);
    // Another policy object is another policy: it is judged, and warned about, on its own.
    second.updatePolicy({ ...appOnly });
    assert.equal(warnings.length, 2);
    await Promise.all([first.end(), second.end()]);
  });

  test('stays silent once the boot chain or a KMS root is pinned', async () => {
    const warnings: string[] = [];
    for (const pin of [
      {
        allowedMeasurements: [
          { mrtd: 'ab'.repeat(48), rtmr1: 'cd'.repeat(48), rtmr2: 'ef'.repeat(48) },
        ],
      },
      { trustedKmsRoots: ['01'.repeat(32)] },
    ]) {
      const pool = createPool({
        ...base,
        policy: { ...appOnly, ...pin },
        logger: (message) => warnings.push(message),
      });
      await pool.end();
    }
    assert.deepEqual(warnings, []);
  });
});

describe('no network I/O before configuration is valid', () => {
  let server: Server;
  let port = 0;
  let accepted = 0;

  before(async () => {
    server = createServer((socket) => {
      accepted++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  test('given bad credentials, createPool, RaTlsClient and pgConnectOptsRaTls fail without connecting', async () => {
    const dsn = `postgres://postgres:${SECRET}@127.0.0.1:${port}/db`;
    const options = { verifier, clientCertOverride: { key: 'k', cert: 'c' } };
    assert.throws(
      () => createPool({ connectionString: dsn, ...options }),
      (error: unknown) => isRaTlsError(error, 'BAD_CREDENTIALS'),
    );
    assert.throws(
      () => new RaTlsClient({ connectionString: dsn, ...options }),
      (error: unknown) => isRaTlsError(error, 'BAD_CREDENTIALS'),
    );
    await assert.rejects(pgConnectOptsRaTls(dsn, options), (error: unknown) =>
      isRaTlsError(error, 'BAD_CREDENTIALS'),
    );
    assert.equal(accepted, 0);
  });

  test('given no guest agent, createPool and verifyServer fail with MISSING_DSTACK_SOCKET without connecting', async () => {
    const dsn = `postgres://teesql_read:${SECRET}@127.0.0.1:${port}/db`;
    const dstackEndpoint = '/nonexistent/pg-ra-tls/dstack.sock';
    assert.throws(
      () => createPool({ connectionString: dsn, verifier, dstackEndpoint }),
      (error: unknown) =>
        isRaTlsError(error, 'MISSING_DSTACK_SOCKET') && /dstackEndpoint/.test(error.message),
    );
    await assert.rejects(
      verifyServer(`127.0.0.1:${port}`, { verifier, dstackEndpoint }),
      (error: unknown) => isRaTlsError(error, 'MISSING_DSTACK_SOCKET'),
    );
    assert.equal(accepted, 0);
  });
});
