/**
 * Minimal JWS (compact JWT) checking with node:crypto, for the attestation
 * tokens of Intel Trust Authority (docs/protocol.md §6). Pure: no I/O, no clock.
 * Only the RSA algorithms Trust Authority signs with are accepted, so neither
 * `none` nor an HMAC "signed" with a public key can ever pass.
 */
import { constants, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { RaTlsError } from '../errors.js';

/** The token signing algorithms Intel Trust Authority uses (docs/protocol.md §6). */
export const ACCEPTED_JWT_ALGORITHMS = ['PS384', 'RS256'] as const;

/** One of {@link ACCEPTED_JWT_ALGORITHMS}. */
export type JwtAlgorithm = (typeof ACCEPTED_JWT_ALGORITHMS)[number];

/** A compact JWS split into its parts; nothing in it is trusted yet. */
export interface DecodedJwt {
  readonly header: Readonly<Record<string, unknown>>;
  readonly payload: Readonly<Record<string, unknown>>;
  /** `base64url(header) "." base64url(payload)`: the bytes the signature covers. */
  readonly signingInput: string;
  readonly signature: Uint8Array;
}

/** Largest token accepted; real Trust Authority tokens are a few KiB. */
const MAX_TOKEN_LENGTH = 256 * 1024;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

function tokenInvalid(message: string, details: Record<string, unknown> = {}): RaTlsError {
  return new RaTlsError('TOKEN_INVALID', message, { details });
}

function decodeJsonPart(part: string, name: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw tokenInvalid(`The attestation token ${name} is not valid base64url JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw tokenInvalid(`The attestation token ${name} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Splits and decodes a compact JWS. Throws TOKEN_INVALID for anything that is
 * not three base64url parts with JSON-object header and payload.
 */
export function decodeJwt(token: string): DecodedJwt {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
    throw tokenInvalid('The attestation token is empty, not a string, or too large');
  }
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((part) => BASE64URL.test(part))) {
    throw tokenInvalid('The attestation token is not a compact JWS (three base64url parts)');
  }
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
  return {
    header: decodeJsonPart(headerPart, 'header'),
    payload: decodeJsonPart(payloadPart, 'payload'),
    signingInput: `${headerPart}.${payloadPart}`,
    signature: new Uint8Array(Buffer.from(signaturePart, 'base64url')),
  };
}

/**
 * The token's `alg`, if it is one we accept; TOKEN_INVALID otherwise
 * (`none`, every HS*, ES*, and anything unknown are refused).
 */
export function acceptedAlgorithm(header: Readonly<Record<string, unknown>>): JwtAlgorithm {
  const alg = header['alg'];
  if (typeof alg === 'string' && (ACCEPTED_JWT_ALGORITHMS as readonly string[]).includes(alg)) {
    return alg as JwtAlgorithm;
  }
  throw tokenInvalid(
    `The attestation token uses algorithm ${JSON.stringify(alg)}; only ${ACCEPTED_JWT_ALGORITHMS.join(' and ')} are accepted`,
    { alg: typeof alg === 'string' ? alg : String(alg) },
  );
}

/**
 * Checks the RSA signature of `jwt` with `key` under `alg`. Returns false for
 * a wrong signature; never throws for malformed signatures or unusable keys.
 */
export function verifyJwtSignature(jwt: DecodedJwt, alg: JwtAlgorithm, key: KeyObject): boolean {
  if (key.asymmetricKeyType !== 'rsa') return false;
  const data = Buffer.from(jwt.signingInput, 'ascii');
  try {
    if (alg === 'PS384') {
      // RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash.
      return verify(
        'sha384',
        data,
        { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 },
        jwt.signature,
      );
    }
    return verify('sha256', data, { key, padding: constants.RSA_PKCS1_PADDING }, jwt.signature);
  } catch {
    return false;
  }
}

/**
 * Parses a JWKS document into RSA public keys by `kid`. Keys that are not RSA,
 * have no kid, or do not import are skipped; a document that is not a JWKS at
 * all is TOKEN_INVALID.
 */
export function parseJwks(document: unknown): Map<string, KeyObject> {
  const keys =
    typeof document === 'object' && document !== null
      ? (document as Record<string, unknown>)['keys']
      : undefined;
  if (!Array.isArray(keys)) {
    throw tokenInvalid('The JWKS document has no "keys" array');
  }
  const byKid = new Map<string, KeyObject>();
  for (const jwk of keys) {
    if (typeof jwk !== 'object' || jwk === null) continue;
    const { kid, kty, n, e } = jwk as Record<string, unknown>;
    if (
      typeof kid !== 'string' ||
      kty !== 'RSA' ||
      typeof n !== 'string' ||
      typeof e !== 'string'
    ) {
      continue;
    }
    try {
      byKid.set(kid, createPublicKey({ key: { kty, n, e }, format: 'jwk' }));
    } catch {
      // A key that does not import cannot verify anything; the others still can.
    }
  }
  return byKid;
}

/** ISO time for a message; absurd values (outside Date's range) are shown as numbers. */
function isoTime(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `${ms / 1000} (Unix seconds)` : date.toISOString();
}

/**
 * Checks `exp` (required), `nbf` and `iat` against `nowMs` with `skewMs` of
 * tolerance for clock drift. Returns `exp` in ms since epoch.
 */
export function checkTokenTimes(
  payload: Readonly<Record<string, unknown>>,
  nowMs: number,
  skewMs: number,
): number {
  const { exp, nbf, iat } = payload;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) {
    throw tokenInvalid('The attestation token has no numeric "exp" claim');
  }
  const expMs = exp * 1000;
  if (nowMs > expMs + skewMs) {
    throw tokenInvalid(
      `The attestation token expired at ${isoTime(expMs)}; check the system clock or request a new token`,
      { exp },
    );
  }
  if (nbf !== undefined) {
    if (typeof nbf !== 'number' || !Number.isFinite(nbf)) {
      throw tokenInvalid('The attestation token "nbf" claim is not a number');
    }
    if (nowMs < nbf * 1000 - skewMs) {
      throw tokenInvalid(
        `The attestation token is not valid before ${isoTime(nbf * 1000)}; check the system clock`,
        { nbf },
      );
    }
  }
  if (iat !== undefined) {
    if (typeof iat !== 'number' || !Number.isFinite(iat)) {
      throw tokenInvalid('The attestation token "iat" claim is not a number');
    }
    if (iat * 1000 > nowMs + skewMs) {
      throw tokenInvalid(
        `The attestation token was issued in the future (${isoTime(iat * 1000)}); check the system clock`,
        { iat },
      );
    }
  }
  return expMs;
}
