/**
 * IntelApiVerifier: the optional hosted verifier. Sends the quote to Intel
 * Trust Authority and trusts the answer only after checking the returned JWT
 * against the PINNED JWKS of the chosen region (docs/protocol.md §6). Binding,
 * RTMR3 replay and policy stay with pg-ra-tls, as for every verifier.
 */
import { describeCause, RaTlsError } from '../errors.js';
import { parseQuote } from '../evidence/quote.js';
import type { ParsedQuote } from '../evidence/types.js';
import { bytesEqual, normalizeHex } from '../util/bytes.js';
import { parseDuration, parseTimeout } from '../util/duration.js';
import { BodyTooLargeError, readResponseBody } from '../util/http-body.js';
import { assertKnownOptions } from '../util/known-options.js';
import { loadJose, readJwks, type TokenKeys, verifyAttestationToken } from './jwt.js';
import {
  type RaTlsVerifier,
  TCB_STATUSES,
  type TcbStatus,
  type VerificationResult,
  type VerifyOptions,
} from './verifier.js';

/** Trust Authority deployments: API and token-signing JWKS per region (docs/protocol.md §6). */
export const INTEL_TRUST_AUTHORITY_REGIONS = Object.freeze({
  us: Object.freeze({
    apiUrl: 'https://api.trustauthority.intel.com',
    jwksUrl: 'https://portal.trustauthority.intel.com/certs',
  }),
  eu: Object.freeze({
    apiUrl: 'https://api.eu.trustauthority.intel.com',
    jwksUrl: 'https://portal.eu.trustauthority.intel.com/certs',
  }),
});

/** A Trust Authority region. */
export type IntelTrustAuthorityRegion = keyof typeof INTEL_TRUST_AUTHORITY_REGIONS;

/** The environment variable read when the `apiKey` option is absent. */
export const INTEL_API_KEY_ENV = 'INTEL_TRUST_AUTHORITY_API_KEY';

/** Options of {@link IntelApiVerifier}. */
export interface IntelApiVerifierOptions {
  /** Trust Authority attestation API key; default: env `INTEL_TRUST_AUTHORITY_API_KEY`. */
  readonly apiKey?: string;
  /** Default `'us'`. Selects the API URL and the pinned JWKS. */
  readonly region?: IntelTrustAuthorityRegion;
  /** API base URL; overrides the region's (tests, proxies, self-hosted). The JWKS stays pinned. */
  readonly baseUrl?: string;
  /** The only place token signing keys are taken from; default: the region's JWKS. */
  readonly jwksUrl?: string;
  /** Timeout of each HTTP request (attest and JWKS), e.g. `"10s"`. Default 10 s. */
  readonly requestTimeout?: number | string;
  /** How long fetched JWKS keys are reused, e.g. `"1h"`. Default 1 h. */
  readonly jwksCacheTtl?: number | string;
  /** HTTP client; default the global `fetch`. */
  readonly fetch?: typeof fetch;
  /** Clock for token time checks when `verify` gets no `now`; default `new Date()`. */
  readonly now?: () => Date;
}

const INTEL_API_VERIFIER_OPTION_KEYS = [
  'apiKey',
  'region',
  'baseUrl',
  'jwksUrl',
  'requestTimeout',
  'jwksCacheTtl',
  'fetch',
  'now',
] as const satisfies readonly (keyof IntelApiVerifierOptions)[];

const DEFAULT_REQUEST_TIMEOUT = '10s';
const DEFAULT_JWKS_CACHE_TTL = '1h';
/** Tolerated clock drift for exp/nbf/iat. */
const CLOCK_SKEW_MS = 60_000;
/** Cap on response bodies: tokens and JWKS are a few KiB. */
const MAX_RESPONSE_BYTES = 1024 * 1024;
/** How much of an API error body goes into a message. */
const MAX_ERROR_TEXT = 300;
const MEASUREMENT_BYTES = 48;
const REPORT_DATA_BYTES = 64;

function badConfig(option: string, message: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', message, { details: { option } });
}

