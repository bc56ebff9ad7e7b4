/**
 * Connection strings as pg users write them, wrong as often as right: the
 * password must never reach a message, `details`, a stack, a log line, a span
 * or the CLI's output, however the string is malformed. And what is well
 * formed reads as node-postgres reads it.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { parse as pgParse } from 'pg-connection-string';
import type { CliIo } from '../src/cli/command.js';
import { main } from '../src/cli/main.js';
import { resolveConnectionSettings } from '../src/config/connection-settings.js';
import { maskConnectionString, parseConnectionString } from '../src/config/connection-string.js';
import { verifyServer } from '../src/connection/verify-server.js';
import { isRaTlsError } from '../src/errors.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { NoopVerifier } from '../src/verification/noop-verifier.js';

const exporter = new InMemorySpanExporter();
const contextManager = new AsyncLocalStorageContextManager().enable();
context.setGlobalContextManager(contextManager);
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
trace.setGlobalTracerProvider(provider);
after(async () => {
  await provider.shutdown();
  contextManager.disable();
});

// Three pieces no message could contain by chance; every password below holds two.
const PIECES = ['Zq7Xv9Hj', 'Kp2Wm4Lc', 'Rt5Ny8Fb'] as const;
const [A, B] = PIECES;
const SEPARATORS = ['/', '#', '?', '@', ' ', '%zz', '&', ':', '\\', "'", '=', '%', ',', ']'];
const HOST = '127.0.0.1:1';

/** Malformed (or merely unusual) connection strings carrying a password. */
function malformedDsns(): string[] {
  const dsns: string[] = [];
  for (const separator of SEPARATORS) {
    const password = `${A}${separator}${B}`;
    dsns.push(
      `postgres://teesql_readwrite:${password}@${HOST}/app`,
      `postgresql://teesql_readwrite:${password}@${HOST}`,
      `postgres://teesql_readwrite:${password}@${HOST}/app?sslmode=require`,
      `postgres://${HOST}/app?user=teesql_read&password=${password}`,
      `postgres://teesql_readwrite:${password}@[::1]:1/app`,
      `host=127.0.0.1 port=1 user=teesql_read password=${password}`,
      `host=127.0.0.1 port=1 user=teesql_read password='${password}'`,
    );
  }
  for (const scheme of [
    'postgress://',
    'postgre://',
    'postgres:/',
    'postgres:',
    'postgres//',
    'pg://',
    'http://',
    'posgtres://',
    '',
  ]) {
    dsns.push(`${scheme}teesql_readwrite:${A}${B}@${HOST}/app`);
  }
  dsns.push(
    `host=127.0.0.1 user=teesql_read password='${A}\\'${B}'`,
    `host=127.0.0.1 user=teesql_read password='${A}\\' ${B}`,
    `host=127.0.0.1 user=teesql_read password='${A} ${B}`,
    `host=127.0.0.1 user=teesql_read password=${A}\\ ${B} port=1`,
    `host=127.0.0.1 user=teesql_read password=${A} ${B}=1`,
    `host=127.0.0.1 user=teesql_read password=${A} ${B}`,
    `password=${A}${B}`,
    // An empty value swallows the next pair (found by the dsn-secrets fuzz target).
    `host= password=${A}${B}`,
    `host=127.0.0.1 user= password=${A}${B}`,
    `host=127.0.0.1 dbname= pasword=${A}${B}`,
    `dbname=app host==aassword=${A}${B}`,
    `dbname=app host= p=aassword=${A}${B}`,
    `password = '${A}${B}' host=h,i`,
    `postgres://teesql_read:${A}${B}@h1:1,h2:2/app`,
    `postgres://teesql_read:${A}${B}@${HOST}/app?pasword=${A}${B}`,
    `postgres://teesql_read:${A}${B}@${HOST}/app?${A}${B}=1`,
    `postgres://teesql_read:${A}${B}@${HOST}:99999/app`,
    `postgres://teesql_read:${A}%${B}@${HOST}/app`,
    `${A}${B}`,
    `postgres://teesql_read:${A}${B}`,
    `postgres://teesql_read:${A}${B}@`,
    `postgres://teesql_read:${A}${B}@/app`,
    `postgres://teesql_read:${A}${B}@${HOST}/%zz`,
  );
  return dsns;
}

