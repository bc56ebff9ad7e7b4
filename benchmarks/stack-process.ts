/**
 * The servers of a benchmark run, in their own process: Postgres (also
 * accepting ordinary TLS, the baseline), and the local attested stack in front
 * of it (PCCS, guest agent, sidecar). Running them here keeps the measured
 * process busy with client work only; the sidecar's own DCAP check of every
 * client certificate then competes with the client for a core, not for its
 * event loop. Started by {@link startStackProcess} over IPC; stops when told
 * to, or when its parent goes away.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { describeCause } from '../src/errors.js';
import { type LocalStack, startLocalStack } from '../src/testing/local-stack.js';
import { type LocalPostgres, startPostgres } from '../src/testing/stack/postgres.js';

/** What the benchmarks need to reach the servers (all on 127.0.0.1). */
export interface StackEndpoints {
  /** `postgres://teesql_readwrite:…@127.0.0.1:<sidecar>/teesql`: the attested path. */
  readonly sidecarUrl: string;
  /** The same role straight to Postgres, which accepts plaintext and `sslmode=require`. */
  readonly postgresUrl: string;
  readonly sidecar: { readonly host: string; readonly port: number };
  readonly dstackEndpoint: string;
  readonly pccsUrl: string;
  /** The stack's DCAP test root, base64 DER. */
  readonly rootCaDerBase64: string;
  readonly expected: {
    readonly mrtd: string;
    readonly rtmr0: string;
    readonly rtmr1: string;
    readonly rtmr2: string;
    readonly kmsRoot: string;
    readonly appId: string;
    readonly composeHash: string;
  };
  /** Rows in `bench_accounts` (ids 1..rows). */
  readonly rows: number;
  /** Start-up time of the servers, ms. */
  readonly startMs: number;
}

/** A running stack process. */
export interface StackProcess {
  readonly endpoints: StackEndpoints;
  /** Stops the servers and waits for the process to exit. */
  stop(): Promise<void>;
}

type ParentMessage = { readonly type: 'stop' };
type ChildMessage =
  | { readonly type: 'ready'; readonly endpoints: StackEndpoints }
  | { readonly type: 'failed'; readonly message: string };

/** Rows of the small read query's table. */
const ROWS = 1000;
/** Room for the largest scaling pool plus the throughput pools and the sidecar's upstreams. */
const MAX_CONNECTIONS = 160;
const START_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 20_000;

/** Forks this module as a server process and waits until its servers listen. */
export function startStackProcess(): Promise<StackProcess> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve'], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the benchmark servers did not start within ${START_TIMEOUT_MS} ms`));
    }, START_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the benchmark server process exited early (code ${code})`));
    });
    child.on('message', (message: ChildMessage) => {
      clearTimeout(timer);
      if (message.type === 'failed') {
        child.kill('SIGKILL');
        reject(new Error(`the benchmark servers did not start: ${message.message}`));
        return;
      }
      resolve({
        endpoints: message.endpoints,
        stop: async () => {
          if (child.exitCode === null && child.signalCode === null) {
            child.send({ type: 'stop' } satisfies ParentMessage);
            const kill = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
            await exited;
            clearTimeout(kill);
          }
        },
      });
    });
  });
}

async function serve(): Promise<void> {
  const send = (message: ChildMessage) => process.send?.(message);
  const started = performance.now();
  let postgres: LocalPostgres | undefined;
  let stack: LocalStack | undefined;
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await stack?.stop().catch(() => {});
      await postgres?.stop().catch(() => {});
      process.disconnect?.();
    })();
    return stopping;
  };
  process.on('message', (message: ParentMessage) => {
    if (message.type === 'stop') void stop();
  });
  // The parent died or closed the channel: nobody will ever ask us to stop.
  process.on('disconnect', () => void stop());
  try {
    postgres = await startPostgres({ tls: true, maxConnections: MAX_CONNECTIONS });
    stack = await startLocalStack({
      postgres: { databaseUrl: postgres.superuserUrl },
      gateway: false,
      logger: () => {},
    });
    await createBenchTable(postgres.superuserUrl, stack.postgres?.database ?? 'teesql');
    const direct = stack.postgres;
    if (direct === undefined) throw new Error('the local stack has no Postgres');
    send({
      type: 'ready',
      endpoints: {
        sidecarUrl: stack.databaseUrl,
        postgresUrl: direct.databaseUrl('teesql_readwrite'),
        sidecar: { host: stack.sidecar.host, port: stack.sidecar.port },
        dstackEndpoint: stack.dstackEndpoint,
        pccsUrl: stack.pccsUrl,
        rootCaDerBase64: Buffer.from(stack.trustRoot.rootCaDer).toString('base64'),
        expected: stack.expected,
        rows: ROWS,
        startMs: performance.now() - started,
      },
    });
  } catch (error) {
    send({ type: 'failed', message: describeCause(error) });
    await stop();
  }
}

/** The small read query's table, created by the superuser (teesql_readwrite gets CRUD by default). */
async function createBenchTable(superuserUrl: string, database: string): Promise<void> {
  const url = new URL(superuserUrl);
  url.pathname = `/${database}`;
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    await client.query(`
      CREATE TABLE bench_accounts (id integer PRIMARY KEY, name text NOT NULL, balance numeric NOT NULL);
      INSERT INTO bench_accounts
        SELECT n, 'account ' || n, (n * 37 % 1000) / 10.0 FROM generate_series(1, ${ROWS}) AS n;
      ANALYZE bench_accounts;
    `);
  } finally {
    await client.end();
  }
}

if (process.argv.includes('--serve')) void serve();
