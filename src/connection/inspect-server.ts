import { isIP } from 'node:net';
import { attestCertificate } from '../attest/attest-certificate.js';
import type { AttestationReport } from '../attest/report.js';
import { DEFAULT_SIDECAR_PORT, type Endpoint } from '../config/connection-settings.js';
import { parseConnectionString } from '../config/connection-string.js';
import { parseHostPort } from '../config/server-address.js';
import { type ErrorCode, isOwnRaTlsError, RaTlsError } from '../errors.js';
import { checkBinding } from '../evidence/binding.js';
import { readCertificateFacts, readRaTlsCertificate } from '../evidence/certificate.js';
import { parseQuote } from '../evidence/quote.js';
import type { AttestationFormat } from '../evidence/types.js';
import { normalizePolicy } from '../policy/policy.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import { sha256, toHex } from '../util/bytes.js';
import { Scope } from '../util/deadline.js';
import { parseTimeout } from '../util/duration.js';
import { assertKnownOptions } from '../util/known-options.js';
import { TCB_STATUSES } from '../verification/verifier.js';
import {
  AttestedConnector,
  type AttestedConnectorOptions,
  CONNECTOR_OWNED,
} from './attested-connector.js';
import { sharedClientIdentity } from './shared-defaults.js';

/** A server to verify: `host`, `host:port`, `[v6]:port`, a postgres:// URL, or fields. */
export type ServerTarget =
  | string
  | { readonly host: string; readonly port?: number; readonly servername?: string };

/** Options of {@link inspectServer} and {@link verifyServer}. */
export interface InspectServerOptions extends AttestedConnectorOptions {
  /** TCP connect timeout. Default `"10s"`. */
  readonly connectTimeout?: number | string;
  /** TLS handshake timeout. Default `"10s"`. */
  readonly handshakeTimeout?: number | string;
  /** Cancels the check. */
  readonly signal?: AbortSignal;
}

/** The server certificate as presented, whether or not its attestation holds. */
export interface PresentedCertificate {
  /** SHA-256 of the leaf DER, lowercase hex. */
  readonly fingerprint: string;
  readonly subject?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Where the attestation sits; absent when the certificate carries none (or cannot be read). */
  readonly attestationFormat?: AttestationFormat;
}

/** What {@link inspectServer} found. `error` is set exactly when the server did not pass. */
export interface ServerInspection {
  readonly endpoint: Endpoint;
  /** Absent when no certificate was received (the dial failed). */
  readonly certificate?: PresentedCertificate;
  /**
   * The report_data check (docs/protocol.md §1) on its own, known even when a
   * later step fails: `not-checked` when the certificate or quote is unreadable.
   */
  readonly binding: 'verified' | 'failed' | 'not-checked';
  /**
   * The verified report. With `error` set (and `policyRefused`), it describes
   * what the refused server does attest, verified without pins, for display:
   * never treat a report that comes with an error as acceptance.
   */
  readonly report?: AttestationReport;
  readonly error?: RaTlsError;
  /** The quote verified but the policy refused it. */
  readonly policyRefused: boolean;
  readonly timings: { readonly dialMs?: number; readonly verifyMs?: number };
}

/** The codes of a policy refusal (applyPolicy): the evidence verified, the pins refused it. */
const POLICY_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'MRTD_NOT_ALLOWED',
  'MEASUREMENT_NOT_ALLOWED',
  'KMS_NOT_TRUSTED',
  'APP_ID_MISMATCH',
  'APP_NOT_ALLOWED',
  'COMPOSE_HASH_NOT_ALLOWED',
  'APP_IDENTITY_UNVERIFIED',
  'DEBUG_MODE',
  'BAD_TCB_STATUS',
]);

/** No pins and every TCB status: what a policy-refused server attests at all. */
const UNPINNED_POLICY = normalizePolicy({
  allowDebugMode: true,
  acceptableTcbStatuses: [...TCB_STATUSES],
});

/**
 * Dials a server, reads its certificate, verifies its attestation and the
 * policy, and hangs up before any application byte: no Postgres session, no
 * credentials. Never throws for a server that fails (that is the result's
 * `error`); throws (BAD_CONFIG, MISSING_DSTACK_SOCKET) only for configuration
 * mistakes, before any network I/O.
 */
