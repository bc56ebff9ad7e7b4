/**
 * `pg-ra-tls verify <host[:port] | DATABASE_URL>`: dials the server, verifies
 * the attestation of the certificate it presents and the policy, prints what
 * was verified, and closes the connection. No Postgres session is opened, so
 * the URL's credentials are neither needed nor used.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { DEFAULT_SIDECAR_PORT, resolveConnectionSettings } from '../config/connection-settings.js';
import { maskConnectionString } from '../config/connection-string.js';
import { parseHostPort } from '../config/server-address.js';
import { inspectServer } from '../connection/inspect-server.js';
import { describeCause, isOwnRaTlsError, RaTlsError } from '../errors.js';
import { ClientIdentity } from '../identity/client-identity.js';
import { resolveDstackEndpoint } from '../identity/dstack-endpoint.js';
import { normalizePolicy, policyWarnings } from '../policy/policy.js';
import type { MeasurementSet, NormalizedPolicy, Policy } from '../policy/types.js';
import { sha256, toHex } from '../util/bytes.js';
import { parseTimeout } from '../util/duration.js';
import { pemBlocks } from '../util/pem.js';
import { DcapVerifier, type EngineChoice } from '../verification/dcap-verifier.js';
import { INTEL_API_KEY_ENV, IntelApiVerifier } from '../verification/intel-api-verifier.js';
import type { TcbStatus } from '../verification/verifier.js';
import { type CliCommand, type CliIo, ExitCode, parseArgsError, usageError } from './command.js';
import {
  formatVerifyText,
  type RootOfTrust,
  type VerifyOutcome,
  verifyJson,
} from './verify-report.js';

/** Which quote verifier `verify` uses. */
export type VerifierChoice =
  | {
      readonly kind: 'dcap';
      readonly engine: EngineChoice;
      readonly pccsUrl?: string;
      /** A test root CA (PEM file): js engine only (docs/protocol.md §8). */
      readonly rootCaPath?: string;
    }
  | { readonly kind: 'intel-api' };

/** What the `verify` command line asks for (validated, nothing read yet). */
export interface VerifyArguments {
  /** The target as typed, password masked: safe to print. */
  readonly input: string;
  /** Where TCP goes (a URL's libpq `hostaddr` when it has one). */
  readonly host: string;
  readonly port: number;
  /** TLS SNI: --servername, else the host name (never an IP address). */
  readonly servername: string | undefined;
  readonly policy: NormalizedPolicy;
  /** The policy as typed, before --measurements and --kms-root files are read into it. */
  readonly policyInput: Policy;
  /** --measurements: a JSON file of boot measurement sets. */
  readonly measurementsPath?: string;
  /** --kms-root: KMS root certificates (PEM or DER) or SPKI SHA-256 hex files. */
  readonly kmsRootPaths: readonly string[];
  readonly verifier: VerifierChoice;
  readonly dstackEndpoint?: string;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  readonly verifyTimeoutMs: number;
  /** Set by --timeout; also bounds guest agent and collateral requests. */
  readonly requestTimeoutMs?: number;
  readonly json: boolean;
}

