/**
 * DCAP collateral (PROTOCOL.md §3): its type, in the engines' own shape; its
 * validity window; the PCK facts of a quote that select it (FMSPC, CA); a PCCS
 * v4 client; and a per-FMSPC cache that holds collateral until its earliest
 * nextUpdate.
 */
import { X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  Certificate,
  CRLDistributionPoints,
  id_ce_cRLDistributionPoints,
} from '@peculiar/asn1-x509';
import { Quote } from '@phala/dcap-qvl';
import { describeCause, type ErrorCode, RaTlsError } from '../errors.js';
import { fromHex, normalizeHex, toHex } from '../util/bytes.js';
import { parseDuration } from '../util/duration.js';
import { BodyTooLargeError, readResponseBody } from '../util/http-body.js';
import { parseCrl, pemCertificates } from './crl.js';

/** Binary collateral fields: lowercase/uppercase hex (as in PCCS answers and fixtures), bytes, or a byte array. */
export type CollateralBytes = string | Uint8Array | readonly number[];

/**
 * DCAP collateral (`QuoteCollateralV3`) in the shape both engines take, so
 * fixtures, `@phala/dcap-qvl`'s `getCollateral` (once its
 * `pck_certificate_chain` is removed) and the test authority plug in as they are.
 */
export interface Collateral {
  /** PEM: the CA that issued the PCK CRL, then the root CA. */
  readonly pck_crl_issuer_chain: string;
  /** DER of the root CA CRL. */
  readonly root_ca_crl: CollateralBytes;
  /** DER of the PCK CRL. */
  readonly pck_crl: CollateralBytes;
  /** PEM: the TCB signing certificate, then the root CA. */
  readonly tcb_info_issuer_chain: string;
  /** The exact signed TCB info JSON text. */
  readonly tcb_info: string;
  /** Raw r‖s ECDSA signature over `tcb_info`. */
  readonly tcb_info_signature: CollateralBytes;
  /** PEM: the QE identity signing certificate, then the root CA. */
  readonly qe_identity_issuer_chain: string;
  /** The exact signed QE identity JSON text. */
  readonly qe_identity: string;
  /** Raw r‖s ECDSA signature over `qe_identity`. */
  readonly qe_identity_signature: CollateralBytes;
}

/** Collateral with every binary field as lowercase hex: the form the WASM engine requires. */
export interface NormalizedCollateral {
  readonly pck_crl_issuer_chain: string;
  readonly root_ca_crl: string;
  readonly pck_crl: string;
  readonly tcb_info_issuer_chain: string;
  readonly tcb_info: string;
  readonly tcb_info_signature: string;
  readonly qe_identity_issuer_chain: string;
  readonly qe_identity: string;
  readonly qe_identity_signature: string;
}

/** When a collateral set is usable: [notBefore, nextUpdate) in ms since epoch. */
export interface CollateralWindow {
  /** Latest issueDate / thisUpdate of TCB info, QE identity and both CRLs. */
  readonly notBefore: number;
  /** Earliest nextUpdate of TCB info, QE identity and both CRLs. */
  readonly nextUpdate: number;
}

/** Which PCK CA issued a platform's PCK certificate (selects the PCK CRL). */
export type PckCa = 'platform' | 'processor';

/** The PCK facts of a quote that select its collateral. */
export interface PckInfo {
  /** FMSPC from the PCK certificate's Intel SGX extension, 12 lowercase hex characters. */
  readonly fmspc: string;
  readonly ca: PckCa;
  /** The quote's PCK certificate chain (DER, leaf first). */
  readonly chain: readonly Uint8Array[];
}

const STRING_FIELDS = [
  'pck_crl_issuer_chain',
  'tcb_info_issuer_chain',
  'tcb_info',
  'qe_identity_issuer_chain',
  'qe_identity',
] as const;
const BYTE_FIELDS = [
  'root_ca_crl',
  'pck_crl',
  'tcb_info_signature',
  'qe_identity_signature',
] as const;

