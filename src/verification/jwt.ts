/**
 * Intel Trust Authority attestation tokens (docs/protocol.md §6), checked with
 * `jose`: signature, algorithm allowlist, key selection by `kid`, `exp`/`nbf`
 * with clock tolerance. What jose does not know stays here: the token size
 * cap, the pinned JWKS origin (a token naming a foreign `jku` is refused before
 * any key is looked up), and the mapping of every failure to TOKEN_INVALID.
 *
 * jose is imported on first use only, so `import 'pg-ra-tls'` does not load it.
 */
import type * as Jose from 'jose';
import type { JSONWebKeySet, JWSHeaderParameters, JWTPayload, JWTVerifyGetKey } from 'jose';
import { RaTlsError } from '../errors.js';

/** The token signing algorithms Intel Trust Authority uses (docs/protocol.md §6). */
export const ACCEPTED_JWT_ALGORITHMS = ['PS384', 'RS256'] as const;

/** One of {@link ACCEPTED_JWT_ALGORITHMS}. */
export type JwtAlgorithm = (typeof ACCEPTED_JWT_ALGORITHMS)[number];

/** Largest token accepted; real Trust Authority tokens are a few KiB. */
export const MAX_TOKEN_LENGTH = 256 * 1024;

/** Keys a token is checked against: jose's key selection over a JWKS. */
export type TokenKeys = JWTVerifyGetKey;

let jose: Promise<typeof Jose> | undefined;

/** jose, loaded once on first use. */
export function loadJose(): Promise<typeof Jose> {
  jose ??= import('jose');
  return jose;
}

function tokenInvalid(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): RaTlsError {
  return new RaTlsError('TOKEN_INVALID', message, { details, cause });
}

function isAcceptedAlgorithm(alg: unknown): alg is JwtAlgorithm {
  return typeof alg === 'string' && (ACCEPTED_JWT_ALGORITHMS as readonly string[]).includes(alg);
}

/**
 * Checks that `document` is a JWKS and returns the copy jose gets. A key
 * labelled with one of the accepted algorithms loses that label, so one RSA key
 * serves both (as Trust Authority signs with whichever the request asks for):
 * the algorithm is pinned by the allowlist, never by the key set. Keys labelled
 * for anything else keep their label, and jose never uses them for ours.
 */
export function readJwks(document: unknown): JSONWebKeySet {
  const keys =
    typeof document === 'object' && document !== null && !Array.isArray(document)
      ? (document as Record<string, unknown>)['keys']
      : undefined;
  if (!Array.isArray(keys)) {
    throw tokenInvalid('The JWKS document has no "keys" array');
  }
  return {
    keys: keys
      .filter((jwk): jwk is Record<string, unknown> => typeof jwk === 'object' && jwk !== null)
      .map((jwk) => {
        if (!isAcceptedAlgorithm(jwk['alg'])) return jwk;
        const { alg: _label, ...rest } = jwk;
        return rest;
      }),
  } as JSONWebKeySet;
}

/** jose's key selection over a JWKS document already in hand (no fetching, no cache). */
export async function localTokenKeys(document: unknown): Promise<TokenKeys> {
  const jwks = readJwks(document);
  const { createLocalJWKSet } = await loadJose();
  try {
    return createLocalJWKSet(jwks);
  } catch (error) {
    throw tokenInvalid('The JWKS document is malformed', {}, error);
  }
}

/** What the caller pins a token to. */
export interface TokenCheck {
  /** Key selection (jose's local or remote JWKS set). */
  readonly keys: TokenKeys;
  /** The only origin whose key set a token may name in `jku`. */
  readonly jwksOrigin: string;
  /** For messages: where the keys come from. */
  readonly jwksUrl: string;
  /** The time the token is judged at. */
  readonly now: Date;
  /** Tolerated clock drift for `exp`, `nbf` and `iat`, in ms. */
  readonly clockToleranceMs: number;
}

/** A token whose signature and times were checked. */
export interface VerifiedToken {
  readonly header: Readonly<JWSHeaderParameters>;
  readonly payload: Readonly<JWTPayload>;
  /** `exp` in ms since the epoch. */
  readonly expMs: number;
}

/** ISO time for a message; absurd values (outside Date's range) are shown as numbers. */
function isoTime(seconds: unknown): string {
  const date = new Date(Number(seconds) * 1000);
  return Number.isNaN(date.getTime()) ? `${String(seconds)} (Unix seconds)` : date.toISOString();
}