const HELP = `Usage: pg-ra-tls verify <host[:port] | DATABASE_URL> [options]

Dials the server (default port 5433, the teesql sidecar), verifies the Intel
TDX attestation of the certificate it presents and your policy, prints what was
verified, and hangs up. No Postgres session is opened: a DATABASE_URL's user and
password are not needed and never sent. A URL's libpq hostaddr is honoured (TCP
to that address, the host name as TLS SNI), as with the dstack gateway.

Exit status: 0 the server passed; 1 it did not (or could not be reached);
2 the command line is wrong.

Policy:
  --mrtd <hex>             Allowed MRTD (48 bytes); repeatable. MRTD is only the
                           firmware: pin the boot chain or a KMS root as well
  --app-id <hex>           Allowed app-id (20 bytes) from verified RTMR3 events; repeatable
  --compose-hash <hex>     Allowed compose-hash (32 bytes); repeatable
  --rtmr0/--rtmr1/--rtmr2 <hex>
                           With one --mrtd: the boot chain to pin (firmware
                           config, kernel, cmdline+initrd; RTMR0 optional)
  --measurements <file>    JSON boot measurement sets: [{mrtd, rtmr0?, rtmr1,
                           rtmr2}, ...], one set, or a verify --json report
  --kms-root <file>        Trusted dstack KMS root: PEM or DER certificate, or
                           its SPKI SHA-256 in hex; repeatable
  --tcb-status <status>    Acceptable TCB status; repeatable
                           (default UpToDate and SWHardeningNeeded)
  --allow-debug            Accept a debug TD (never in production)

Verifier (default: DCAP against Intel's root, collateral from Intel PCS):
  --engine <both|js>       DCAP engines that must accept the quote (default both;
                           the WASM engine never decides alone)
  --pccs-url <url>         PCCS to fetch collateral from, e.g. https://pccs.phala.network
  --root-ca <pem>          Replace Intel's root with a TEST root (js engine only;
                           anything it vouches for proves nothing about hardware)
  --intel-api              Appraise with Intel Trust Authority instead
                           (needs INTEL_TRUST_AUTHORITY_API_KEY)

Connection:
  --servername <name>      TLS SNI to send (default: the host name)
  --dstack-endpoint <url>  Guest agent for the client certificate (default:
                           DSTACK_SIMULATOR_ENDPOINT, then the dstack sockets).
                           Without one, no client certificate is presented
  --timeout <time>         Limit for each of connect, handshake and verification,
                           e.g. 5s (default 10s, 10s, 30s)

Output:
  --json                   Print a JSON report (stable field names) instead of text
  --verbose                Print stack traces with errors
  -h, --help               Show this help
`;

/** Library option names in messages, and the flags that set them here. */
const FLAG_FOR_OPTION: readonly (readonly [string, string])[] = [
  ['policy.allowedMrtds', '--mrtd'],
  ['policy.allowedMeasurements', '--rtmr0/1/2 (or --measurements)'],
  ['policy.trustedKmsRoots', '--kms-root'],
  ['policy.allowedAppIds', '--app-id'],
  ['policy.allowedComposeHashes', '--compose-hash'],
  ['policy.acceptableTcbStatuses', '--tcb-status'],
  ['policy.allowDebugMode', '--allow-debug'],
  ['dstackEndpoint', '--dstack-endpoint'],
  ['pccsUrl', '--pccs-url'],
  ['verifyTimeout', '--timeout'],
  ['rootCa', '--root-ca'],
];

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_VERIFY_TIMEOUT_MS = 30_000;
const URL_SCHEME = /^postgres(?:ql)?:\/\//i;
const ENGINES: readonly EngineChoice[] = ['both', 'js'];

/** The flags of `verify`, for parseArgs and "did you mean". */
const VERIFY_OPTIONS = {
  mrtd: { type: 'string', multiple: true },
  rtmr0: { type: 'string' },
  rtmr1: { type: 'string' },
  rtmr2: { type: 'string' },
  measurements: { type: 'string' },
  'kms-root': { type: 'string', multiple: true },
  'app-id': { type: 'string', multiple: true },
  'compose-hash': { type: 'string', multiple: true },
  'tcb-status': { type: 'string', multiple: true },
  'allow-debug': { type: 'boolean' },
  engine: { type: 'string' },
  'pccs-url': { type: 'string' },
  'root-ca': { type: 'string' },
  'intel-api': { type: 'boolean' },
  servername: { type: 'string' },
  'dstack-endpoint': { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** Parses the `verify` arguments (pure). Throws BAD_CONFIG usage errors naming the flag to fix. */
export function parseVerifyArguments(args: readonly string[]): VerifyArguments {
  let values: Record<string, string | boolean | string[] | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: true,
      options: VERIFY_OPTIONS,
    }));
  } catch (error) {
    // parseArgs messages name the offending argument and never echo values.
    throw parseArgsError(error, 'verify', Object.keys(VERIFY_OPTIONS));
  }
  if (positionals.length !== 1) {
    throw usageError(
      `verify takes exactly one server (host, host:port or a postgres:// URL), got ${positionals.length}; ` +
        'see pg-ra-tls verify --help',
    );
  }
  const strings = (name: string) => (values[name] as string[] | undefined) ?? [];
  const string = (name: string) => values[name] as string | undefined;

  const bootChain = measurementFlags(
    strings('mrtd'),
    string('rtmr0'),
    string('rtmr1'),
    string('rtmr2'),
  );
  const policyInput: Policy = {
    allowedMrtds: strings('mrtd'),
    allowedAppIds: strings('app-id'),
    allowedComposeHashes: strings('compose-hash'),
    allowDebugMode: values['allow-debug'] === true,
    ...(bootChain === undefined ? {} : { allowedMeasurements: [bootChain] }),
    ...(strings('tcb-status').length === 0
      ? {}
      : { acceptableTcbStatuses: strings('tcb-status') as TcbStatus[] }),
  };
  const policy = asUsage(() => normalizePolicy(policyInput));
  const measurementsPath = string('measurements');

  const timeout = string('timeout');
  const timeoutMs =
    timeout === undefined ? undefined : asUsage(() => parseTimeout(timeout, '--timeout'));
  if (timeoutMs === 0) throw usageError('--timeout must be more than 0, e.g. 5s');

  const verifier = parseVerifierChoice({
    engine: string('engine'),
    pccsUrl: string('pccs-url'),
    rootCa: string('root-ca'),
    intelApi: values['intel-api'] === true,
  });
  const target = parseTarget(positionals[0]!, string('servername'));
  const dstackEndpoint = string('dstack-endpoint');
  return {
    ...target,
    policy,
    policyInput,
    ...(measurementsPath === undefined ? {} : { measurementsPath }),
    kmsRootPaths: strings('kms-root'),
    verifier,
    ...(dstackEndpoint === undefined ? {} : { dstackEndpoint }),
    connectTimeoutMs: timeoutMs ?? target.connectTimeoutMs,
    handshakeTimeoutMs: timeoutMs ?? DEFAULT_TIMEOUT_MS,
    verifyTimeoutMs: timeoutMs ?? DEFAULT_VERIFY_TIMEOUT_MS,
    ...(timeoutMs === undefined ? {} : { requestTimeoutMs: timeoutMs }),
    json: values['json'] === true,
  };
}

