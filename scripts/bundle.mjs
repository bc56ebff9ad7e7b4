/**
 * The JavaScript users run: every entry point of the exports map, the bin and
 * the engine thread bundled from the TypeScript sources into one flat
 * directory, dist/bundle/ (`npm run build` runs tsc first, which type-checks
 * and writes the declarations the exports map names).
 *
 * Why: Node loads an ES module graph file by file (resolve, stat, read,
 * compile each); pg-ra-tls's ~70 modules cost a fresh process more than the
 * code in them (issue 11: `import('pg-ra-tls')` ≤ 60 ms).
 *
 * - Code splitting: what two entry points share lives in one chunk, so every
 *   subpath sees the same classes (`instanceof RaTlsError`) and the same
 *   process-wide caches.
 * - Flat: chunks sit beside the entry points, so the engine thread's URL
 *   (`./engine-thread.js` next to the module that starts it) resolves from
 *   whichever file that code landed in.
 * - Dependencies stay external (`import 'pg'` resolves from the user's
 *   node_modules as before) and dynamic imports stay lazy (own chunks).
 * - Names are kept (`keepNames`): error classes and messages read as in the sources.
 * - Source maps point at the TypeScript sources and inline them.
 */
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/bundle`;

const integrations = [
  'kysely',
  'pg',
  'drizzle',
  'prisma',
  'postgres-js',
  'knex',
  'typeorm',
  'sequelize',
  'pg-promise',
  'mikro-orm',
  'slonik',
];

/** Output name (dist/bundle/<name>.js) → source. */
export const ENTRY_POINTS = {
  index: 'src/index.ts',
  testing: 'src/testing/index.ts',
  ...Object.fromEntries(integrations.map((name) => [name, `integrations/${name}/index.ts`])),
  'pg-ra-tls': 'bin/pg-ra-tls.ts',
  // Started by src/verification/engines/engine-worker.ts as `./engine-thread.js`.
  'engine-thread': 'src/verification/engines/engine-thread.ts',
};

await rm(outdir, { recursive: true, force: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: ENTRY_POINTS,
  outdir,
  entryNames: '[name]',
  chunkNames: 'chunk-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  keepNames: true,
  sourcemap: 'linked',
  sourcesContent: true,
  tsconfig: 'tsconfig.build.json',
  logLevel: 'warning',
  metafile: true,
});
if (result.errors.length > 0 || result.warnings.length > 0) {
  throw new Error('the bundle has errors or warnings (printed above)');
}