/**
 * Validates `collateral` and returns a frozen copy with binary fields as hex.
 * `code` is the error code for malformed input (BAD_CONFIG for collateral the
 * user passed, COLLATERAL_UNAVAILABLE for a PCCS answer).
 */
export function normalizeCollateral(
  collateral: Collateral,
  code: ErrorCode = 'BAD_CONFIG',
): NormalizedCollateral {
  const fail = (field: string, what: string): never => {
    throw new RaTlsError(code, `Collateral field ${field} ${what}`, { details: { field } });
  };
  if (typeof collateral !== 'object' || collateral === null) fail('(all)', 'is missing');
  const out: Record<string, string> = {};
  for (const field of STRING_FIELDS) {
    const value: unknown = collateral[field];
    if (typeof value !== 'string' || value.length === 0) fail(field, 'must be a non-empty string');
    out[field] = value as string;
  }
  for (const field of BYTE_FIELDS) {
    const hex = bytesToHex(collateral[field] as unknown);
    if (hex === undefined || hex.length === 0) {
      fail(field, 'must be non-empty hex, a Uint8Array or an array of bytes');
    }
    out[field] = hex as string;
  }
  return Object.freeze(out as unknown as NormalizedCollateral);
}

function bytesToHex(value: unknown): string | undefined {
  if (typeof value === 'string') return normalizeHex(value);
  if (value instanceof Uint8Array) return toHex(value);
  if (Array.isArray(value) && value.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
    return toHex(Uint8Array.from(value as number[]));
  }
  return undefined;
}

/**
 * The validity window of a collateral set. Throws `code` (default
 * COLLATERAL_UNAVAILABLE) when its JSON or CRLs cannot be read.
 */
export function collateralWindow(
  collateral: NormalizedCollateral,
  code: ErrorCode = 'COLLATERAL_UNAVAILABLE',
): CollateralWindow {
  const starts: number[] = [];
  const ends: number[] = [];
  for (const [field, label] of [
    ['tcb_info', 'TCB info'],
    ['qe_identity', 'QE identity'],
  ] as const) {
    const dates = readIssueDates(collateral[field]);
    if (dates === undefined) {
      throw new RaTlsError(
        code,
        `The collateral ${label} is not JSON with issueDate and nextUpdate; fetch fresh collateral`,
        { details: { field } },
      );
    }
    starts.push(dates.issueDate);
    ends.push(dates.nextUpdate);
  }
  for (const [field, label] of [
    ['root_ca_crl', 'root CA CRL'],
    ['pck_crl', 'PCK CRL'],
  ] as const) {
    const crl = parseCrl(fromHex(collateral[field]), label);
    starts.push(crl.thisUpdate.getTime());
    if (crl.nextUpdate !== undefined) ends.push(crl.nextUpdate.getTime());
  }
  return { notBefore: Math.max(...starts), nextUpdate: Math.min(...ends) };
}

function readIssueDates(json: string): { issueDate: number; nextUpdate: number } | undefined {
  try {
    const parsed: unknown = JSON.parse(json);
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { issueDate, nextUpdate } = parsed as Record<string, unknown>;
    if (typeof issueDate !== 'string' || typeof nextUpdate !== 'string') return undefined;
    const dates = { issueDate: Date.parse(issueDate), nextUpdate: Date.parse(nextUpdate) };
    return Number.isNaN(dates.issueDate) || Number.isNaN(dates.nextUpdate) ? undefined : dates;
  } catch {
    return undefined;
  }
}

// Intel SGX PCK certificate extension and its FMSPC member (Intel PCK Certificate and CRL spec).
const SGX_EXTENSION_OID = '1.2.840.113741.1.13.1';
const FMSPC_OID_CONTENT = Uint8Array.of(0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01, 0x04);

/**
 * Reads the quote's PCK certificate chain (certification data type 5) and the
 * FMSPC and CA that select its collateral. Throws MALFORMED_QUOTE.
 */
