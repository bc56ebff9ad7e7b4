/**
 * Import: what `import('pg-ra-tls')` costs a fresh process (issue 11), the
 * built package as users get it. node-postgres alone is measured alongside
 * for context: pg-ra-tls loads it only when the first client or pool is made.
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

async function sample(specifier: string): Promise<Sample> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', SCRIPT, specifier], {
    timeout: 60_000,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return JSON.parse(stdout) as Sample;
}

/** Measures `import('pg-ra-tls')` (dist/src/index.js; `npm run bench` builds it) and `import('pg')`. */
export async function importSuite(
  settings: ImportSettings,
  progress: (line: string) => void,
): Promise<Section> {
  const entry = fileURLToPath(new URL('../../dist/src/index.js', import.meta.url));
  const modules = [
    {
      id: 'import.index',
      specifier: entry,
      label: "import('pg-ra-tls') in a fresh process (dist/src/index.js)",
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
      'less); pg-ra-tls and pg alternate. Median and p25–p75 over the samples.',
    rows,
  };
}
