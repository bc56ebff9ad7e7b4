/**
 * Keeps an embedded Postgres from outliving the process that started it.
 *
 * Two layers: a watchdog process per server, which stops the server and
 * removes its files as soon as its owner is gone however it died (SIGKILL,
 * a crash, an EPIPE); and, for when the watchdog was killed too, a reaper run
 * at every start that finds data directories whose owner process no longer
 * exists, stops their server and removes them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The file in a stack's directory that names the process owning it. */
const OWNER_FILE = 'owner.json';
/** Prefix of the per-server directories under the data root. */
export const SERVER_DIR_PREFIX = 'pg-ra-tls-postgres-';

/**
 * Runs detached in its own session (terminal signals do not reach it) with
 * an IPC channel to its owner: the channel closes when the owner dies, and
 * only then does it act. SIGQUIT is Postgres's immediate shutdown: the
 * postmaster takes its backends down with it; SIGKILL follows if it lingers.
 */
const WATCHDOG_SCRIPT = `
const [pid, directory] = process.argv.slice(1);
const alive = (id) => {
  try { process.kill(id, 0); } catch { return false; }
  // A zombie (nobody reaps orphans in some containers) is gone for our purpose.
  try { const stat = require('node:fs').readFileSync('/proc/' + id + '/stat', 'utf8'); return stat[stat.lastIndexOf(')') + 2] !== 'Z'; } catch { return true; }
};
process.on('disconnect', async () => {
  const server = Number(pid);
  try { process.kill(server, 'SIGQUIT'); } catch {}
  for (let waited = 0; alive(server) && waited < 10000; waited += 20) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  try { process.kill(server, 'SIGKILL'); } catch {}
  await require('node:fs/promises').rm(directory, { recursive: true, force: true });
  process.exit(0);
});
`;

/** A running watchdog; {@link release} ends it without touching the server. */
export interface Watchdog {
  readonly pid: number | undefined;
  /** Ends the watchdog (the owner stops the server itself) and waits for it to exit. */
  release(): Promise<void>;
}

/**
 * Starts a watchdog for the Postgres postmaster `serverPid` whose files are
 * under `directory`, and records this process as the directory's owner.
 */
export async function startWatchdog(serverPid: number, directory: string): Promise<Watchdog> {
  await writeFile(join(directory, OWNER_FILE), JSON.stringify({ pid: process.pid }));
  const child: ChildProcess = spawn(
    process.execPath,
    ['-e', WATCHDOG_SCRIPT, String(serverPid), directory],
    {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
      // No loader or flags of ours (tsx, --test) in the watchdog.
      env: { ...process.env, NODE_OPTIONS: '' },
    },
  );
  // Neither the process nor its channel keeps the owner's event loop alive.
  child.unref();
  child.channel?.unref();
  const exited = once(child, 'exit').then(() => {});
  child.on('error', () => {});
  let released: Promise<void> | undefined;
  return {
    pid: child.pid,
    release: () => {
      released ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        child.ref();
        await exited;
      })();
      return released;
    },
  };
}

/**
 * Stops and removes the servers under `root` whose owner process has died
 * (and whose watchdog did not clean up). Directories without an owner file
 * (another version, or one still starting) and those of live owners are left
 * alone. A server is killed only when its postmaster's command line names its
 * own data directory, so a recycled pid is never hit. Never throws.
 *
 * @returns How many directories were reaped.
 */
export async function reapOrphans(root: string): Promise<number> {
  let entries: string[];
  try {
    entries = (await readdir(root)).filter((name) => name.startsWith(SERVER_DIR_PREFIX));
  } catch {
    return 0;
  }
  let reaped = 0;
  for (const name of entries) {
    const directory = join(root, name);
    try {
      const owner = JSON.parse(await readFile(join(directory, OWNER_FILE), 'utf8')) as {
        pid?: unknown;
      };
      if (typeof owner.pid !== 'number' || isAlive(owner.pid)) continue;
      const dataDirectory = join(directory, 'data');
      const postmaster = Number(
        (await readFile(join(dataDirectory, 'postmaster.pid'), 'utf8').catch(() => '')).split(
          '\n',
        )[0],
      );
      if (Number.isInteger(postmaster) && postmaster > 0) {
        const command = await readFile(`/proc/${postmaster}/cmdline`, 'utf8').catch(() => '');
        if (command.includes(dataDirectory)) await stopProcess(postmaster);
      }
      await rm(directory, { recursive: true, force: true });
      reaped++;
    } catch {
      // Not ours to judge (no owner file yet, or raced by another reaper).
    }
  }
  return reaped;
}

/** Whether `pid` exists and is not a zombie (nobody reaps orphans in some containers). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: it exists, under another user.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return true;
  }
}

/** SIGQUIT (immediate shutdown), then SIGKILL after 5 s; resolves once the process is gone. */
async function stopProcess(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    return;
  }
  for (let waited = 0; isAlive(pid) && waited < 5000; waited += 20) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}
