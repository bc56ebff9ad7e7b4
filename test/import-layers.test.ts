/**
 * The folders of src/ read in the order data flows (README, Development): each
 * imports only the folders before it, and no module imports itself back
 * through others. Read from the sources, so a new import that breaks the
 * order fails here, not in a reviewer's head.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const src = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** Lower layers first; `index` (the public entry) may import everything. */
const LAYERS = [
  'errors',
  'util',
  'config',
  'identity',
  'dial',
  'evidence',
  'verification',
  'policy',
  'attest',
  'telemetry',
  'connection',
  'cluster',
  'pool',
  'testing',
  'cli',
  'index',
] as const;

const IMPORT = /(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]/g;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Relative imports of each module inside src/, as paths relative to src/. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(src)) {
    const targets = [...readFileSync(file, 'utf8').matchAll(IMPORT)]
      .map((match) => normalize(join(dirname(file), match[1]!)).replace(/\.js$/, '.ts'))
      .filter((target) => target.startsWith(src))
      .map((target) => relative(src, target));
    graph.set(relative(src, file), targets);
  }
  return graph;
}

const layerOf = (module: string) => module.split('/')[0]!.replace(/\.ts$/, '');

test('every folder of src/ imports only the folders before it', () => {
  const upward: string[] = [];
  for (const [module, targets] of importGraph()) {
    const from = LAYERS.indexOf(layerOf(module) as (typeof LAYERS)[number]);
    assert.ok(from >= 0, `${module}: its folder is not in LAYERS; add it where it belongs`);
    for (const target of targets) {
      const to = LAYERS.indexOf(layerOf(target) as (typeof LAYERS)[number]);
      if (to > from) upward.push(`${module} -> ${target}`);
    }
  }
  assert.deepEqual(upward, []);
});

test('no module of src/ imports itself back through others', () => {
  const graph = importGraph();
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const path: string[] = [];
  const visit = (module: string) => {
    state.set(module, 'open');
    path.push(module);
    for (const target of graph.get(module) ?? []) {
      if (state.get(target) === 'open') {
        cycles.push([...path.slice(path.indexOf(target)), target].join(' -> '));
      } else if (!state.has(target)) {
        visit(target);
      }
    }
    path.pop();
    state.set(module, 'done');
  };
  for (const module of graph.keys()) if (!state.has(module)) visit(module);
  assert.deepEqual(cycles, []);
});