/** --rtmr0/1/2 with one --mrtd make one boot measurement set (docs/protocol.md §2). */
function measurementFlags(
  mrtds: readonly string[],
  rtmr0: string | undefined,
  rtmr1: string | undefined,
  rtmr2: string | undefined,
): MeasurementSet | undefined {
  if (rtmr0 === undefined && rtmr1 === undefined && rtmr2 === undefined) return undefined;
  if (mrtds.length !== 1 || rtmr1 === undefined || rtmr2 === undefined) {
    throw usageError(
      '--rtmr0/--rtmr1/--rtmr2 pin one boot chain: give exactly one --mrtd with --rtmr1 and --rtmr2 ' +
        '(--rtmr0 optional); for several chains use --measurements <file>',
    );
  }
  return { mrtd: mrtds[0]!, ...(rtmr0 === undefined ? {} : { rtmr0 }), rtmr1, rtmr2 };
}

/**
 * Reads --measurements and --kms-root into the policy (usage errors, exit 2,
 * naming the file when one cannot be read or does not hold what it should).
 */
export async function withPolicyFiles(args: VerifyArguments): Promise<VerifyArguments> {
  if (args.measurementsPath === undefined && args.kmsRootPaths.length === 0) return args;
  const fileSets =
    args.measurementsPath === undefined ? [] : await readMeasurements(args.measurementsPath);
  const kmsRoots = await Promise.all(args.kmsRootPaths.map(readKmsRoot));
  const allowedMeasurements = [...(args.policyInput.allowedMeasurements ?? []), ...fileSets];
  const policyInput: Policy = {
    ...args.policyInput,
    ...(allowedMeasurements.length === 0 ? {} : { allowedMeasurements }),
    ...(kmsRoots.length === 0 ? {} : { trustedKmsRoots: kmsRoots }),
  };
  return { ...args, policyInput, policy: asUsage(() => normalizePolicy(policyInput)) };
}

async function readMeasurements(path: string): Promise<MeasurementSet[]> {
  let document: unknown;
  try {
    document = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw usageError(
      `--measurements ${JSON.stringify(path)} cannot be read as JSON: ${describeCause(error)}`,
    );
  }
  // A saved `verify --json` report pins exactly the boot chain it saw.
  const attestation = (document as { attestation?: unknown } | null)?.attestation;
  if (attestation !== null && typeof attestation === 'object') {
    const { mrtd, rtmr0, rtmr1, rtmr2 } = attestation as Record<string, string>;
    document = { mrtd, rtmr0, rtmr1, rtmr2 };
  }
  const sets = Array.isArray(document) ? document : [document];
  if (sets.length === 0) {
    throw usageError(`--measurements ${JSON.stringify(path)} holds no measurement set`);
  }
  return sets as MeasurementSet[];
}

