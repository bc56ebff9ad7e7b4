/**
 * Import: what `import('pg-ra-tls')` costs a fresh process (issue 11), the
 * built package as users get it (resolved by its name through the exports
 * map: the bundle, dist/bundle/). For context, in the same interleaved
 * processes: tsc's unbundled output of the same sources (module by module),
 * and node-postgres alone, which pg-ra-tls loads only when the first client
 * or pool is made.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Row, Section } from '../lib/results.js';
import { median, quantile } from '../lib/stats.js';

/** How much to measure. */
export interface ImportSettings {
  /** Fresh processes per module, interleaved. */
  readonly processes: number;
}

const run = promisify(execFile);

const SCRIPT =
  'const cpu = process.cpuUsage(); const t = performance.now(); await import(process.argv[1]); ' +
  'const used = process.cpuUsage(cpu); ' +
  'process.stdout.write(JSON.stringify({ ms: performance.now() - t, cpuMs: (used.user + used.system) / 1000 }));';

interface Sample {
  readonly ms: number;
  readonly cpuMs: number;
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

async function sample(specifier: string): Promise<Sample> {
  // From the package's own directory, `pg-ra-tls` resolves to this package through its exports map.
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', SCRIPT, specifier], {
    timeout: 60_000,
    cwd: ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return JSON.parse(stdout) as Sample;
}

/** Measures `import('pg-ra-tls')` (the built package; `npm run bench` builds it), its unbundled build and `import('pg')`. */
export async function importSuite(
  settings: ImportSettings,
  progress: (line: string) => void,
): Promise<Section> {
  const unbundled = fileURLToPath(new URL('../../dist/src/index.js', import.meta.url));
  const modules = [
    {
      id: 'import.index',
      specifier: 'pg-ra-tls',
      label: "import('pg-ra-tls') in a fresh process (the built package: dist/bundle/index.js)",
    },
    {
      id: 'import.unbundled',
      specifier: unbundled,
      label: 'the same sources unbundled (tsc output, dist/src/index.js), for context',
    },
    { id: 'import.pg', specifier: 'pg', label: "import('pg') in a fresh process, for context" },
  ];
  const samples = new Map<string, Sample[]>(modules.map((module) => [module.id, []]));
  for (let i = 0; i < settings.processes; i++) {
    for (const module of modules) samples.get(module.id)!.push(await sample(module.specifier));
  }
  progress('import: measured');
  const rows: Row[] = modules.map((module) => {
    const taken = samples.get(module.id)!;
    const ms = taken.map((each) => each.ms);
    return {
      id: module.id,
      label: module.label,
      unit: 'ms',
      median: median(ms),
      spreadP25: quantile(ms, 0.25),
      spreadP75: quantile(ms, 0.75),
      samples: ms.length,
      note: `CPU time ${median(taken.map((each) => each.cpuMs)).toFixed(0)} ms`,
    };
  });
  return {
    id: 'import',
    title: 'Import',
    method:
      'A fresh plain Node process per sample imports the module and reports the time the ' +
      '`await import()` took (and the process CPU time it used, which a busy machine inflates ' +
      'less); the package, its unbundled build and pg alternate. Median and p25–p75 over the samples.',
    rows,
  };
}