export async function inspectServer(
  target: ServerTarget,
  options: InspectServerOptions,
): Promise<ServerInspection> {
  assertInspectOptions(options, 'inspectServer');
  const endpoint = resolveTarget(target, options);
  const connector = createConnector(options);
  let inspection: ServerInspection | undefined;
  try {
    return await withSpan(
      SpanNames.CONNECT,
      {
        [SpanAttributes.SERVER_ADDRESS]: endpoint.host,
        [SpanAttributes.SERVER_PORT]: endpoint.port,
      },
      async (span) => {
        inspection = await inspect(connector, endpoint, options);
        // The span records the failure: its error is the inspection's.
        if (inspection.error !== undefined) throw inspection.error;
        if (inspection.report !== undefined)
          setAttributes(span, reportAttributes(inspection.report));
        return inspection;
      },
    );
  } catch (error) {
    if (inspection !== undefined) return inspection;
    throw error;
  } finally {
    connector.close();
  }
}

async function inspect(
  connector: AttestedConnector,
  endpoint: Endpoint,
  options: InspectServerOptions,
): Promise<ServerInspection> {
  const dialStarted = performance.now();
  let der: Uint8Array;
  let issuers: readonly Uint8Array[];
  try {
    const dialed = await connector.dial(endpoint, options.signal);
    // Only the certificate matters: hang up before a single application byte.
    dialed.socket.on('error', () => {});
    dialed.socket.destroy();
    der = dialed.peerCertificateDer;
    issuers = dialed.peerIssuersDer;
  } catch (error) {
    return {
      endpoint,
      binding: 'not-checked',
      error: asRaTlsError(error),
      policyRefused: false,
      timings: {},
    };
  }
  const dialMs = performance.now() - dialStarted;
  const { certificate, binding } = presentedCertificate(der);
  const verifyStarted = performance.now();
  try {
    const { report } = await connector.verifyCertificate(der, options.signal, issuers);
    const timings = { dialMs, verifyMs: performance.now() - verifyStarted };
    return { endpoint, certificate, binding, report, policyRefused: false, timings };
  } catch (error) {
    const timings = { dialMs, verifyMs: performance.now() - verifyStarted };
    const policyRefused = isOwnRaTlsError(error) && POLICY_CODES.has(error.code);
    const report = policyRefused
      ? await unpinnedReport(connector, der, issuers, options)
      : undefined;
    return {
      endpoint,
      certificate,
      binding,
      ...(report === undefined ? {} : { report }),
      error: asRaTlsError(error),
      policyRefused,
      timings,
    };
  }
}

/** What a policy-refused server attests, verified without pins; undefined if that fails too. */
async function unpinnedReport(
  connector: AttestedConnector,
  der: Uint8Array,
  issuers: readonly Uint8Array[],
  options: InspectServerOptions,
): Promise<AttestationReport | undefined> {
  const scope = new Scope(options.signal).deadline(
    connector.verifyTimeoutMs,
    // Stryker disable next-line StringLiteral: the catch below discards this error; only the deadline matters
    () => new RaTlsError('VERIFY_TIMEOUT', 'verifying without pins took longer than verifyTimeout'),
  );
  try {
    return await scope.race(
      attestCertificate(der, {
        verifier: connector.verifier,
        policy: UNPINNED_POLICY,
        chain: issuers,
        now: new Date(connector.now()),
        signal: scope.signal,
      }),
    );
    // Stryker disable next-line BlockStatement: without the return the function returns undefined all the same
  } catch {
    return undefined;
  } finally {
    scope.dispose();
  }
}

/**
 * The certificate as presented, read independently of the verdict so a
 * refused server still shows what it sent; the binding check is pure, so it
 * is reported on its own.
 */
export function presentedCertificate(der: Uint8Array): {
  certificate: PresentedCertificate;
  binding: ServerInspection['binding'];
} {
  const fingerprint = toHex(sha256(der));
  let facts: PresentedCertificate = { fingerprint };
  try {
    facts = { fingerprint, ...readCertificateFacts(der) };
    const certificate = readRaTlsCertificate(der);
    facts = { ...facts, attestationFormat: certificate.attestation.format };
    checkBinding(certificate, parseQuote(certificate.attestation.quote));
    return { certificate: facts, binding: 'verified' };
  } catch (error) {
    // Whatever could be read is shown; the verification reports why the rest could not.
    const binding = isOwnRaTlsError(error, 'PUBKEY_MISMATCH') ? 'failed' : 'not-checked';
    return { certificate: facts, binding };
  }
}

