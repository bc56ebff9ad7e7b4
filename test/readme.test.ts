/**
 * The README cannot rot: its commands, error table and every ```ts block are
 * checked against the code, and the blocks run for real against one local
 * stack, each in its own `node --import tsx` child with the environment a user
 * would have (DATABASE_URL, EXPECTED_MRTD, EXPECTED_APP_ID,
 * DSTACK_SIMULATOR_ENDPOINT).
 *
 * The snippets are production code, and production's default verifier trusts
 * only Intel's root, which no quote made here can chain to (docs/protocol.md §8).
 * So, without changing a snippet's text, its `pg-ra-tls…` imports are pointed
 * at shims (test/support/readme-shims/) that re-export the real entries and
 * only default `verifier` to the stack's test-root verifier when the snippet
 * gives none: the root of trust is the one thing swapped. Binding, RTMR3
 * replay, policy, the guest agent's client certificate and the sidecar all
 * run as in production.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ErrorCodes } from '../src/errors.js';
import {
  errorTableRows,
  importedSpecifiers,
  needsSetup,
  SETUP_NAMES,
  shellCommands,
} from './support/readme.js';
import {
  blocks,
  describeBlock,
  describeReadmeBlocks,
  README,
  ROOT,
  runnable,
  SHIM_FOR,
  setupBlock,
  tsBlocks,
} from './support/readme-blocks.js';

test('the README opens with exactly the two commands a new user types', () => {
  const first = blocks.find((block) => block.language === 'sh');
  assert.ok(first !== undefined, 'the README has a ```sh block');
  assert.equal(first, blocks[0], 'the commands are the first code block');
  assert.deepEqual(shellCommands(first.code), [
    'npm ci && npm run demo',
    'npm ci && npm test && npm run test:node-versions',
  ]);
});

test('CI runs exactly the README test command, and package.json has both scripts', () => {
  const ci = readFileSync(join(ROOT, '.ci', 'run'), 'utf8');
  const commands = shellCommands(ci).filter((line) => !/^(set|cd)\s/.test(line));
  assert.deepEqual(
    commands,
    ['npm ci && npm test && npm run test:node-versions'],
    '.ci/run runs nothing else',
  );
  const { scripts } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
    scripts?: Record<string, unknown>;
  };
  for (const name of ['demo', 'test', 'test:node-versions']) {
    const script = scripts?.[name];
    assert.ok(
      typeof script === 'string' && script.length > 0,
      `package.json has a "${name}" script`,
    );
  }
});

test('the error table names every error code once, and no code that does not exist', () => {
  const named = errorTableRows(README).flat();
  const known = Object.keys(ErrorCodes);
  assert.deepEqual(
    known.filter((code) => !named.includes(code)),
    [],
    'codes missing from the README error table',
  );
  assert.deepEqual(
    named.filter((code) => !known.includes(code)),
    [],
    'README rows naming codes that ErrorCodes does not have',
  );
  assert.deepEqual(
    named.filter((code, index) => named.indexOf(code) !== index),
    [],
    'codes listed twice',
  );
});

test('the first ts block sets up connectionString and options from the environment', () => {
  assert.ok(setupBlock !== undefined, 'the README has ```ts blocks');
  for (const name of SETUP_NAMES) {
    assert.match(setupBlock.code, new RegExp(`\\bconst\\s+${name}\\b`), `it defines ${name}`);
  }
  for (const variable of ['DATABASE_URL', 'EXPECTED_MRTD', 'EXPECTED_APP_ID']) {
    assert.match(setupBlock.code, new RegExp(`process\\.env\\.${variable}\\b`));
  }
  assert.ok(
    runnable.some((block) => needsSetup(block.code)),
    'other blocks build on it',
  );
});

test('only blocks that read connectionString or options as variables get the setup block', () => {
  assert.equal(needsSetup('verifyServer(connectionString, options);'), true);
  assert.equal(needsSetup('createPool({ connectionString, ...options });'), true);
  assert.equal(
    needsSetup('createPool({ connectionString: stack.databaseUrl, ...stack.clientOptions });'),
    false,
    'a property key and a member are not the setup variables',
  );
  assert.equal(
    needsSetup('const connectionString = url;\nconst options = {};\nf(options);'),
    false,
  );
});

test('every pg-ra-tls import in a ts block has a shim', () => {
  const unshimmed = tsBlocks.flatMap((block) =>
    importedSpecifiers(block.code)
      .filter((specifier) => /^pg-ra-tls(\/|$)|^\.\.?\//.test(specifier))
      .filter((specifier) => SHIM_FOR[specifier] === undefined)
      .map((specifier) => `${describeBlock(block)} imports ${specifier}`),
  );
  assert.deepEqual(unshimmed, [], 'add a shim in test/support/readme-shims and to SHIM_FOR');
});

// The ORM section's blocks run in test/readme-orms.test.ts: each file gets its own timeout.
describeReadmeBlocks(
  'every ts block of the README runs against the local stack',
  (block) => !isOrmSection(block.heading),
  { typeCheck: true, concurrency: 2 },
);

/** The README section whose blocks readme-orms.test.ts runs. */
function isOrmSection(heading: string): boolean {
  return heading.startsWith('Knex, TypeORM');
}