export function readPckInfo(quote: Uint8Array): PckInfo {
  let pem: string;
  try {
    pem = Buffer.from(Quote.parse(quote).rawCertChain()).toString('utf8');
  } catch (cause) {
    throw new RaTlsError(
      'MALFORMED_QUOTE',
      `The quote's PCK certificate chain cannot be read (${describeCause(cause)}); only quotes carrying their PCK chain (certification data type 5) are supported`,
      { cause },
    );
  }
  const chain = pemCertificates(pem);
  const leaf = chain[0];
  if (leaf === undefined) {
    throw new RaTlsError('MALFORMED_QUOTE', 'The quote carries an empty PCK certificate chain');
  }
  const fmspc = readFmspc(leaf);
  let issuer: string;
  try {
    issuer = new X509Certificate(leaf).issuer;
  } catch (cause) {
    throw new RaTlsError('MALFORMED_QUOTE', "The quote's PCK certificate cannot be parsed", {
      cause,
    });
  }
  // Intel names the issuing CA in the issuer CN; the PCK CRL is fetched per CA.
  const ca: PckCa = /Platform CA/i.test(issuer) ? 'platform' : 'processor';
  return { fmspc, ca, chain };
}

function readFmspc(leafDer: Uint8Array): string {
  try {
    const cert = AsnConvert.parse(leafDer, Certificate);
    const extension = cert.tbsCertificate.extensions?.find((e) => e.extnID === SGX_EXTENSION_OID);
    if (extension !== undefined) {
      const value = new Uint8Array(extension.extnValue.buffer);
      // SEQUENCE OF SEQUENCE { OID, value }
      const outer = readTlv(value, 0);
      for (let at = outer.contentStart; at < outer.end; ) {
        const entry = readTlv(value, at);
        const oid = readTlv(value, entry.contentStart);
        const member = readTlv(value, oid.end);
        const oidContent = value.subarray(oid.contentStart, oid.end);
        if (oid.tag === 0x06 && toHex(oidContent) === toHex(FMSPC_OID_CONTENT)) {
          if (member.tag === 0x04 && member.end - member.contentStart === 6) {
            return toHex(value.subarray(member.contentStart, member.end));
          }
        }
        at = entry.end;
      }
    }
  } catch (cause) {
    throw new RaTlsError('MALFORMED_QUOTE', "The quote's PCK certificate cannot be parsed", {
      cause,
    });
  }
  throw new RaTlsError(
    'MALFORMED_QUOTE',
    "The quote's PCK certificate has no FMSPC in its Intel SGX extension",
  );
}

interface Tlv {
  readonly tag: number;
  readonly contentStart: number;
  readonly end: number;
}

// Minimal DER TLV reader for the SGX extension's nested SEQUENCEs.
function readTlv(bytes: Uint8Array, offset: number): Tlv {
  const tag = bytes[offset];
  let lengthByte = bytes[offset + 1];
  if (tag === undefined || lengthByte === undefined) throw new RangeError('truncated DER');
  let at = offset + 2;
  let length = lengthByte;
  if (lengthByte & 0x80) {
    const count = lengthByte & 0x7f;
    if (count === 0 || count > 4) throw new RangeError('unsupported DER length');
    length = 0;
    for (let i = 0; i < count; i++) {
      lengthByte = bytes[at++];
      if (lengthByte === undefined) throw new RangeError('truncated DER');
      length = length * 256 + lengthByte;
    }
  }
  const end = at + length;
  if (end > bytes.length) throw new RangeError('truncated DER');
  return { tag, contentStart: at, end };
}

