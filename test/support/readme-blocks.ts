/**
 * The README's ```ts blocks run for real (see test/readme.test.ts, which says
 * how): shared by readme.test.ts and readme-orms.test.ts, which split the
 * blocks so that each file stays within the per-file --test-timeout.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type LocalStack, startLocalStack } from '../../src/testing/local-stack.js';
import {
  type FencedBlock,
  fencedBlocks,
  importedSpecifiers,
  needsSetup,
  rewriteImports,
} from './readme.js';
import { PCCS_URL_VARIABLE, ROOT_CA_VARIABLE } from './readme-shims/stack-verifier.js';

export const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const SHIMS = join(ROOT, 'test', 'support', 'readme-shims');
export const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
export const blocks = fencedBlocks(README);
export const tsBlocks = blocks.filter((block) => block.language === 'ts');
export const setupBlock = tsBlocks[0];
/** Blocks type-checked only: ```ts prisma needs a generated Prisma client, which is not installed. */
const typeOnly = (block: FencedBlock) => block.tags.includes('prisma');
export const runnable = tsBlocks.slice(1).filter((block) => !typeOnly(block));

/** Which shim stands in for each package entry a snippet may import. */
export const SHIM_FOR: Readonly<Record<string, string>> = {
  'pg-ra-tls': 'index.ts',
  'pg-ra-tls/testing': 'testing.ts',
  'pg-ra-tls/kysely': 'kysely.ts',
  'pg-ra-tls/pg': 'pg.ts',
  'pg-ra-tls/drizzle': 'drizzle.ts',
  'pg-ra-tls/prisma': 'prisma.ts',
  'pg-ra-tls/postgres-js': 'postgres-js.ts',
  'pg-ra-tls/knex': 'knex.ts',
  'pg-ra-tls/typeorm': 'typeorm.ts',
  'pg-ra-tls/sequelize': 'sequelize.ts',
  'pg-ra-tls/pg-promise': 'pg-promise.ts',
  'pg-ra-tls/mikro-orm': 'mikro-orm.ts',
  'pg-ra-tls/slonik': 'slonik.ts',
  './generated/prisma/client.js': 'generated-prisma-client.ts',
};

/** A short name for a block in test titles and messages. */
export function describeBlock(block: FencedBlock): string {
  const entries = importedSpecifiers(block.code).filter((specifier) => specifier in SHIM_FOR);
  return `README.md:${block.line} (${[block.heading || 'top', ...entries].join(', ')})`;
}

