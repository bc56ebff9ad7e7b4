/**
 * Every failure pg-ra-tls reports is a {@link RaTlsError} with a stable `code`.
 * Users branch on `code` and log `message`; messages never contain secrets,
 * passwords or key material (only public values such as measurements).
 */

/** Stable error codes, grouped by the layer that raises them. Documented in README.md. */
export const ErrorCodes = {
  // Configuration (raised before any network I/O)
  BAD_CONFIG: 'Invalid pg-ra-tls options',
  BAD_CREDENTIALS: 'DATABASE_URL user or password is not a teesql credential',
  PG_NATIVE_UNSUPPORTED: 'pg-native cannot carry an attested stream',
  MISSING_DSTACK_SOCKET: 'No dstack guest agent socket or DSTACK_SIMULATOR_ENDPOINT found',
  CLIENT_CERT_UNAVAILABLE: 'Could not obtain a client certificate from the guest agent',
  LOCAL_STACK_FAILED: 'The local attested test stack could not start or stop',
  PG_UNSUPPORTED_VERSION: 'The installed pg / pg-pool lacks internals pg-ra-tls relies on',

  // Evidence (certificate, attestation envelope, quote)
  MALFORMED_CERTIFICATE: 'The server certificate cannot be parsed',
  NO_ATTESTATION: 'The certificate carries no RA-TLS attestation',
  MALFORMED_ATTESTATION: 'The attestation envelope is malformed',
  UNSUPPORTED_ATTESTATION_FORMAT: 'The attestation envelope format is not supported',
  MALFORMED_EVENT_LOG: 'The attestation event log is malformed',
  MALFORMED_QUOTE: 'The quote is malformed',
  NOT_TDX: 'The quote is not an Intel TDX quote',
  PUBKEY_MISMATCH: 'The quote does not bind the TLS key',
  RTMR_MISMATCH: 'The runtime events do not replay to the quote RTMR3',

  // Verification (DCAP engines, collateral, hosted verifiers)
  QUOTE_INVALID: 'The quote failed DCAP verification',
  COLLATERAL_UNAVAILABLE: 'No valid collateral could be obtained',
  COLLATERAL_EXPIRED: 'The collateral is outside its validity window',
  CRL_INVALID: 'A certificate revocation list failed strict checking',
  PCK_REVOKED: 'The platform certificate is revoked',
  ENGINE_DISAGREEMENT: 'The DCAP engines disagree about the quote',
  ENGINE_UNAVAILABLE: 'A DCAP engine could not be loaded',
  VERIFIER_MISMATCH: 'The verifier reported measurements of a different quote',
  INTEL_API_ERROR: 'Intel Trust Authority request failed',
  TOKEN_INVALID: 'The attestation token is invalid',

  // Policy
  MRTD_NOT_ALLOWED: 'MRTD is not in allowedMrtds',
  APP_NOT_ALLOWED: 'app-id is not in allowedAppIds',
  COMPOSE_HASH_NOT_ALLOWED: 'compose-hash is not in allowedComposeHashes',
  APP_IDENTITY_UNVERIFIED: 'The policy needs a verified app identity the evidence lacks',
  DEBUG_MODE: 'The TD runs in debug mode',
  BAD_TCB_STATUS: 'The TCB status is not acceptable',
  SEAM_SIGNER_NOT_ZERO: 'mr_signer_seam (or mr_service_td) is not all zero',
  MEASUREMENT_NOT_ALLOWED: 'The boot chain (MRTD, RTMR0-2) matches no set in allowedMeasurements',
  KMS_NOT_TRUSTED: 'The certificate chain does not end in a trusted KMS root',
  APP_ID_MISMATCH: "The KMS app CA's app-id differs from the attested app-id",

  // Transport and pool
  CONNECT_TIMEOUT: 'TCP connect timed out',
  CONNECT_FAILED: 'TCP connect failed',
  HANDSHAKE_TIMEOUT: 'TLS handshake timed out',
  HANDSHAKE_FAILED: 'TLS handshake failed',
  VERIFY_TIMEOUT: 'Attestation verification timed out',
  CONNECTION_ENDED: 'The connection was ended before it was attested',
  CONNECTION_LOST: 'The connection to the server was lost during the session',
  SERVER_CHANGED: 'The server presented a different certificate than the pinned one',
  REATTEST_FAILED: 'Re-attestation of a pooled connection failed',
  POOL_ENDED: 'The pool has been ended',

  // Cluster discovery and leader following (docs/protocol.md §7)
  MANIFEST_INVALID: 'The leader manifest is malformed',
  MANIFEST_SIGNER_MISMATCH: 'The leader manifest is not signed by the expected signer',
  MANIFEST_EXPIRED: 'The leader manifest has expired',
  MANIFEST_EPOCH_ROLLBACK: 'The leader manifest epoch is lower than one already seen',
  DISCOVERY_FAILED: 'The leader manifest could not be looked up',
  SESSION_ATTRS_MISMATCH: 'The server session does not match target_session_attrs',
  NO_HOST_AVAILABLE: 'No host of a multi-host connection string was usable',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

const kRaTlsError = Symbol.for('pg-ra-tls.error');

/**
 * The single error type of pg-ra-tls.
 *
 * `instanceof RaTlsError` works across two installed copies of the package
 * (the brand is a global symbol), as in undici.
 */
export class RaTlsError extends Error {
  /** Stable machine-readable code; see {@link ErrorCodes}. */
  readonly code: ErrorCode;
  /** Public, non-secret facts about the failure (measurements, statuses, option names). */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RaTlsError';
    this.code = code;
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }

  get [kRaTlsError](): true {
    return true;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return (
      typeof value === 'object' &&
      value !== null &&
      (value as Record<symbol, unknown>)[kRaTlsError] === true
    );
  }
}