/** Options of {@link PccsClient}. */
export interface PccsClientOptions {
  /** PCCS base URL (PCCS v4 API). Default: Intel PCS `https://api.trustedservices.intel.com`. */
  readonly url?: string;
  /** Timeout of every HTTP request, ms or a string like `"10s"`. Default 10 s. */
  readonly requestTimeout?: number | string;
  /** fetch implementation. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

/** Intel's Provisioning Certification Service (PROTOCOL.md §3). */
export const INTEL_PCS_URL = 'https://api.trustedservices.intel.com';

const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

/**
 * Largest PCCS response body read (1 MiB). Real answers (TCB info, QE
 * identity, CRLs) are a few KiB; a PCCS is untrusted and must not make us hold
 * more, so reading stops at this size and the request fails.
 */
export const MAX_PCCS_RESPONSE_BYTES = 1024 * 1024;

/**
 * Fetches TDX collateral from a PCCS speaking the v4 API (Intel PCS, Intel's
 * PCCS, Phala's mirror, or the local test server). Every request has a timeout;
 * every failure is COLLATERAL_UNAVAILABLE naming the URL and the reason.
 */
export class PccsClient {
  /** Normalised base URL (no trailing slash, no `/sgx|tdx/certification/v4`). */
  readonly url: string;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: PccsClientOptions = {}) {
    this.url = normalizePccsUrl(options.url ?? INTEL_PCS_URL);
    this.#timeoutMs = parseDuration(
      options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT_MS,
      'requestTimeout',
    );
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** Fetches a full, fresh collateral set for a TDX platform. */
  async fetchCollateral(pck: {
    readonly fmspc: string;
    readonly ca: PckCa;
  }): Promise<NormalizedCollateral> {
    const batch = new AbortController();
    const fmspc = pck.fmspc.toUpperCase();
    try {
      const [pckCrl, tcb, qe] = await Promise.all([
        this.#get(`/sgx/certification/v4/pckcrl?ca=${pck.ca}&encoding=der`, batch.signal),
        this.#get(`/tdx/certification/v4/tcb?fmspc=${encodeURIComponent(fmspc)}`, batch.signal),
        this.#get('/tdx/certification/v4/qe/identity?update=standard', batch.signal),
      ]);
      const tcbInfo = signedJsonMember(tcb, 'tcbInfo');
      const qeIdentity = signedJsonMember(qe, 'enclaveIdentity');
      const qeChain = issuerChainHeader(qe, 'SGX-Enclave-Identity-Issuer-Chain');
      const collateral: Collateral = {
        pck_crl_issuer_chain: issuerChainHeader(pckCrl, 'SGX-PCK-CRL-Issuer-Chain'),
        pck_crl: crlBytes(pckCrl),
        tcb_info_issuer_chain: issuerChainHeader(
          tcb,
          'TCB-Info-Issuer-Chain',
          'SGX-TCB-Info-Issuer-Chain',
        ),
        tcb_info: tcbInfo.text,
        tcb_info_signature: tcbInfo.signature,
        qe_identity_issuer_chain: qeChain,
        qe_identity: qeIdentity.text,
        qe_identity_signature: qeIdentity.signature,
        root_ca_crl: await this.#rootCaCrl(qeChain, batch.signal),
      };
      return normalizeCollateral(collateral, 'COLLATERAL_UNAVAILABLE');
    } catch (error) {
      batch.abort();
      if (error instanceof RaTlsError) throw error;
      throw new RaTlsError(
        'COLLATERAL_UNAVAILABLE',
        `The PCCS at ${this.url} returned unusable collateral for FMSPC ${fmspc}: ${describeCause(error)}`,
        { cause: error, details: { pccsUrl: this.url, fmspc } },
      );
    }
  }

  // Intel PCS has no root CA CRL endpoint: the CRL is published at the root
  // certificate's CRL distribution point. A PCCS serves it (hex) at /rootcacrl.
  async #rootCaCrl(qeIssuerChain: string, signal: AbortSignal): Promise<Uint8Array> {
    if (!this.url.startsWith(INTEL_PCS_URL)) {
      const response = await this.#get('/sgx/certification/v4/rootcacrl', signal, [404]);
      if (response.status !== 404) return crlBytes(response);
    }
    const root = pemCertificates(qeIssuerChain).at(-1);
    const url = root === undefined ? undefined : crlDistributionPoint(root);
    if (url === undefined) {
      throw new RaTlsError(
        'COLLATERAL_UNAVAILABLE',
        `The PCCS at ${this.url} serves no root CA CRL and the root certificate names no CRL distribution point`,
        { details: { pccsUrl: this.url } },
      );
    }
    return crlBytes(await this.#get(url, signal));
  }