// Each snippet is a child process mostly waiting on the stack: one by one, all of them in one
// file would outgrow the per-file --test-timeout, hence two files and some concurrency.
export function describeReadmeBlocks(
  title: string,
  which: (block: FencedBlock) => boolean,
  {
    typeCheck,
    concurrency,
  }: {
    readonly typeCheck: boolean;
    /** Children at once: the two README files may run side by side under `npm test`. */
    readonly concurrency: number;
  },
): void {
  describe(title, { concurrency }, () => {
    let stack: LocalStack;
    let workDir: string;
    let env: NodeJS.ProcessEnv;
    /** The snippet files, written once and shared by the run and type-check tests. */
    const files = new Map<FencedBlock, string>();

    /** A tsc diagnostic of a snippet file, pointed at the README line it comes from. */
    const inReadmeTerms = (diagnostic: string): string => {
      for (const [block, file] of files) {
        const path = relative(ROOT, file).split(sep).join('/');
        if (!diagnostic.startsWith(`${path}(`)) continue;
        const line = Number(/^[^(]+\((\d+),/.exec(diagnostic)?.[1]);
        const local = line - setupLines(block);
        const where =
          local >= 1 ? `README.md:${block.line + local}` : `README.md:${setupBlock?.line} (setup)`;
        return `${where} [${path}]${diagnostic.slice(diagnostic.indexOf(')') + 1)}`;
      }
      return diagnostic;
    };

    before(async () => {
      stack = await startLocalStack({ logger: () => {} });
      await mkdir(join(ROOT, '.tmp'), { recursive: true });
      // Under the repository (git- and biome-ignored .tmp/) so that node_modules resolve.
      workDir = await mkdtemp(join(ROOT, '.tmp', 'readme-'));
      const { NODE_TEST_CONTEXT: _runner, ...inherited } = process.env;
      env = {
        ...inherited,
        DATABASE_URL: stack.databaseUrl,
        EXPECTED_MRTD: stack.expected.mrtd,
        EXPECTED_RTMR1: stack.expected.rtmr1,
        EXPECTED_RTMR2: stack.expected.rtmr2,
        EXPECTED_KMS_ROOT: stack.expected.kmsRoot,
        EXPECTED_APP_ID: stack.expected.appId,
        DSTACK_SIMULATOR_ENDPOINT: stack.dstackEndpoint,
        [ROOT_CA_VARIABLE]: Buffer.from(stack.trustRoot.rootCaDer).toString('base64'),
        [PCCS_URL_VARIABLE]: stack.pccsUrl,
      };
      for (const block of tsBlocks.slice(1)) {
        const file = join(workDir, `readme-line-${block.line}.ts`);
        await writeFile(file, snippetSource(block, file));
        files.set(block, file);
      }
    });

    after(async () => {
      await stack?.stop();
      if (workDir !== undefined) {
        await rm(workDir, { recursive: true, force: true });
        // Only when no one else keeps files there.
        await rmdir(join(ROOT, '.tmp')).catch(() => {});
      }
    });

    for (const block of runnable.filter(which)) {
      test(`${describeBlock(block)} runs and prints what it shows`, async () => {
        const file = files.get(block)!;
        const result = await run(process.execPath, ['--import', 'tsx', file], env);
        assert.equal(result.exitCode, 0, `${describeBlock(block)} failed:\n${result.stderr}`);
        const checks = expectations(block.code, stack);
        assert.ok(
          checks.length > 0,
          `${describeBlock(block)}: teach expectations() what this block must print`,
        );
        for (const check of checks) {
          assert.ok(check.holds(result.stdout), `${check.what}; it printed:\n${result.stdout}`);
        }
        assert.doesNotMatch(result.stdout, /\bundefined\b/, 'every value it prints is there');
      });
    }

    if (typeCheck)
      test('every ts block type-checks under the project settings, ```ts prisma included', async () => {
        const tsconfig = join(workDir, 'tsconfig.json');
        await writeFile(
          tsconfig,
          JSON.stringify({
            extends: relative(workDir, join(ROOT, 'tsconfig.json')).split(sep).join('/'),
            include: [],
            files: [...files.values()].map((file) => relative(workDir, file).split(sep).join('/')),
          }),
        );
        const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
        const result = await run(process.execPath, [tsc, '-p', tsconfig, '--pretty', 'false'], env);
        // Only the snippets and shims are judged: other files may be mid-edit.
        const ours = [workDir, SHIMS].map((dir) => `${relative(ROOT, dir).split(sep).join('/')}/`);
        const errors = result.stdout
          .split('\n')
          .filter((line) => ours.some((prefix) => line.startsWith(prefix)))
          .map((line) => inReadmeTerms(line));
        assert.deepEqual(errors, [], 'type errors in README blocks');
        for (const block of tsBlocks.filter(typeOnly)) {
          assert.ok(files.has(block), `${describeBlock(block)} was among the files checked`);
        }
      });
  });
}

/**
 * The file a block runs as: its `pg-ra-tls…` imports pointed at the shims,
 * after the setup block when it reads `connectionString`/`options` without
 * defining them (the README's contract).
 */
function snippetSource(block: FencedBlock, file: string): string {
  const toShim = (specifier: string) => {
    const shim = SHIM_FOR[specifier];
    if (shim === undefined) return undefined;
    const path = relative(dirname(file), join(SHIMS, shim)).split(sep).join('/');
    return path.replace(/\.ts$/, '.js');
  };
  const prefix = setupLines(block) > 0 ? (setupBlock?.code ?? '') : '';
  return rewriteImports(`${prefix}${block.code}`, toShim);
}

/** How many lines of setup block precede `block` in its snippet file (0 when none). */
function setupLines(block: FencedBlock): number {
  if (setupBlock === undefined || !needsSetup(block.code)) return 0;
  return setupBlock.code.split('\n').length - 1;
}

/** Something a block's output must show. */
interface Expectation {
  readonly what: string;
  holds(stdout: string): boolean;
}

/**
 * What a block must print, from what its code asks for: each rule fires on a
 * pattern in the source, so a new block is judged without naming it, and a
 * block no rule recognises fails until one is added.
 */
function expectations(code: string, stack: LocalStack): Expectation[] {
  const found: Expectation[] = [];
  const prints = (what: string, text: string) =>
    found.push({ what: `it prints ${what} (${text})`, holds: (stdout) => stdout.includes(text) });
  if (/\bcurrent_user\b/.test(code)) prints('the teesql role it logged in as', 'teesql_readwrite');
  if (/\.mrtd\b/.test(code)) prints("the server's MRTD", stack.expected.mrtd.slice(0, 16));
  if (/\.mrtd\)?[,;]/.test(code)) prints("the server's whole MRTD", stack.expected.mrtd);
  if (/\.appId\b/.test(code)) prints("the server's app-id", stack.expected.appId);
  if (/\.tcbStatus\b/.test(code)) prints("the platform's TCB status", 'UpToDate');
  if (/\.fingerprint\b/.test(code)) {
    found.push({
      what: 'it prints a SHA-256 certificate fingerprint',
      holds: (stdout) => /\b[0-9a-f]{64}\b|\b(?:[0-9A-F]{2}:){31}[0-9A-F]{2}\b/.test(stdout),
    });
  }
  // `console.log(x); // what it prints`: the comment is a promise to the reader.
  for (const [, text] of code.matchAll(/console\.log\(.*\);\s*\/\/\s*(.+)$/gm)) {
    prints('what its comment says', text!.trim());
  }
  for (const [, value, name] of code.matchAll(/\bselect\s+(\d+)\s+as\s+(\w+)/gi)) {
    // A row prints as `{ ok: 1 }`, a column value alone as `1`.
    found.push({
      what: `it prints the value it selected (${name} = ${value})`,
      holds: (stdout) =>
        stdout.includes(`${name}: ${value}`) ||
        stdout.split('\n').some((line) => line.trim() === value),
    });
  }
  return found;
}

/** Runs a child to completion; never rejects on a non-zero exit, kills it after 30 s. */
function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ exitCode: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd: ROOT, env, timeout: 30_000, maxBuffer: 4 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const exitCode = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({
          exitCode,
          stdout,
          stderr: error?.killed ? `killed after 30 s\n${stderr}` : stderr,
        });
      },
    );
  });
}
