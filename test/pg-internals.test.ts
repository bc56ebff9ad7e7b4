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
});