  async #get(pathOrUrl: string, batch: AbortSignal, allowed: number[] = []): Promise<Fetched> {
    const url = pathOrUrl.startsWith('/') ? `${this.url}${pathOrUrl}` : pathOrUrl;
    const controller = new AbortController();
    const onBatchAbort = (): void => controller.abort();
    batch.addEventListener('abort', onBatchAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.#timeoutMs);
    try {
      const response = await this.#fetch(url, { signal: controller.signal });
      const body = await readResponseBody(response, MAX_PCCS_RESPONSE_BYTES);
      if (!response.ok && !allowed.includes(response.status)) {
        throw new RaTlsError(
          'COLLATERAL_UNAVAILABLE',
          `PCCS request ${url} failed with HTTP ${response.status}; check pccsUrl or try again later`,
          { details: { url, status: response.status } },
        );
      }
      return { status: response.status, headers: response.headers, body, url };
    } catch (error) {
      if (error instanceof RaTlsError) throw error;
      const reason = timedOut
        ? `timed out after ${this.#timeoutMs} ms`
        : error instanceof BodyTooLargeError
          ? `answered more than ${error.limit} bytes (a PCCS answer is a few KiB; refusing to read on)`
          : `failed: ${describeCause(error)}`;
      throw new RaTlsError(
        'COLLATERAL_UNAVAILABLE',
        `PCCS request ${url} ${reason}; check pccsUrl and network access, or pass collateral for offline use`,
        { cause: error, details: { url, timedOut } },
      );
    } finally {
      clearTimeout(timer);
      batch.removeEventListener('abort', onBatchAbort);
    }
  }
}

interface Fetched {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Uint8Array;
  readonly url: string;
}

/** Strips a trailing slash and a `/sgx|tdx/certification/v4` suffix; throws BAD_CONFIG for non-http(s) URLs. */
export function normalizePccsUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    parsed = new URL('invalid:');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new RaTlsError(
      'BAD_CONFIG',
      `pccsUrl must be an http(s) URL, got ${JSON.stringify(url)}`,
      {
        details: { option: 'pccsUrl' },
      },
    );
  }
  return url.replace(/\/+$/, '').replace(/\/(sgx|tdx)\/certification\/v4$/, '');
}

function issuerChainHeader(response: Fetched, ...names: string[]): string {
  for (const name of names) {
    const value = response.headers.get(name);
    if (value) return decodeURIComponent(value);
  }
  throw new Error(`${response.url} did not send the ${names[0]} header`);
}

// A CRL arrives as DER (PCS with encoding=der), hex text (PCCS /rootcacrl) or PEM.
function crlBytes(response: Fetched): Uint8Array {
  const body = response.body;
  if (body[0] === 0x30) return body;
  const text = Buffer.from(body).toString('utf8').trim();
  const pem = /-----BEGIN X509 CRL-----([A-Za-z0-9+/=\s]+)-----END X509 CRL-----/.exec(text);
  if (pem) return new Uint8Array(Buffer.from((pem[1] ?? '').replace(/\s+/g, ''), 'base64'));
  const hex = normalizeHex(text);
  if (hex !== undefined && hex.length > 0) return fromHex(hex);
  throw new Error(`${response.url} did not return a CRL (DER, PEM or hex)`);
}

/**
 * The exact text of a top-level member of a signed PCS JSON body such as
 * `{"tcbInfo":{...},"signature":"..."}`: the signature covers those bytes, so
 * the member must not be re-serialised.
 */
function signedJsonMember(response: Fetched, key: string): { text: string; signature: string } {
  const body = Buffer.from(response.body).toString('utf8');
  const parsed = JSON.parse(body) as Record<string, unknown>;
  const signature = parsed['signature'];
  if (typeof signature !== 'string' || typeof parsed[key] !== 'object') {
    throw new Error(`${response.url} did not return {"${key}": ..., "signature": ...}`);
  }
  const text = rawMember(body, key);
  if (text === undefined) throw new Error(`${response.url}: ${key} not found`);
  return { text, signature };
}

