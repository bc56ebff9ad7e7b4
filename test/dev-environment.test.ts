/**
 * What `pg-ra-tls dev` prints works as printed: the verify line it suggests
 * passes against its stack, and clientOptionsFromEnv() turns its environment
 * into working clientOptions.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { CliIo } from '../src/cli/command.js';
import { DEV_VERIFY_COMMAND, devEnvironment } from '../src/cli/dev.js';
import { main } from '../src/cli/main.js';
import { isRaTlsError } from '../src/errors.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { clientOptionsFromEnv } from '../src/testing/client-options-from-env.js';
import { type LocalStack, startLocalStack } from '../src/testing/local-stack.js';

let stack: LocalStack;
let scratch: string;
let env: Record<string, string>;

before(async () => {
  stack = await startLocalStack({ gateway: false, logger: () => {} });
  scratch = await mkdtemp(join(tmpdir(), 'pg-ra-tls-dev-env-'));
  const trustRoot = join(scratch, 'trust-root.pem');
  await writeFile(trustRoot, stack.trustRoot.rootCaPem);
  env = devEnvironment(stack, trustRoot);
});

after(async () => {
  await stack?.stop();
  await rm(scratch, { recursive: true, force: true });
});

/** The shell's reading of the printed line: words, "$VAR" replaced from the environment. */
function expand(command: string, variables: Record<string, string>): string[] {
  return command
    .split(' ')
    .map((word) => word.replace(/^"\$([A-Z_]+)"$/, (_, name: string) => variables[name] ?? ''));
}

async function cli(argv: string[], variables: Record<string, string>) {
  let output = '';
  const io: CliIo = {
    stdout: (text) => {
      output += text;
    },
    stderr: (text) => {
      output += text;
    },
    env: variables,
    process,
  };
  return { code: await main(argv, io), output };
}

test('the verify line dev prints passes against its stack, with --root-ca a path or PEM text', async () => {
  const [npx, bin, ...args] = expand(DEV_VERIFY_COMMAND, env);
  assert.deepEqual([npx, bin], ['npx', 'pg-ra-tls']);
  const byPath = await cli(args, env);
  assert.equal(byPath.code, 0, byPath.output);
  // PEM text starts with dashes: it goes after "=" (--root-ca="$(cat root.pem)").
  const rootIndex = args.indexOf('--root-ca');
  const withText = [
    ...args.slice(0, rootIndex),
    `--root-ca=${stack.trustRoot.rootCaPem}`,
    ...args.slice(rootIndex + 2),
  ];
  const byText = await cli(withText, env);
  assert.equal(byText.code, 0, byText.output);
  // The same line pinned to another app is refused: the pins are really applied.
  const otherEnv = { ...env, EXPECTED_APP_ID: 'ab'.repeat(20) };
  const other = await cli(expand(DEV_VERIFY_COMMAND, otherEnv).slice(2), otherEnv);
  assert.equal(other.code, 1, other.output);
  assert.match(other.output, /APP_NOT_ALLOWED/);
});

test('the README names are printed, and clientOptionsFromEnv() connects with them', async () => {
  for (const name of [
    'DATABASE_URL',
    'EXPECTED_MRTD',
    'EXPECTED_APP_ID',
    'EXPECTED_COMPOSE_HASH',
  ]) {
    assert.ok(env[name], name);
  }
  const warnings: string[] = [];
  const options = clientOptionsFromEnv(env, (line) => warnings.push(line));
  assert.match(warnings.join('\n'), /custom root CA/, 'the test root is announced');
  const pool = createPool({ connectionString: env['DATABASE_URL']!, ...options });
  try {
    const { rows } = await pool.query<{ who: string }>('select current_user as who');
    assert.equal(rows[0]?.who, 'teesql_readwrite');
  } finally {
    await pool.end();
  }
  assert.throws(
    () => clientOptionsFromEnv({ ...env, EXPECTED_MRTD: '', PG_RA_TLS_EXPECTED_MRTD: '' }),
    (error: unknown) =>
      isRaTlsError(error, 'BAD_CONFIG') && /EXPECTED_MRTD is not set/.test(error.message),
  );
});