/** How deep {@link findRaTlsError} looks through wrappers: far more than any ORM nests. */
const MAX_WRAPPER_DEPTH = 8;

/**
 * Where query layers keep the error they wrap: `cause` (Drizzle's
 * DrizzleQueryError, MikroORM's DriverException, standard Error), `parent` and
 * `original` (Sequelize), `driverError` (TypeORM's QueryFailedError),
 * `previous` (older MikroORM).
 */
const WRAPPED_ERROR_KEYS = ['cause', 'parent', 'original', 'driverError', 'previous'] as const;

/**
 * Prisma Client turns an error with a `code` into a PrismaClientKnownRequestError
 * carrying that code and message, but not the error itself: rebuilt from them.
 */
function fromPrismaShape(value: object): RaTlsError | undefined {
  const { name, code, message, meta } = value as Record<string, unknown>;
  if (name !== 'PrismaClientKnownRequestError' || typeof code !== 'string') return undefined;
  if (!Object.hasOwn(ErrorCodes, code) || typeof message !== 'string') return undefined;
  return new RaTlsError(code as ErrorCode, message, {
    cause: value,
    ...(typeof meta === 'object' && meta !== null
      ? { details: { ...(meta as Record<string, unknown>) } }
      : {}),
  });
}

/**
 * The {@link RaTlsError} behind `error`: `error` itself, or the one a query
 * layer wrapped it in (followed through `cause`, `parent`, `original`,
 * `driverError` and `previous`, at most 8 levels, cycles ignored), or one
 * rebuilt from a PrismaClientKnownRequestError that carries a pg-ra-tls code.
 * Undefined when there is none.
 */
export function findRaTlsError(error: unknown): RaTlsError | undefined {
  const seen = new Set<object>();
  let layer: unknown[] = [error];
  for (let depth = 0; depth <= MAX_WRAPPER_DEPTH && layer.length > 0; depth++) {
    const next: unknown[] = [];
    for (const value of layer) {
      if (typeof value !== 'object' || value === null || seen.has(value)) continue;
      seen.add(value);
      if (value instanceof RaTlsError) return value;
      const prisma = fromPrismaShape(value);
      if (prisma !== undefined) return prisma;
      for (const key of WRAPPED_ERROR_KEYS) {
        let inner: unknown;
        try {
          inner = (value as Record<string, unknown>)[key];
        } catch {
          continue; // a throwing getter hides nothing of ours
        }
        if (inner !== undefined) next.push(inner);
      }
    }
    layer = next;
  }
  return undefined;
}

/**
 * True when `error` is a {@link RaTlsError}, or a query layer's error that
 * wraps one (see {@link findRaTlsError}), optionally with the given code.
 *
 * The type narrows to RaTlsError, which is exact only for the error itself: a
 * wrapper keeps its own `code` and `details`, so read a wrapped error through
 * `findRaTlsError(error)` (`findRaTlsError(error)?.code`).
 */
export function isRaTlsError(error: unknown, code?: ErrorCode): error is RaTlsError {
  const found = error instanceof RaTlsError ? error : findRaTlsError(error);
  return found !== undefined && (code === undefined || found.code === code);
}

/** pg-ra-tls's own checks: `error` itself is a RaTlsError (with `code`), wrappers not followed. */
export function isOwnRaTlsError(error: unknown, code?: ErrorCode): error is RaTlsError {
  return error instanceof RaTlsError && (code === undefined || error.code === code);
}

/**
 * Describes an unknown thrown value for an error message without leaking
 * anything but its message text (engines throw plain strings, Errors, or objects).
 */
export function describeCause(cause: unknown): string {
  if (cause instanceof Error) return cause.message;
  if (typeof cause === 'string') return cause;
  try {
    return JSON.stringify(cause) ?? String(cause);
  } catch {
    return String(cause);
  }
}
