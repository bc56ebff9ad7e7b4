/**
 * Comments cite our protocol notes as `docs/<file>.md §n` (or `§n–m`). Every
 * citation must resolve to a document in the repository and a section of it,
 * so a reader can always follow one.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';

const root = new URL('..', import.meta.url).pathname;
const SCANNED = ['src', 'integrations', 'test', 'benchmarks', 'bin', 'docs', 'README.md'];
const CITATION = /\b(docs\/[\w.-]+\.md) §(\d+)(?:[–-](\d+))?/g;
// A design note outside the repository (the old name of docs/protocol.md).
const DANGLING = new RegExp(`\\b${'PROTOCOL'}\\.md\\b`);

function files(path: string): string[] {
  const full = join(root, path);
  if (!existsSync(full)) return [];
  if (!statSync(full).isDirectory()) return [full];
  return readdirSync(full, { withFileTypes: true }).flatMap((entry) =>
    entry.name === 'node_modules' || entry.name === 'fixtures' ? [] : files(join(path, entry.name)),
  );
}

function sectionsOf(doc: string): Set<number> {
  const text = readFileSync(join(root, doc), 'utf8');
  return new Set([...text.matchAll(/^## §(\d+) /gm)].map((match) => Number(match[1])));
}

describe('citations of our protocol notes', () => {
  const sources = SCANNED.flatMap(files).filter((file) => /\.(ts|md|js)$/.test(file));

  test('every cited document and section exists', () => {
    const missing: string[] = [];
    let count = 0;
    for (const file of sources) {
      for (const match of readFileSync(file, 'utf8').matchAll(CITATION)) {
        count++;
        const [, doc, from, to] = match;
        if (!existsSync(join(root, doc!))) {
          missing.push(`${relative(root, file)}: ${match[0]} (no such document)`);
          continue;
        }
        const sections = sectionsOf(doc!);
        for (let n = Number(from); n <= Number(to ?? from); n++) {
          if (!sections.has(n)) missing.push(`${relative(root, file)}: ${match[0]} (no §${n})`);
        }
      }
    }
    assert.deepEqual(missing, []);
    assert.ok(count > 100, `the scan found the citations (${count})`);
  });

  test('nothing cites a document outside the repository', () => {
    const dangling = sources
      .filter((file) => !file.endsWith('docs-citations.test.ts'))
      .filter((file) => DANGLING.test(readFileSync(file, 'utf8')))
      .map((file) => relative(root, file));
    assert.deepEqual(dangling, []);
  });

  test('a citation of a section that does not exist is caught', () => {
    const sections = sectionsOf('docs/protocol.md');
    assert.ok(sections.has(1) && sections.has(8));
    assert.ok(!sections.has(9));
  });
});
