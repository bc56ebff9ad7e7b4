import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

/** Imports `specifier` by the package's own name from the built dist (as a user would) in a fresh process. */
async function importInFreshProcess(script: string): Promise<string> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return stdout.trim();
}

/**
 * These tests check what users install, so a missing build is a failure, not a
 * skip: a silent skip would let a broken exports map through any run without dist/.
 */
function assertBuilt(): void {
  assert.ok(
    existsSync(new URL('../dist/src/index.js', import.meta.url)),
    'dist/ is not built: run `npm run build` first (`npm test` does)',
  );
}

test('every subpath of the exports map loads from dist by the package name', async () => {
  assertBuilt();
  const subpaths = {
    'pg-ra-tls': ['createPool', 'verifyServer', 'DcapVerifier', 'RaTlsError'],
    'pg-ra-tls/testing': ['startLocalStack', 'createTestAuthority', 'createDstackIssuer'],
    'pg-ra-tls/kysely': ['raTlsDialect'],
    'pg-ra-tls/pg': ['createPool', 'createClient'],
    'pg-ra-tls/drizzle': ['drizzle', 'createPool'],
    'pg-ra-tls/prisma': ['prismaAdapter'],
    'pg-ra-tls/postgres-js': ['postgresOptions'],
    'pg-ra-tls/knex': ['knex', 'knexConfig', 'attestedPool'],
    'pg-ra-tls/typeorm': ['typeormOptions', 'attestedPool'],
    'pg-ra-tls/sequelize': ['sequelizeOptions'],
    'pg-ra-tls/pg-promise': ['usePgRaTls', 'attestedPool'],
    'pg-ra-tls/mikro-orm': ['mikroOrmOptions'],
    'pg-ra-tls/slonik': ['createRaTlsDriverFactory'],
  };
  for (const [specifier, names] of Object.entries(subpaths)) {
    const out = await importInFreshProcess(
      `const m = await import(${JSON.stringify(specifier)}); console.log(JSON.stringify(Object.keys(m)));`,
    );
    const exported = JSON.parse(out) as string[];
    for (const name of names) assert.ok(exported.includes(name), `${specifier} exports ${name}`);
  }
});

test('the runtime entry imposes no global polyfill on the user’s process', async () => {
  assertBuilt();
  // @peculiar/x509 needs reflect-metadata; only pg-ra-tls/testing may load it.
  const out = await importInFreshProcess(
    "await import('pg-ra-tls'); await import('pg-ra-tls/kysely'); await import('pg-ra-tls/typeorm'); " +
      'console.log(typeof Reflect.getMetadata);',
  );
  assert.equal(out, 'undefined');
});