// Scans the (already JSON.parse-validated) body for the raw value of a
// top-level key, tracking nesting and skipping strings.
function rawMember(body: string, key: string): string | undefined {
  let depth = 0;
  let currentKey: string | undefined;
  let inValue = false;
  let valueStart = -1;
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch === '"') {
      const start = i;
      for (i++; i < body.length && body[i] !== '"'; i++) if (body[i] === '\\') i++;
      if (depth === 1 && !inValue) currentKey = JSON.parse(body.slice(start, i + 1)) as string;
    } else if (ch === '{' || ch === '[') {
      depth++;
    } else if (depth > 1 && (ch === '}' || ch === ']')) {
      depth--;
    } else if (depth === 1 && ch === ':') {
      inValue = true;
      valueStart = i + 1;
    } else if (depth === 1 && (ch === ',' || ch === '}')) {
      if (inValue && currentKey === key) return body.slice(valueStart, i).trim();
      inValue = false;
      currentKey = undefined;
      if (ch === '}') depth--;
    }
  }
  return undefined;
}

function crlDistributionPoint(rootDer: Uint8Array): string | undefined {
  try {
    const cert = AsnConvert.parse(rootDer, Certificate);
    const ext = cert.tbsCertificate.extensions?.find(
      (e) => e.extnID === id_ce_cRLDistributionPoints,
    );
    if (ext === undefined) return undefined;
    const points = AsnConvert.parse(ext.extnValue.buffer, CRLDistributionPoints);
    for (const point of points) {
      for (const name of point.distributionPoint?.fullName ?? []) {
        if (name.uniformResourceIdentifier?.startsWith('https://')) {
          return name.uniformResourceIdentifier;
        }
      }
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** Where a {@link CollateralCache} gets collateral it does not hold. */
export type CollateralSource = (pck: {
  readonly fmspc: string;
  readonly ca: PckCa;
}) => Promise<NormalizedCollateral>;

interface CacheEntry {
  readonly collateral: NormalizedCollateral;
  readonly window: CollateralWindow;
}

/**
 * Collateral per FMSPC (and PCK CA), kept until its earliest nextUpdate.
 * Concurrent requests for one FMSPC share one fetch; a failed fetch is not
 * cached. Holds no timers.
 */
export class CollateralCache {
  readonly #source: CollateralSource;
  readonly #entries = new Map<string, CacheEntry>();
  readonly #inFlight = new Map<string, Promise<CacheEntry>>();

  constructor(source: CollateralSource) {
    this.#source = source;
  }

  /**
   * Collateral for `pck` that is valid at `now` (ms since epoch) if one is
   * cached, else freshly fetched (which the caller must still check against
   * `now`: a PCCS may serve stale collateral).
   */
  async get(
    pck: { readonly fmspc: string; readonly ca: PckCa },
    now: number,
  ): Promise<{ collateral: NormalizedCollateral; window: CollateralWindow }> {
    const key = `${pck.ca}:${pck.fmspc.toLowerCase()}`;
    const cached = this.#entries.get(key);
    if (cached !== undefined && cached.window.notBefore <= now && now < cached.window.nextUpdate) {
      return cached;
    }
    let pending = this.#inFlight.get(key);
    if (pending === undefined) {
      pending = this.#fetch(key, pck);
      this.#inFlight.set(key, pending);
    }
    return pending;
  }

  /** Forgets every cached collateral set. */
  clear(): void {
    this.#entries.clear();
  }

  async #fetch(
    key: string,
    pck: { readonly fmspc: string; readonly ca: PckCa },
  ): Promise<CacheEntry> {
    try {
      const collateral = await this.#source(pck);
      const entry = { collateral, window: collateralWindow(collateral) };
      this.#entries.set(key, entry);
      return entry;
    } finally {
      this.#inFlight.delete(key);
    }
  }
}