/** The header, read before any key is looked up: alg allowlist, pinned jku, a kid. */
function checkHeader(jose: typeof Jose, token: string, check: TokenCheck): JWSHeaderParameters {
  if (token.split('.').length !== 3) {
    throw tokenInvalid('The attestation token is not a compact JWS (three base64url parts)');
  }
  let header: JWSHeaderParameters;
  try {
    header = jose.decodeProtectedHeader(token) as JWSHeaderParameters;
  } catch (error) {
    throw tokenInvalid('The attestation token header is not valid base64url JSON', {}, error);
  }
  const { alg, jku, kid } = header;
  if (!isAcceptedAlgorithm(alg)) {
    throw tokenInvalid(
      `The attestation token uses algorithm ${JSON.stringify(alg)}; only ${ACCEPTED_JWT_ALGORITHMS.join(' and ')} are accepted`,
      { alg: typeof alg === 'string' ? alg.slice(0, 40) : String(alg) },
    );
  }
  // docs/protocol.md §6: keys come only from the pinned JWKS; the token's own jku must name it.
  let origin: string | undefined;
  try {
    origin = typeof jku === 'string' ? new URL(jku).origin : undefined;
  } catch {
    // Not a URL: no origin, refused below.
  }
  if (origin !== check.jwksOrigin) {
    const shown = typeof jku === 'string' ? jku.slice(0, 200) : String(jku);
    throw tokenInvalid(
      `The attestation token names key set ${JSON.stringify(shown)}, not the pinned ${check.jwksOrigin}; refusing it (set jwksUrl only if you run your own Trust Authority)`,
      { jku: shown },
    );
  }
  if (typeof kid !== 'string' || kid === '') {
    throw tokenInvalid('The attestation token header names no key id (kid)');
  }
  return header;
}

/** One TOKEN_INVALID (or the key set's own RaTlsError) for whatever jose refused. */
function fromJose(jose: typeof Jose, error: unknown, kid: string, check: TokenCheck): RaTlsError {
  if (error instanceof RaTlsError) return error;
  const { errors } = jose;
  if (error instanceof errors.JWTExpired) {
    const exp = error.payload['exp'];
    return tokenInvalid(
      `The attestation token expired at ${isoTime(exp)}; check the system clock or request a new token`,
      { exp },
      error,
    );
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    const { claim, reason } = error;
    if (claim === 'nbf' && reason === 'check_failed') {
      const nbf = error.payload['nbf'];
      return tokenInvalid(
        `The attestation token is not valid before ${isoTime(nbf)}; check the system clock`,
        { nbf },
        error,
      );
    }
    if (claim === 'exp') {
      return tokenInvalid('The attestation token has no numeric "exp" claim', {}, error);
    }
    return tokenInvalid(
      `The attestation token claim "${claim}" is invalid (${error.message})`,
      { claim },
      error,
    );
  }
  if (error instanceof errors.JWKSNoMatchingKey) {
    return tokenInvalid(
      `The attestation token is signed with key ${kid}, which ${check.jwksUrl} does not publish (as an RSA signing key)`,
      { kid },
      error,
    );
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return tokenInvalid(
      `The attestation token signature does not verify with key ${kid} of ${check.jwksUrl}`,
      { kid },
      error,
    );
  }
  if (error instanceof errors.JWKSTimeout) {
    return new RaTlsError(
      'INTEL_API_ERROR',
      `The JWKS at ${check.jwksUrl} timed out; raise requestTimeout or check connectivity`,
      { cause: error },
    );
  }
  if (error instanceof errors.JWKSInvalid || error instanceof errors.JWKInvalid) {
    return tokenInvalid(`The JWKS at ${check.jwksUrl} is malformed`, { kid }, error);
  }
  const message = error instanceof Error ? error.message : String(error);
  return tokenInvalid(`The attestation token is invalid: ${message.slice(0, 200)}`, {}, error);
}

/**
 * Verifies a compact JWT from Trust Authority: size, header (algorithm, pinned
 * `jku`, `kid`), then jose's signature and time checks under `check.keys`, and
 * `iat` not in the future. Throws TOKEN_INVALID (INTEL_API_ERROR when the key
 * set cannot be fetched).
 */
export async function verifyAttestationToken(
  token: string,
  check: TokenCheck,
): Promise<VerifiedToken> {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
    throw tokenInvalid('The attestation token is empty, not a string, or too large');
  }
  const jose = await loadJose();
  const header = checkHeader(jose, token, check);
  const kid = header.kid as string;
  let payload: JWTPayload;
  try {
    ({ payload } = await jose.jwtVerify(token, check.keys, {
      algorithms: [...ACCEPTED_JWT_ALGORITHMS],
      clockTolerance: check.clockToleranceMs / 1000,
      currentDate: check.now,
      requiredClaims: ['exp'],
    }));
  } catch (error) {
    throw fromJose(jose, error, kid, check);
  }
  const nowMs = check.now.getTime();
  // jose checks iat only against a maximum age; a token from the future is refused here.
  const { iat, exp } = payload;
  if (iat !== undefined && iat * 1000 > nowMs + check.clockToleranceMs) {
    throw tokenInvalid(
      `The attestation token was issued in the future (${isoTime(iat)}); check the system clock`,
      { iat },
    );
  }
  return { header, payload, expMs: (exp as number) * 1000 };
}