function asRaTlsError(error: unknown): RaTlsError {
  if (error instanceof RaTlsError) return error;
  return new RaTlsError('CONNECTION_ENDED', 'the inspection failed', { cause: error });
}

/**
/** Every option {@link inspectServer} (and verifyServer) knows. */
const INSPECT_OPTION_KEYS: readonly string[] = Object.freeze([
  ...CONNECTOR_OWNED,
  'presentClientCertificate',
  'connectTimeout',
  'handshakeTimeout',
  'signal',
]);

/**
 * BAD_CONFIG for options that are not an object (a one-shot check needs at
 * least its verifier) or hold a misspelled key (with a did-you-mean).
 */
export function assertInspectOptions(options: InspectServerOptions, where: string): void {
  assertOptionsObject(options, where);
  assertKnownOptions(options, INSPECT_OPTION_KEYS, where);
}

/** BAD_CONFIG unless `options` is an object: missing options would surface as a TypeError. */
export function assertOptionsObject(options: unknown, where: string): void {
  if (options === null || typeof options !== 'object') {
    throw new RaTlsError(
      'BAD_CONFIG',
      `${where} needs an options object with at least { verifier } as its second argument`,
      { details: { option: 'options' } },
    );
  }
}

/**
 * A connector for one check: the shared client identity unless one is given
 * (or none is to be presented). It verifies for itself, as these checks
 * promise to verify now: no verdict of a pool is reused.
 */
export function createConnector(options: AttestedConnectorOptions): AttestedConnector {
  const ownIdentity =
    options.clientIdentity !== undefined ||
    options.clientCertOverride !== undefined ||
    options.presentClientCertificate === false;
  return new AttestedConnector(
    {
      ...options,
      ...(ownIdentity ? {} : { clientIdentity: sharedClientIdentity(options.dstackEndpoint) }),
    },
    'none',
  );
}

function resolveTarget(target: ServerTarget, options: InspectServerOptions): Endpoint {
  const timeouts = {
    connectTimeoutMs: parseTimeout(options.connectTimeout ?? '10s', 'connectTimeout'),
    handshakeTimeoutMs: parseTimeout(options.handshakeTimeout ?? '10s', 'handshakeTimeout'),
  };
  let host: string | undefined;
  let port: number | string | undefined;
  let servername: string | undefined;
  if (typeof target === 'string') {
    const text = target.trim();
    if (/^postgres(?:ql)?:\/\//i.test(text) || /^[A-Za-z0-9_]+\s*=/.test(text)) {
      // A URL or libpq keyword string: hostaddr is where TCP goes, host the TLS name.
      const parsed = parseConnectionString(text);
      host = parsed.hostaddr ?? parsed.host;
      port = parsed.port;
      if (parsed.hostaddr !== undefined && parsed.host !== undefined && isIP(parsed.host) === 0) {
        servername = parsed.host;
      }
    } else {
      const parsed = parseHostPort(text);
      host = parsed?.host;
      port = parsed?.port;
    }
  } else if (target !== null && typeof target === 'object') {
    host = target.host;
    port = target.port;
    servername = target.servername;
  }
  const portNumber = port === undefined ? DEFAULT_SIDECAR_PORT : Number(port);
  if (
    host === undefined ||
    host === '' ||
    !Number.isInteger(portNumber) ||
    portNumber < 1 ||
    portNumber > 65_535
  ) {
    throw new RaTlsError(
      'BAD_CONFIG',
      // A string is not echoed (a malformed connection string may hold the password anywhere),
      // and of an object only the fields a target has.
      `verifyServer target ${typeof target === 'string' ? '(a string, not shown)' : JSON.stringify({ host, port })} ` +
        'is not "host", "host:port", a postgres:// URL or { host, port }',
      { details: { option: 'target' } },
    );
  }
  return {
    host,
    port: portNumber,
    servername: servername ?? (isIP(host) === 0 ? host : undefined),
    ...timeouts,
  };
}