function isLoopback(url: URL): boolean {
  const host = url.hostname;
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Parses an endpoint option. Plain http is allowed only to loopback: the API
 * key travels in a header, and the JWKS is the root of trust of the token.
 */
function endpointOption(value: string, option: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw badConfig(option, `${option} must be an absolute URL, got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url))) {
    throw badConfig(
      option,
      `${option} must use https (plain http is accepted only for 127.0.0.1/localhost), got ${url.origin}`,
    );
  }
  return url;
}

interface ResolvedConfig {
  readonly attestUrl: string;
  readonly jwksUrl: string;
  readonly jwksOrigin: string;
  readonly timeoutMs: number;
  readonly jwksTtlMs: number;
}

function resolveConfig(options: IntelApiVerifierOptions): ResolvedConfig {
  const region = options.region ?? 'us';
  if (!Object.hasOwn(INTEL_TRUST_AUTHORITY_REGIONS, region)) {
    throw badConfig('region', `region must be 'us' or 'eu', got ${JSON.stringify(region)}`);
  }
  const defaults = INTEL_TRUST_AUTHORITY_REGIONS[region];
  const base = endpointOption(options.baseUrl ?? defaults.apiUrl, 'baseUrl');
  const jwks = endpointOption(options.jwksUrl ?? defaults.jwksUrl, 'jwksUrl');
  return Object.freeze({
    attestUrl: `${base.href.replace(/\/+$/, '')}/appraisal/v2/attest`,
    jwksUrl: jwks.href,
    jwksOrigin: jwks.origin,
    timeoutMs: parseTimeout(options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT, 'requestTimeout'),
    jwksTtlMs: parseDuration(options.jwksCacheTtl ?? DEFAULT_JWKS_CACHE_TTL, 'jwksCacheTtl'),
  });
}

function tokenInvalid(message: string, details: Record<string, unknown> = {}): RaTlsError {
  return new RaTlsError('TOKEN_INVALID', message, { details });
}

function hexClaim(claims: Record<string, unknown>, name: string, bytes: number): string {
  const value = claims[name];
  const hex = typeof value === 'string' ? normalizeHex(value) : undefined;
  if (hex === undefined || hex.length !== bytes * 2) {
    throw tokenInvalid(
      `The attestation token claim ${name} is missing or not ${bytes} bytes of hex; this is not a TDX token`,
      { claim: name },
    );
  }
  return hex;
}

function booleanClaim(claims: Record<string, unknown>, name: string): boolean | undefined {
  const value = claims[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') {
    throw tokenInvalid(`The attestation token claim ${name} is not a boolean`, { claim: name });
  }
  return value;
}

/**
 * Debug if ANY source says so: the two boolean claims and, when present, the
 * td_attributes debug bit (docs/protocol.md §2). A token stating none is refused.
 */
function isDebugFromClaims(claims: Record<string, unknown>): boolean {
  const stated = [
    booleanClaim(claims, 'tdx_is_debuggable'),
    booleanClaim(claims, 'tdx_td_attributes_debug'),
  ];
  if (claims['tdx_td_attributes'] !== undefined) {
    const attributes = hexClaim(claims, 'tdx_td_attributes', 8);
    stated.push((Number.parseInt(attributes.slice(0, 2), 16) & 0x01) === 1);
  }
  const known = stated.filter((value): value is boolean => value !== undefined);
  if (known.length === 0) {
    throw tokenInvalid(
      'The attestation token states no debug attribute (tdx_is_debuggable, tdx_td_attributes_debug or tdx_td_attributes)',
    );
  }
  return known.includes(true);
}

function tcbStatusFromClaims(claims: Record<string, unknown>): TcbStatus {
  const status = claims['attester_tcb_status'];
  if (typeof status !== 'string') {
    throw tokenInvalid('The attestation token has no attester_tcb_status claim');
  }
  // A status this library does not know must not pass as a known one; policy rejects Unknown.
  return (TCB_STATUSES as readonly string[]).includes(status) ? (status as TcbStatus) : 'Unknown';
}

function advisoryIdsFromClaims(claims: Record<string, unknown>): string[] {
  const ids = claims['attester_advisory_ids'];
  if (ids === undefined || ids === null) return [];
  if (!Array.isArray(ids) || !ids.every((id) => typeof id === 'string')) {
    throw tokenInvalid(
      'The attestation token claim attester_advisory_ids is not a list of strings',
    );
  }
  return [...ids];
}

/**
 * Maps verified Trust Authority claims to a {@link VerificationResult}. Reads
 * flat (token `ver` 1.x) claims, or the `tdx` object of `ver` 2.x tokens.
 * Pure; call only on a token whose signature and times were checked.
 */
export function verificationResultFromClaims(
  payload: Readonly<Record<string, unknown>>,
  validUntil: number,
): VerificationResult {
  const nested = payload['tdx'];
  const claims = (
    typeof nested === 'object' && nested !== null && !Array.isArray(nested) ? nested : payload
  ) as Record<string, unknown>;
  return Object.freeze({
    mrtd: hexClaim(claims, 'tdx_mrtd', MEASUREMENT_BYTES),
    rtmr0: hexClaim(claims, 'tdx_rtmr0', MEASUREMENT_BYTES),
    rtmr1: hexClaim(claims, 'tdx_rtmr1', MEASUREMENT_BYTES),
    rtmr2: hexClaim(claims, 'tdx_rtmr2', MEASUREMENT_BYTES),
    rtmr3: hexClaim(claims, 'tdx_rtmr3', MEASUREMENT_BYTES),
    tcbStatus: tcbStatusFromClaims(claims),
    advisoryIds: Object.freeze(advisoryIdsFromClaims(claims)),
    isDebug: isDebugFromClaims(claims),
    reportData: new Uint8Array(
      Buffer.from(hexClaim(claims, 'tdx_report_data', REPORT_DATA_BYTES), 'hex'),
    ),
    verifier: 'intel-api',
    validUntil,
  });
}

/**
 * A genuine token about ANOTHER quote (replayed by a proxy at baseUrl, say)
 * must not vouch for this one: the measurements and report_data it states
 * must be the submitted quote's own.
 */
function assertSameQuote(result: VerificationResult, quote: ParsedQuote): void {
  const fields = ['mrtd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3'] as const;
  const differing: string[] = fields.filter((field) => result[field] !== quote[field]);
  if (!bytesEqual(result.reportData, quote.reportData)) differing.push('reportData');
  if (differing.length > 0) {
    throw new RaTlsError(
      'VERIFIER_MISMATCH',
      `Intel Trust Authority returned a token about a different quote (${differing.join(', ')} differ); refusing it`,
      { details: { differing, tokenMrtd: result.mrtd, quoteMrtd: quote.mrtd } },
    );
  }
}

async function readCapped(response: Response, what: string): Promise<string> {
  try {
    return Buffer.from(await readResponseBody(response, MAX_RESPONSE_BYTES)).toString('utf8');
  } catch (error) {
    if (!(error instanceof BodyTooLargeError)) throw error;
    throw new RaTlsError(
      'INTEL_API_ERROR',
      `${what} answered more than ${MAX_RESPONSE_BYTES} bytes; check baseUrl/jwksUrl point at Intel Trust Authority`,
    );
  }
}

/**
 * Verifies quotes with Intel Trust Authority (docs/protocol.md §6).
 *
 * Closes the gap of the existing connectors, which fetch signing keys from
 * whatever `jku` the token names: here keys come only from the pinned JWKS
 * URL, and a token whose `jku` points at another origin is refused.
 */
export class IntelApiVerifier implements RaTlsVerifier {
  /** Verifier name in results, logs and telemetry. */
  readonly name = 'intel-api';
  readonly #apiKey: string;
  readonly #config: ResolvedConfig;
  readonly #fetch: typeof fetch;
  readonly #now: () => Date;
  #keySet: TokenKeys | undefined;

  /** Throws BAD_CONFIG for a missing API key or unusable options, before any I/O. */
  constructor(options: IntelApiVerifierOptions = {}) {
    assertKnownOptions(options, INTEL_API_VERIFIER_OPTION_KEYS, 'IntelApiVerifier');
    const apiKey = options.apiKey ?? process.env[INTEL_API_KEY_ENV];
    if (apiKey === undefined || apiKey.trim() === '') {
      throw badConfig(
        'apiKey',
        `IntelApiVerifier needs an Intel Trust Authority attestation API key: pass the apiKey option or set ${INTEL_API_KEY_ENV}`,
      );
    }
    this.#apiKey = apiKey.trim();
    this.#config = resolveConfig(options);
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#now = options.now ?? (() => new Date());
  }

  /** The pinned JWKS URL token signing keys are fetched from. */
  get jwksUrl(): string {
    return this.#config.jwksUrl;
  }

  /**
   * Appraises `quote` with Trust Authority and returns what the verified token
   * states. Throws INTEL_API_ERROR (HTTP, network, timeout) or TOKEN_INVALID.
   */
  async verify(quote: Uint8Array, options: VerifyOptions = {}): Promise<VerificationResult> {
    const now = options.now ?? this.#now();
    // Parsed first: a malformed quote fails here, before anything is sent to Intel.
    const parsed = parseQuote(quote);
    const token = await this.#requestToken(quote, options.signal);
    const { payload, expMs } = await verifyAttestationToken(token, {
      keys: await this.#keys(),
      jwksOrigin: this.#config.jwksOrigin,
      jwksUrl: this.#config.jwksUrl,
      now,
      clockToleranceMs: CLOCK_SKEW_MS,
    });
    const result = verificationResultFromClaims(payload, expMs);
    assertSameQuote(result, parsed);
    return result;
  }

  /** Forgets cached signing keys. */
  close(): void {
    this.#keySet = undefined;
  }

  /**
   * jose's remote key set over the pinned JWKS URL: keys cached for
   * jwksCacheTtl, an unknown kid refetches once, concurrent refetches share
   * one request. The request itself is ours (timeout, size cap, no redirects).
   */
  async #keys(): Promise<TokenKeys> {
    if (this.#keySet) return this.#keySet;
    const { createRemoteJWKSet, customFetch } = await loadJose();
    this.#keySet ??= createRemoteJWKSet(new URL(this.#config.jwksUrl), {
      timeoutDuration: Math.ceil(this.#config.timeoutMs),
      cacheMaxAge: this.#config.jwksTtlMs,
      // An unknown kid refetches at once, as before jose: tokens come only from the API we asked.
      cooldownDuration: 0,
      [customFetch]: () => this.#fetchJwks(),
    });
    return this.#keySet;
  }

  async #fetchJwks(): Promise<Response> {
    const what = `The JWKS at ${this.#config.jwksUrl}`;
    const { status, body } = await this.#send(
      this.#config.jwksUrl,
      { method: 'GET', headers: { Accept: 'application/json' } },
      what,
    );
    if (status !== 200) {
      throw new RaTlsError('INTEL_API_ERROR', `${what} answered HTTP ${status}`, {
        details: { status, url: this.#config.jwksUrl },
      });
    }
    let document: unknown;
    try {
      document = JSON.parse(body);
    } catch {
      throw tokenInvalid(`${what} is not JSON; check jwksUrl`);
    }
    return Response.json(readJwks(document));
  }

  async #requestToken(quote: Uint8Array, signal: AbortSignal | undefined): Promise<string> {
    const url = this.#config.attestUrl;
    const what = `Intel Trust Authority (${url})`;
    const { status, body } = await this.#send(
      url,
      {
        method: 'POST',
        headers: {
          'x-api-key': this.#apiKey,
          Accept: 'application/json',
          'Content-Type': 'application/json',
        },
        body: JSON.stringify({
          quote: Buffer.from(quote.buffer, quote.byteOffset, quote.byteLength).toString('base64'),
          token_signing_alg: 'PS384',
        }),
      },
      what,
      signal,
    );
    if (status < 200 || status > 299) {
      const hint =
        status === 401 || status === 403
          ? `; check the API key (apiKey option or ${INTEL_API_KEY_ENV}) and its region`
          : '';
      const text = this.#redact(body).slice(0, MAX_ERROR_TEXT);
      throw new RaTlsError(
        'INTEL_API_ERROR',
        `${what} answered HTTP ${status}${text ? `: ${text}` : ''}${hint}`,
        { details: { status } },
      );
    }
    let token: unknown;
    try {
      token = (JSON.parse(body) as Record<string, unknown> | null)?.['token'];
    } catch {
      // Not JSON: no token, refused below.
    }
    if (typeof token !== 'string') {
      throw new RaTlsError('INTEL_API_ERROR', `${what} answered HTTP ${status} without a token`, {
        details: { status },
      });
    }
    return token;
  }

  /**
   * One HTTP exchange, body included, bounded by requestTimeout. Raced against
   * the abort signal so that even a fetch that ignores signals cannot hang us.
   */
  async #send(
    url: string,
    init: RequestInit,
    what: string,
    signal?: AbortSignal,
  ): Promise<{ status: number; body: string }> {
    const timeout = AbortSignal.timeout(this.#config.timeoutMs);
    const combined = signal ? AbortSignal.any([timeout, signal]) : timeout;
    const exchange = (async () => {
      const response = await this.#fetch(url, { ...init, signal: combined, redirect: 'error' });
      return { status: response.status, body: await readCapped(response, what) };
    })();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(combined.reason);
      // Removed in `finally`, whether or not it fired.
      if (combined.aborted) onAbort();
      else combined.addEventListener('abort', onAbort);
    });
    // The loser of the race must not become an unhandled rejection.
    exchange.catch(() => {});
    aborted.catch(() => {});
    try {
      return await Promise.race([exchange, aborted]);
    } catch (error) {
      if (error instanceof RaTlsError) throw error;
      if (timeout.aborted) {
        throw new RaTlsError(
          'INTEL_API_ERROR',
          `${what} timed out after ${this.#config.timeoutMs} ms; raise requestTimeout or check connectivity`,
          { details: { timeoutMs: this.#config.timeoutMs } },
        );
      }
      if (signal?.aborted) {
        throw new RaTlsError('INTEL_API_ERROR', `${what} was aborted by the caller`, {
          cause: signal.reason,
        });
      }
      throw new RaTlsError('INTEL_API_ERROR', `${what} failed: ${this.#describe(error)}`);
    } finally {
      if (onAbort) combined.removeEventListener('abort', onAbort);
    }
  }

  /** Message of a network error and its cause (undici hides the reason in `cause`), redacted. */
  #describe(error: unknown): string {
    const cause = error instanceof Error ? error.cause : undefined;
    const text = describeCause(error) + (cause === undefined ? '' : ` (${describeCause(cause)})`);
    return this.#redact(text);
  }

  /** Removes the API key and control characters from text that goes into a message. */
  #redact(text: string): string {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
    const clean = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
    return clean.split(this.#apiKey).join('[redacted]');
  }
}