/** Every string an error exposes: message, stack, details and the same down the cause chain. */
function errorText(error: unknown, depth = 0): string {
  if (depth > 5 || error === undefined || error === null) return '';
  if (!(error instanceof Error)) return String(error);
  const details = isRaTlsError(error) ? JSON.stringify(error.details) : '';
  return [error.message, error.stack ?? '', details, errorText(error.cause, depth + 1)].join('\n');
}

function assertNoSecret(output: string, where: string, dsn: string): void {
  for (const piece of PIECES) {
    assert.ok(
      !output.includes(piece),
      `${where} leaked a password piece for ${JSON.stringify(dsn)}:\n${output}`,
    );
  }
}

describe('a password in a malformed connection string is never shown', () => {
  const dsns = malformedDsns();

  test('not by the parser, the settings, createPool or maskConnectionString', () => {
    let refused = 0;
    for (const dsn of dsns) {
      // A bare word could be a host name: masking leaves it, the parsers refuse it unechoed.
      if (dsn !== `${A}${B}`)
        assertNoSecret(maskConnectionString(dsn), 'maskConnectionString', dsn);
      for (const attempt of [
        () => parseConnectionString(dsn),
        () => resolveConnectionSettings({ connectionString: dsn }, {}),
        () => createPool({ connectionString: dsn, logger: () => {} }),
      ]) {
        try {
          attempt();
        } catch (error) {
          refused++;
          assert.ok(isRaTlsError(error), `a typed error for ${JSON.stringify(dsn)}: ${error}`);
          assertNoSecret(errorText(error), 'the error', dsn);
        }
      }
    }
    // Most of them are refused outright; the rest read as some other (valid) password.
    assert.ok(refused > dsns.length, `refusals: ${refused} of ${dsns.length * 3} attempts`);
  });

  test('not by verifyServer, its logger or its spans', async (t) => {
    const logs: string[] = [];
    const warn = t.mock.method(console, 'warn', (...args: unknown[]) => logs.push(args.join(' ')));
    const error = t.mock.method(console, 'error', (...args: unknown[]) =>
      logs.push(args.join(' ')),
    );
    exporter.reset();
    // A bare word is a host name to verifyServer (and so is shown): the others only.
    for (const dsn of dsns.filter((text) => text !== `${A}${B}`)) {
      await assert.rejects(
        verifyServer(dsn, {
          verifier: new NoopVerifier({ logger: (line: string) => logs.push(line) }),
          // Nothing listens there: a DSN that parses fails typed, at the agent or the dial.
          dstackEndpoint: 'http://127.0.0.1:1',
          logger: (line: string) => logs.push(line),
          connectTimeout: '2s',
        }),
        (thrown: unknown) => {
          assertNoSecret(errorText(thrown), 'verifyServer', dsn);
          return isRaTlsError(thrown);
        },
      );
    }
    for (const line of logs) assertNoSecret(line, 'a log line', '(any)');
    for (const span of exporter.getFinishedSpans()) {
      const text = JSON.stringify({
        name: span.name,
        attributes: span.attributes,
        events: span.events,
        status: span.status,
      });
      assertNoSecret(text, `span ${span.name}`, '(any)');
    }
    warn.mock.restore();
    error.mock.restore();
  });

  test('not by the CLI, even with --verbose', async () => {
    for (const dsn of dsns.filter((text, index) => index % 3 === 0 && text !== `${A}${B}`)) {
      let output = '';
      const io: CliIo = {
        stdout: (text) => {
          output += text;
        },
        stderr: (text) => {
          output += text;
        },
        env: {},
        process,
      };
      const code = await main(['verify', dsn, '--verbose', '--json', '--timeout', '5s'], io).catch(
        () => -1,
      );
      assert.notEqual(code, 0, `verify of ${JSON.stringify(dsn)} did not pass`);
      assertNoSecret(output, 'pg-ra-tls verify', dsn);
    }
  });
});