async function readKmsRoot(path: string): Promise<string | Uint8Array> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw usageError(`--kms-root ${JSON.stringify(path)} cannot be read: ${describeCause(error)}`);
  }
  const text = bytes.toString('latin1');
  if (text.includes('-----BEGIN')) return text;
  // A bare SPKI SHA-256 (what verify prints as "kms root"), else DER bytes.
  return /^\s*(0x)?[0-9a-fA-F]{64}\s*$/.test(text) ? text.trim() : new Uint8Array(bytes);
}

function parseVerifierChoice(flags: {
  engine: string | undefined;
  pccsUrl: string | undefined;
  rootCa: string | undefined;
  intelApi: boolean;
}): VerifierChoice {
  if (flags.intelApi) {
    const conflicting = [
      flags.engine === undefined ? undefined : '--engine',
      flags.pccsUrl === undefined ? undefined : '--pccs-url',
      flags.rootCa === undefined ? undefined : '--root-ca',
    ].filter((flag) => flag !== undefined);
    if (conflicting.length > 0) {
      throw usageError(
        `--intel-api appraises the quote at Intel Trust Authority; it cannot be combined with ${conflicting.join(', ')} (DCAP options)`,
      );
    }
    return { kind: 'intel-api' };
  }
  if (flags.engine === 'wasm') {
    throw usageError(
      '--engine wasm is not offered: the WASM engine does not check the QE identity, so alone it would accept a forged quoting enclave; use --engine both (default) or js',
    );
  }
  if (flags.engine !== undefined && !(ENGINES as readonly string[]).includes(flags.engine)) {
    throw usageError(
      `--engine must be one of ${ENGINES.join(', ')}; got ${JSON.stringify(flags.engine)}`,
    );
  }
  if (flags.rootCa !== undefined && flags.engine !== undefined && flags.engine !== 'js') {
    throw usageError(
      "--root-ca works only with --engine js: the WASM engine has Intel's root compiled in (docs/protocol.md §3)",
    );
  }
  if (flags.pccsUrl !== undefined && !isHttpUrl(flags.pccsUrl)) {
    throw usageError(
      `--pccs-url must be an http(s) URL such as https://pccs.phala.network; got ${JSON.stringify(flags.pccsUrl)}`,
    );
  }
  return {
    kind: 'dcap',
    engine: flags.rootCa === undefined ? ((flags.engine as EngineChoice) ?? 'both') : 'js',
    ...(flags.pccsUrl === undefined ? {} : { pccsUrl: flags.pccsUrl }),
    ...(flags.rootCa === undefined ? {} : { rootCaPath: flags.rootCa }),
  };
}

function parseTarget(
  text: string,
  servername: string | undefined,
): Pick<VerifyArguments, 'input' | 'host' | 'port' | 'servername'> & { connectTimeoutMs: number } {
  const input = maskConnectionString(text.trim());
  if (URL_SCHEME.test(text.trim())) {
    // The library's own reading of DATABASE_URL (hostaddr, port, connect_timeout);
    // the credentials are not checked because verify never logs in.
    const settings = asUsage(() =>
      resolveConnectionSettings(
        {
          connectionString: text,
          allowCustomRoles: true,
          ...(servername === undefined ? {} : { servername }),
        },
        {},
      ),
    );
    return {
      input,
      host: settings.host,
      port: settings.port,
      servername: settings.servername,
      connectTimeoutMs: settings.connectTimeoutMs,
    };
  }
  const parsed = parseHostPort(text);
  const host = parsed?.host;
  const port = parsed?.port ?? DEFAULT_SIDECAR_PORT;
  if (host === undefined) {
    // Not echoed: a mistyped connection string may hold the password anywhere.
    throw usageError('the target is not host, host:port, [ipv6]:port or a postgres:// URL');
  }
  return {
    input,
    host,
    port,
    servername: servername ?? (isIP(host) === 0 ? host : undefined),
    connectTimeoutMs: DEFAULT_TIMEOUT_MS,
  };
}

/**
 * Inspects the server of `args` ({@link inspectServer}) and words what it
 * found for this command; never throws for a server that fails (that is the
 * outcome's `error`), only for local problems such as an unreadable --root-ca
 * file (usage) or a failing guest agent.
 */
