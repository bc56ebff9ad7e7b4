/**
 * Runs `pg-ra-tls demo` as a user would, for test/cli-demo*.test.ts (split in
 * two files so that each stays within the per-file timeout under load).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Pids whose command line mentions `text` (Linux /proc); empty elsewhere. */
export async function processesMentioning(text: string): Promise<number[]> {
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
export async function leftovers(scratch: string): Promise<string[]> {
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
export async function runDemo(
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