describe('connection strings read as node-postgres reads them', () => {
  const urls = [
    'postgres://teesql_read:secret@db.example.com:80/app',
    'postgres://teesql_read:secret@db.example.com:443/app',
    'postgres://teesql_read:secret@db.example.com/app',
    'postgresql://u:p%40ss%2Fw%3Fo%23rd@[2001:db8::1]:5433/app',
    'postgres://u:p@ss@host:5433/db',
    'postgres://u@host:5433',
    'postgres://u:p@host:5433/db?application_name=x&statement_timeout=1000',
    'postgres://host/db?user=u&password=p&port=7000',
  ];

  test('host, port, user, password and database agree with pg-connection-string', () => {
    for (const url of urls) {
      const ours = parseConnectionString(url);
      const theirs = pgParse(url);
      assert.equal(ours.host ?? '', theirs.host ?? '', `host of ${url}`);
      assert.equal(ours.port ?? '', String(theirs.port ?? ''), `port of ${url}`);
      assert.equal(ours.user ?? '', theirs.user ?? '', `user of ${url}`);
      assert.equal(ours.password ?? '', theirs.password ?? '', `password of ${url}`);
      assert.equal(ours.database ?? '', theirs.database ?? '', `database of ${url}`);
    }
  });

  test('port 80 stays port 80, and no port means the sidecar port 5433', () => {
    const options = { allowCustomRoles: true } as const;
    const at80 = resolveConnectionSettings(
      { connectionString: 'postgres://u:p@db.example.com:80/app', ...options },
      {},
    );
    assert.equal(at80.port, 80);
    const none = resolveConnectionSettings(
      { connectionString: 'postgres://u:p@db.example.com/app', ...options },
      {},
    );
    assert.equal(none.port, 5433);
  });

  test('PG* environment variables fill what the options and the string leave unset', () => {
    const env = {
      PGHOST: 'env-host',
      PGPORT: '6000',
      PGUSER: 'env-user',
      PGPASSWORD: 'env-password',
      PGDATABASE: 'env-db',
      PGAPPNAME: 'env-app',
      PGCONNECT_TIMEOUT: '3',
      PGSSLMODE: 'disable',
    };
    const fromEnv = resolveConnectionSettings({ allowCustomRoles: true }, env);
    assert.equal(fromEnv.host, 'env-host');
    assert.equal(fromEnv.port, 6000);
    assert.equal(fromEnv.user, 'env-user');
    assert.equal(fromEnv.password, 'env-password');
    assert.equal(fromEnv.database, 'env-db');
    assert.equal(fromEnv.session.application_name, 'env-app');
    assert.equal(fromEnv.connectTimeoutMs, 3000);
    const overridden = resolveConnectionSettings(
      {
        connectionString: 'postgres://u:p@string-host/string-db?application_name=s',
        config: { port: 7000 },
        allowCustomRoles: true,
      },
      env,
    );
    assert.equal(overridden.host, 'string-host');
    assert.equal(overridden.port, 7000);
    assert.equal(overridden.user, 'u');
    assert.equal(overridden.password, 'p');
    assert.equal(overridden.database, 'string-db');
    assert.equal(overridden.session.application_name, 's');
  });

  test('a misspelled parameter is refused with BAD_CONFIG and a suggestion', () => {
    for (const [dsn, suggestion] of [
      ['postgres://u:p@h/db?aplication_name=x', 'application_name'],
      ['postgres://u:p@h/db?statment_timeout=5', 'statement_timeout'],
      ['host=h user=u dbnme=db', 'dbname'],
      ['host=h user=u sslmod=require', 'sslmode'],
    ] as const) {
      assert.throws(
        () => resolveConnectionSettings({ connectionString: dsn, allowCustomRoles: true }, {}),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CONFIG') &&
          error.message.includes(`did you mean "${suggestion}"`) &&
          error.details['suggestion'] === suggestion,
        dsn,
      );
    }
    assert.throws(
      () =>
        resolveConnectionSettings(
          { connectionString: 'postgres://u:p@h/db?service=x', allowCustomRoles: true },
          {},
        ),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') && /"service" is not supported/.test(error.message),
    );
  });

  test('a misspelled scheme is named as such', () => {
    for (const scheme of ['postgress', 'postgre', 'postgresq', 'posgres']) {
      assert.throws(
        () => parseConnectionString(`${scheme}://u:p@h/db`),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CONFIG') && /scheme is misspelled/.test(error.message),
      );
    }
  });
});
