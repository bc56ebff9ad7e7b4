import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Pids whose command line mentions `text` (Linux /proc); empty elsewhere. */
async function processesMentioning(text: string): Promise<number[]> {
  if (!existsSync('/proc')) return [];
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (commandLine.includes(text)) found.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

/**
 * What a run left in `scratch`, beyond tsx's compile cache (tsx-<uid>) and the
 * initdb template that Postgres start-ups share on purpose (pg-ra-tls-initdb-*).
 */
async function leftovers(scratch: string): Promise<string[]> {
  return (await readdir(scratch)).filter(
    (name) => !/^tsx-\d+$/.test(name) && !name.startsWith('pg-ra-tls-initdb-'),
  );
}

/** Runs `pg-ra-tls demo` with TMPDIR and the Postgres data root in a private scratch dir. */
function spawnDemo(scratch: string) {
  return spawn(process.execPath, ['--import', 'tsx', 'bin/pg-ra-tls.ts', 'demo'], {
    cwd: root,
    env: { ...process.env, TMPDIR: scratch, PG_RA_TLS_DATA_DIR: scratch },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * Runs the demo in a fresh scratch dir (TMPDIR and Postgres data; traversable by
 * the OS user `postgres` when we are root), hands its stdout so far to
 * `onStdout` as it grows, and returns the outcome; `check` runs before the
 * scratch dir is removed.
 */
async function runDemo(
  check: (outcome: {
    code: number | null;
    stdout: string;
    stderr: string;
    scratch: string;
  }) => Promise<void>,
  onStdout: (stdout: string, child: ReturnType<typeof spawnDemo>) => void = () => {},
): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'pg-ra-tls-cli-demo-'));
  await chmod(scratch, 0o755);
  try {
    const child = spawnDemo(scratch);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      onStdout(stdout, child);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    const [code] = (await once(child, 'close')) as [number | null];
    await check({ code, stdout, stderr, scratch });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

test('pg-ra-tls demo runs end to end, exits 0 and leaves no process or temp dir behind', async () => {
  await runDemo(async ({ code, stdout, stderr, scratch }) => {
    assert.equal(code, 0, `stdout:\n${stdout}\nstderr:\n${stderr}`);
    assert.match(stdout, /TEST root of trust, not Intel's/);
    assert.match(stdout, /connecting with Kysely through the gateway \(SNI [0-9a-f]{40}-5433s\./);
    assert.match(stdout, /MRTD +[0-9a-f]{96}\n/);
    assert.match(stdout, /app-id +[0-9a-f]{40}\n/);
    assert.match(stdout, /compose-hash +[0-9a-f]{64}\n/);
    assert.match(stdout, /fingerprint +sha256 [0-9a-f]{64}\n/);
    assert.match(stdout, /TCB status +UpToDate/);
    assert.match(stdout, /inserted 3 rows, read back 3: "attested", "before", "the first byte"/);
    assert.match(
      stdout,
      /INSERT refused by Postgres: 42501 permission denied for table demo_notes/,
    );
    assert.match(
      stdout,
      /unpinned image .*: refused before any SQL with MRTD_NOT_ALLOWED; bytes forwarded to Postgres: 0\n/,
    );
    assert.match(
      stdout,
      /foreign kernel forging the app events: refused before any SQL with MEASUREMENT_NOT_ALLOWED; bytes forwarded to Postgres: 0\n/,
    );
    assert.match(stdout, /KMS root +spki sha256 [0-9a-f]{16}… \(pinned\)/);
    assert.match(
      stdout,
      /replayed with another key: refused before any SQL with PUBKEY_MISMATCH; bytes forwarded to Postgres: 0\n/,
    );
    // The failover act: the pool follows the new leader, no acknowledged write is lost,
    // and every error callers saw during the switch carried a code.
    assert.match(
      stdout,
      /\[6\/7\] a replicated cluster fails over: leader stopped, standby promoted, manifest republished/,
    );
    assert.match(stdout, /cluster up in .*: a leader and a synchronous hot standby/);
    assert.match(
      stdout,
      /4 writers, one pool following the manifest: 20 rows on leader [0-9a-f]{12}…/,
    );
    assert.match(
      stdout,
      /manifest epoch 2 published; the pool attested [0-9a-f]{12}… and wrote there \d+ ms later\n/,
    );
    assert.match(
      stdout,
      /all (\d+) acknowledged writes are on the new leader; \d+ failed during the switch, each typed: (none|[A-Z0-9_]+ ×\d+(, [A-Z0-9_]+ ×\d+)*)\n/,
    );
    assert.match(stdout, /^done in /m);
    const lines = stdout.trimEnd().split('\n');
    assert.ok(lines.length <= 32, `compact output, got ${lines.length} lines`);
    assert.doesNotMatch(stderr, /error/i);

    const left = await leftovers(scratch);
    assert.deepEqual(left, [], 'every temp dir was removed');
    assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
  });
});

test('Ctrl-C during the demo stops the stack, exits 130 and leaves nothing behind', async () => {
  await runDemo(
    async ({ code, stdout, stderr, scratch }) => {
      assert.equal(code, 130, `stdout:\n${stdout}\nstderr:\n${stderr}`);
      assert.match(stderr, /pg-ra-tls demo: SIGINT: stopped; temporary files removed/);
      assert.doesNotMatch(stdout, /^done in /m);
      assert.deepEqual(await leftovers(scratch), [], 'every temp dir was removed');
      assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
    },
    (stdout, child) => {
      // Interrupt once the stack is up and the first connection is being made.
      if (stdout.includes('[2/7]') && child.exitCode === null) child.kill('SIGINT');
    },
  );
});

test('Ctrl-C during the failover act stops the cluster too, exits 130 and leaves nothing behind', async () => {
  await runDemo(
    async ({ code, stdout, stderr, scratch }) => {
      assert.equal(code, 130, `stdout:\n${stdout}\nstderr:\n${stderr}`);
      assert.match(stdout, /cluster up in /);
      assert.match(stderr, /pg-ra-tls demo: SIGINT: stopped; temporary files removed/);
      assert.doesNotMatch(stdout, /^done in /m);
      assert.deepEqual(await leftovers(scratch), [], 'every temp dir was removed');
      assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
    },
    (stdout, child) => {
      // Interrupt once the cluster (a primary and a standby) is up.
      if (stdout.includes('cluster up in ') && child.exitCode === null) child.kill('SIGINT');
    },
  );
});

test('a closed stdout (pg-ra-tls demo | head) stops the stack and leaves nothing behind', async () => {
  let closed = false;
  await runDemo(
    async ({ code, stderr, scratch }) => {
      assert.equal(code, 141, `stderr:\n${stderr}`);
      assert.match(stderr, /pg-ra-tls demo: SIGPIPE: stopped; temporary files removed/);
      assert.doesNotMatch(stderr, /Unhandled|EPIPE/);
      assert.deepEqual(await leftovers(scratch), [], 'every temp dir was removed');
      assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
    },
    (stdout, child) => {
      // What `head -3` does: read a few lines, then close the pipe.
      if (!closed && stdout.includes('[2/7]')) {
        closed = true;
        child.stdout.destroy();
      }
    },
  );
});