export async function verifyTarget(args: VerifyArguments, io: CliIo): Promise<VerifyOutcome> {
  const { verifier, rootOfTrust } = await createVerifier(args, io);
  let identity: ClientIdentity | undefined;
  try {
    const endpoint = rephrasing(() => clientCertificateEndpoint(args, io.env));
    if (endpoint !== undefined) {
      identity = new ClientIdentity({
        dstackEndpoint: endpoint,
        env: io.env,
        ...(args.requestTimeoutMs === undefined ? {} : { requestTimeout: args.requestTimeoutMs }),
      });
      // Asked first: a failing guest agent is our problem, not the server's.
      await identity.get().catch((error: unknown) => {
        throw rephrased(error);
      });
    }
    const inspection = await inspectServer(
      {
        host: args.host,
        port: args.port,
        ...(args.servername === undefined ? {} : { servername: args.servername }),
      },
      {
        verifier,
        policy: args.policyInput,
        connectTimeout: args.connectTimeoutMs,
        handshakeTimeout: args.handshakeTimeoutMs,
        verifyTimeout: args.verifyTimeoutMs,
        // The policy's warnings are part of the report below.
        logger: () => {},
        ...(identity === undefined
          ? { presentClientCertificate: false }
          : { clientIdentity: identity }),
      },
    );
    const { certificate, report, error } = inspection;
    return {
      input: args.input,
      host: args.host,
      port: args.port,
      servername: args.servername,
      clientCertificateFrom: endpoint,
      policy: args.policy,
      warnings: policyWarnings(args.policy).map(inFlagTerms),
      rootOfTrust,
      ...(certificate === undefined
        ? {}
        : {
            certificate: {
              ...certificate,
              ...(certificate.subject === undefined
                ? {}
                : { subject: printable(certificate.subject) }),
              binding: inspection.binding,
            },
          }),
      ...(report === undefined ? {} : { report }),
      ...(error === undefined
        ? {}
        : { error: failure(error, certificate === undefined && endpoint === undefined) }),
      policyRefused: inspection.policyRefused,
      timings: inspection.timings,
    };
  } finally {
    identity?.close();
    await verifier.close?.();
  }
}

async function run(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = await withPolicyFiles(parseVerifyArguments(args));
  const outcome = await verifyTarget(parsed, io);
  io.stdout(
    parsed.json ? `${JSON.stringify(verifyJson(outcome), null, 2)}\n` : formatVerifyText(outcome),
  );
  if (outcome.error === undefined) return ExitCode.OK;
  io.stderr(`pg-ra-tls: ${outcome.error.code}: ${outcome.error.message}\n`);
  return ExitCode.FAILED;
}

/**
 * The guest agent to ask for a client certificate: --dstack-endpoint (which
 * must work), else DSTACK_SIMULATOR_ENDPOINT or a dstack socket like the
 * library; undefined when there is none. Then no client certificate is
 * presented: over TLS 1.3 the server's certificate arrives before the server
 * judges ours, so even the sidecar can be verified from outside a CVM
 * (measured against the local stack's sidecar).
 */
function clientCertificateEndpoint(
  args: VerifyArguments,
  env: NodeJS.ProcessEnv,
): string | undefined {
  if (args.dstackEndpoint !== undefined) return resolveDstackEndpoint(args.dstackEndpoint, env);
  try {
    return resolveDstackEndpoint(undefined, env);
  } catch (error) {
    if (isOwnRaTlsError(error, 'MISSING_DSTACK_SOCKET')) return undefined;
    throw error;
  }
}

