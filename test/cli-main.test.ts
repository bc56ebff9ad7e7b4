import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { CliIo } from '../src/cli/command.js';
import { main } from '../src/cli/main.js';

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
    env: {},
    process,
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

test('--version prints the version in package.json', async () => {
  const { version } = JSON.parse(
    readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
  ) as { version: string };
  for (const flag of ['--version', '-V']) {
    const result = await run([flag]);
    assert.equal(result.code, 0);
    assert.equal(result.stdout, `${version}\n`);
  }
  assert.match((await run(['--help'])).stdout, /--version/);
});

test('a misspelled flag or command gets a "did you mean"', async () => {
  const cases: [string[], RegExp][] = [
    [['verify', 'db.example:5433', '--mrdt', 'ab'], /unknown option --mrdt; did you mean --mrtd\?/],
    [['verify', 'db.example:5433', '--pccs-ulr', 'x'], /did you mean --pccs-url\?/],
    [['verify', 'db.example:5433', '--rootca', 'x'], /did you mean --root-ca\?/],
    [['dev', '--no-gatway'], /did you mean --no-gateway\?/],
    [['verfy', 'x'], /unknown command "verfy"; did you mean verify\?/],
  ];
  for (const [argv, expected] of cases) {
    const result = await run(argv);
    assert.equal(result.code, 2, argv.join(' '));
    assert.match(result.stderr, expected);
    assert.match(result.stderr, /BAD_CONFIG/);
  }
  // Nothing close: no guess.
  const far = await run(['verify', 'db.example:5433', '--zzzzzzzz']);
  assert.equal(far.code, 2);
  assert.doesNotMatch(far.stderr, /did you mean/);
});
