import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
mkdirSync(join(root, '.tmp'), { recursive: true });

/** Imports `specifier` by the package's own name from the built dist (as a user would) in a fresh process. */
async function importInFreshProcess(script: string): Promise<string> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return stdout.trim();
}

/** Runs `script` as a module file inside the package (so `pg-ra-tls` resolves to it) in a fresh process. */
async function runModuleInFreshProcess(script: string): Promise<string> {
  const directory = await mkdtemp(join(root, '.tmp', 'package-exports-'));
  try {
    const file = join(directory, 'main.mjs');
    await writeFile(file, script);
    const { stdout } = await run(process.execPath, [file], {
      cwd: root,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    return stdout.trim();
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
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

test('every subpath shares one copy of the core: its errors are the main entry’s RaTlsError', async () => {
  assertBuilt();
  // Each subpath rejects an unknown option before any I/O; the error's class
  // must be the very class `pg-ra-tls` exports (one copy of the shared code,
  // hence of its process-wide caches), not merely pass `instanceof`.
  const calls = {
    'pg-ra-tls/pg': 'createPool',
    'pg-ra-tls/kysely': 'raTlsDialect',
    'pg-ra-tls/drizzle': 'createPool',
    'pg-ra-tls/prisma': 'prismaAdapter',
    'pg-ra-tls/postgres-js': 'postgresOptions',
    'pg-ra-tls/knex': 'knexConfig',
    'pg-ra-tls/typeorm': 'typeormOptions',
    'pg-ra-tls/sequelize': 'sequelizeOptions',
    'pg-ra-tls/mikro-orm': 'mikroOrmOptions',
  };
  const out = await importInFreshProcess(`
    const main = await import('pg-ra-tls');
    const pgEntry = await import('pg-ra-tls/pg');
    const result = { pgReExports: pgEntry.RaTlsError === main.RaTlsError && pgEntry.RaTlsPool === main.RaTlsPool };
    for (const [specifier, name] of Object.entries(${JSON.stringify(calls)})) {
      const entry = await import(specifier);
      try {
        await entry[name]({ notAnOption: true });
        result[specifier] = 'accepted';
      } catch (error) {
        result[specifier] = error.constructor === main.RaTlsError ? error.code : 'another class: ' + error.constructor.name;
      }
    }
    console.log(JSON.stringify(result));
  `);
  const result = JSON.parse(out) as Record<string, unknown>;
  assert.equal(result['pgReExports'], true, 'pg-ra-tls/pg re-exports the main entry’s classes');
  for (const specifier of Object.keys(calls)) {
    assert.equal(result[specifier], 'BAD_CONFIG', specifier);
  }
});

test('the built package starts its engine threads and verifies a real quote', async () => {
  assertBuilt();
  const fixture = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
  // Both ways a user runs a module: a file, and `node --input-type=module -e`, whose
  // --input-type the engine threads inherit unless the package drops it.
  const script = `
    import { readFileSync } from 'node:fs';
    const { DcapVerifier, RaTlsError } = await import('pg-ra-tls');
    const fixture = ${JSON.stringify(fixture.href)};
    const quote = new Uint8Array(readFileSync(new URL('quote.bin', fixture)));
    const collateral = JSON.parse(readFileSync(new URL('collateral.json', fixture), 'utf8'));
    const now = new Date(1751328000 * 1000);
    const verifier = new DcapVerifier({ collateral });
    const report = await verifier.verify(quote, { now });
    const forged = quote.slice();
    forged[700] ^= 1;
    const refused = await verifier.verify(forged, { now }).then(
      () => 'accepted',
      (error) => (error instanceof RaTlsError ? error.code : String(error)),
    );
    console.log(JSON.stringify({ verifier: report.verifier, tcbStatus: report.tcbStatus, refused }));
  `;
  for (const out of [await runModuleInFreshProcess(script), await importInFreshProcess(script)]) {
    assert.deepEqual(JSON.parse(out), {
      verifier: 'dcap:both',
      tcbStatus: 'UpToDate',
      refused: 'QUOTE_INVALID',
    });
  }
});