async function createVerifier(
  args: VerifyArguments,
  io: CliIo,
): Promise<{
  verifier: DcapVerifier | IntelApiVerifier;
  rootOfTrust: RootOfTrust;
}> {
  const choice = args.verifier;
  const requestTimeout =
    args.requestTimeoutMs === undefined ? {} : { requestTimeout: args.requestTimeoutMs };
  if (choice.kind === 'intel-api') {
    const verifier = asUsage(
      () =>
        new IntelApiVerifier({
          apiKey: io.env[INTEL_API_KEY_ENV] ?? '',
          ...requestTimeout,
        }),
    );
    return { verifier, rootOfTrust: { kind: 'intel-trust-authority' } };
  }
  let rootCa: Uint8Array | undefined;
  let rootOfTrust: RootOfTrust = { kind: 'intel-sgx-root-ca' };
  if (choice.rootCaPath !== undefined) {
    rootCa = await readRootCa(choice.rootCaPath);
    rootOfTrust = { kind: 'custom', fingerprint: toHex(sha256(rootCa)), path: choice.rootCaPath };
  }
  const verifier = asUsage(
    () =>
      new DcapVerifier({
        engine: choice.engine,
        ...(choice.pccsUrl === undefined ? {} : { pccsUrl: choice.pccsUrl }),
        ...(rootCa === undefined ? {} : { rootCa }),
        ...requestTimeout,
        // The test-root warning goes to stderr, so --json output stays parseable.
        logger: (message) => io.stderr(`${message}\n`),
      }),
  );
  return { verifier, rootOfTrust };
}

async function readRootCa(path: string): Promise<Uint8Array> {
  let pem: string;
  try {
    // PEM text itself (e.g. --root-ca "$(cat root.pem)"), or the path of a PEM file.
    pem = path.includes('-----BEGIN') ? path : await readFile(path, 'utf8');
  } catch (error) {
    throw usageError(`--root-ca ${JSON.stringify(path)} cannot be read: ${describeCause(error)}`);
  }
  let der: Uint8Array | undefined;
  try {
    der = pemBlocks(pem)[0];
  } catch {
    der = undefined;
  }
  if (der === undefined) {
    throw usageError(
      `--root-ca ${path.includes('-----BEGIN') ? '(PEM text)' : JSON.stringify(path)} is not a PEM certificate (-----BEGIN CERTIFICATE-----)`,
    );
  }
  return der;
}

/**
 * One line of what went wrong and what to do, in this command's terms: the
 * library names its options (`policy.allowedMrtds`), the user typed flags.
 */
function failure(
  error: RaTlsError,
  withoutClientCertificate: boolean,
): {
  code: string;
  message: string;
} {
  const code = error.code;
  let message = printable(describeCause(error).replace(/\s*\n\s*/g, ' '));
  message = inFlagTerms(message);
  if (
    withoutClientCertificate &&
    (code === 'HANDSHAKE_FAILED' || code === 'CONNECTION_ENDED' || code === 'HANDSHAKE_TIMEOUT')
  ) {
    message +=
      '; no client certificate was presented and this server may require one: ' +
      'set DSTACK_SIMULATOR_ENDPOINT or pass --dstack-endpoint';
  }
  return { code, message };
}

/** The library names its options (`policy.allowedMrtds`); the user typed flags (`--mrtd`). */
function inFlagTerms(text: string): string {
  let result = text;
  for (const [option, flag] of FLAG_FOR_OPTION) result = result.replaceAll(option, flag);
  return result;
}

/** Runs `make`, with a RaTlsError it throws put in flag terms. */
function rephrasing<T>(make: () => T): T {
  try {
    return make();
  } catch (error) {
    throw rephrased(error);
  }
}

/** The same RaTlsError in flag terms (anything else unchanged), for errors main() prints. */
function rephrased(error: unknown): unknown {
  if (!(error instanceof RaTlsError)) return error;
  return new RaTlsError(error.code, inFlagTerms(error.message), {
    cause: error,
    details: { ...error.details },
  });
}

/**
 * Replaces control characters: a server chooses its certificate subject (and
 * engines quote parts of what they reject), and none of it may drive the
 * terminal.
 */
function printable(text: string): string {
  return Array.from(text, (char) => {
    const code = char.charCodeAt(0);
    return code < 0x20 || (code >= 0x7f && code < 0xa0) ? '\uFFFD' : char;
  }).join('');
}

/** Runs `make`, turning the library's BAD_CONFIG into a usage error (exit 2) with flag names. */
function asUsage<T>(make: () => T): T {
  try {
    return make();
  } catch (error) {
    if (!isOwnRaTlsError(error, 'BAD_CONFIG')) throw error;
    const message = inFlagTerms(error.message.replace(/\.$/, ''));
    throw usageError(message.replace(/--(\S+)\[\d+\]/g, '--$1'));
  }
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return url.protocol === 'https:' || url.protocol === 'http:';
  } catch {
    return false;
  }
}

/** The `verify` command. */
export const verifyCommand: CliCommand = {
  name: 'verify',
  help: HELP,
  run,
};
