import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * The dependencies that made `import 'pg-ra-tls'` cost ~250 ms: none may load
 * before the package is used (issue 11; the figure itself is in benchmarks/).
 */
const HEAVY =
  /\/node_modules\/(pg|pg-[a-z-]+|@peculiar\/[^/]+|@phala\/[^/]+|@msgpack\/msgpack|@noble\/[^/]+|@opentelemetry\/api|elliptic|asn1\.js)\//;

/**
 * Records every module a fresh process loads: ESM (and CommonJS reached by
 * `import`) through a loader hook, CommonJS reached by `require` through the
 * require cache. The hook answers a sentinel module last, so once it is
 * reported every earlier load has been too.
 */
const RECORDER = `
import { createRequire, register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
const hook = \`
let port;
export function initialize(data) { port = data.port; }
export async function load(url, context, next) { port.postMessage(url); return next(url, context); }\`;
const { port1, port2 } = new MessageChannel();
const seen = [];
let sentinel;
const done = new Promise((resolve) => { sentinel = resolve; });
port1.on('message', (url) => { if (url.includes('pg-ra-tls-sentinel')) sentinel(); else seen.push(url); });
register('data:text/javascript,' + encodeURIComponent(hook), { data: { port: port2 }, transferList: [port2] });
globalThis.loadedModules = async () => {
  await import('data:text/javascript,export{}//pg-ra-tls-sentinel');
  await done;
  port1.close();
  return [...seen, ...Object.keys(createRequire(import.meta.url).cache)];
};
`;

/** Runs `body` (ESM, may await) after RECORDER in a fresh process under tsx; returns what it prints. */
async function inFreshProcess(body: string): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', `${RECORDER}\n${body}`],
    { cwd: root, env: { ...process.env, NODE_OPTIONS: '' }, timeout: 120_000 },
  );
  return stdout.trim();
}

function heavyIn(modules: readonly string[]): string[] {
  return [...new Set(modules.flatMap((url) => HEAVY.exec(url)?.[1] ?? []))].sort();
}

test("import 'pg-ra-tls' loads none of the heavy dependencies", async () => {
  const out = await inFreshProcess(`
    const entry = await import('./src/index.ts');
    if (typeof entry.createPool !== 'function') throw new Error('entry did not load');
    console.log(JSON.stringify(await globalThis.loadedModules()));
  `);
  const modules = JSON.parse(out) as string[];
  assert.ok(
    modules.some((url) => url.endsWith('/src/index.ts')),
    'the recorder saw the entry load',
  );
  assert.deepEqual(heavyIn(modules), []);
});

test('creating a pool loads pg at once and the verification parsers in the background', async () => {
  const out = await inFreshProcess(`
    import pg from 'pg';
    const { createPool } = await import('./src/index.ts');
    const { preloadDependencies } = await import('./src/util/lazy-require.ts');
    const pool = createPool({
      connectionString: 'postgres://teesql_read@127.0.0.1:1/db',
      allowCustomRoles: true,
      clientCertOverride: { key: 'unused', cert: 'unused' },
      logger: () => {},
    });
    const isPgPool = pool instanceof pg.Pool;
    await preloadDependencies();
    const modules = await globalThis.loadedModules();
    await pool.end();
    console.log(JSON.stringify({ isPgPool, modules }));
  `);
  const { isPgPool, modules } = JSON.parse(out) as { isPgPool: boolean; modules: string[] };
  assert.ok(isPgPool, 'a RaTlsPool is a pg.Pool');
  const loaded = heavyIn(modules);
  for (const name of [
    '@msgpack/msgpack',
    '@peculiar/asn1-schema',
    '@peculiar/asn1-x509',
    '@phala/dcap-qvl',
  ]) {
    assert.ok(loaded.includes(name), `${name} preloaded (loaded: ${loaded.join(', ')})`);
  }
  assert.ok(!loaded.includes('@noble/curves'), 'the cluster-only signature code is not preloaded');
});
