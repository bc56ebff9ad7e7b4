import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const READY = '# pg-ra-tls dev: running';

interface Run {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs the CLI from source, as `pg-ra-tls <args>`. */
function cli(args: readonly string[]): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/pg-ra-tls.ts', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = {
    child,
    stdout: '',
    stderr: '',
    exited: once(child, 'exit').then(([code, signal]) => ({
      code: code as number | null,
      signal: signal as NodeJS.Signals | null,
    })),
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    run.stdout += chunk.toString('utf8');
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    run.stderr += chunk.toString('utf8');
  });
  return run;
}

/** Resolves once the environment has been printed; rejects if the CLI exits first. */
async function ready(run: Run): Promise<Record<string, string>> {
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (!run.stdout.includes(READY)) return;
      run.child.stdout!.off('data', check);
      resolve();
    };
    run.child.stdout!.on('data', check);
    run.exited.then(({ code }) =>
      reject(new Error(`the CLI exited (${code}) early:\n${run.stderr}`)),
    );
    check();
  });
  const env: Record<string, string> = {};
  for (const match of run.stdout.matchAll(/^export ([A-Z_]+)='([^']*)'$/gm)) {
    env[match[1]!] = match[2]!;
  }
  return env;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('pg-ra-tls dev prints a working environment and shuts down cleanly on SIGINT', async () => {
  const scratch = await mkdtemp(join(tmpdir(), 'pg-ra-tls-cli-test-'));
  const envFile = join(scratch, 'dev.env');
  const run = cli(['dev', '--write-env', envFile]);
  try {
    const env = await ready(run);
    assert.match(
      env['DATABASE_URL'] ?? '',
      /^postgres:\/\/teesql_readwrite:[0-9a-f]{64}@127\.0\.0\.1:\d+\/teesql$/,
    );
    assert.match(
      env['PG_RA_TLS_GATEWAY_SERVERNAME'] ?? '',
      /^[0-9a-f]{40}-5433s\.dstack\.localhost$/,
    );
    assert.equal(statSync(envFile).mode & 0o777, 0o600);
    assert.match(await readFile(envFile, 'utf8'), /^DATABASE_URL="postgres:\/\//m);

    // Given only what was printed, an app connects through attestation.
    const rootPem = await readFile(env['PG_RA_TLS_TRUST_ROOT']!, 'utf8');
    const pool = createPool({
      connectionString: env['DATABASE_URL']!,
      dstackEndpoint: env['DSTACK_SIMULATOR_ENDPOINT']!,
      verifier: new DcapVerifier({
        engine: 'js',
        rootCa: new Uint8Array(new X509Certificate(rootPem).raw),
        pccsUrl: env['PG_RA_TLS_PCCS_URL']!,
        logger: () => {},
      }),
      policy: {
        allowedMrtds: [env['PG_RA_TLS_EXPECTED_MRTD']!],
        allowedAppIds: [env['PG_RA_TLS_EXPECTED_APP_ID']!],
        allowedComposeHashes: [env['PG_RA_TLS_EXPECTED_COMPOSE_HASH']!],
      },
    });
    try {
      const { rows } = await pool.query('SELECT current_user AS who');
      assert.deepEqual(rows, [{ who: 'teesql_readwrite' }]);
    } finally {
      await pool.end();
    }

    const postgres = /Postgres pid (\d+), data directory (\S+)/.exec(run.stderr);
    assert.ok(postgres !== null, run.stderr);
    const pid = Number(postgres[1]);
    const dataDirectory = postgres[2]!;
    assert.ok(processExists(pid));

    run.child.kill('SIGINT');
    const { code, signal } = await run.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, run.stderr);
    assert.match(run.stderr, /SIGINT: stopping\.\.\.\npg-ra-tls dev: stopped\n$/);
    assert.ok(!processExists(pid), 'Postgres is gone');
    assert.ok(!existsSync(dataDirectory), 'its data directory is gone');
    assert.ok(!existsSync(dirname(env['PG_RA_TLS_TRUST_ROOT']!)), 'the trust root dir is gone');
    assert.ok(!existsSync(envFile), 'the env file is gone');
  } finally {
    if (run.child.exitCode === null && run.child.signalCode === null) {
      run.child.kill('SIGKILL');
      await run.exited;
    }
    await rm(scratch, { recursive: true, force: true });
  }
});

test('a command-line mistake is one line with its code and exit status 2', async () => {
  const run = cli(['dev', '--tcb-status', 'Great']);
  const { code } = await run.exited;
  assert.equal(code, 2);
  assert.equal(run.stdout, '');
  assert.match(run.stderr, /^pg-ra-tls: BAD_CONFIG: --tcb-status must be one of UpToDate, .*\n$/);
});

test('an unknown command points to --help', async () => {
  const run = cli(['deploy']);
  const { code } = await run.exited;
  assert.equal(code, 2);
  assert.match(
    run.stderr,
    /unknown command "deploy"; the commands are: verify, demo, dev \(see pg-ra-tls --help\)/,
  );
});
