/**
 * A PCCS v4 client (docs/protocol.md §3): fetches a TDX platform's collateral from
 * Intel PCS, an Intel PCCS, Phala's mirror or the local test server. The PCCS
 * is untrusted transport: every request is timed out and size-capped, and
 * what it serves is verified by the engines, never believed.
 */
import { describeCause, RaTlsError } from '../errors.js';
import { asn1Schema, asn1X509 } from '../util/asn1.js';
import { fromHex, normalizeHex } from '../util/bytes.js';
import { parseTimeout } from '../util/duration.js';
import { BodyTooLargeError, readResponseBody } from '../util/http-body.js';
import { pemBlocks } from '../util/pem.js';
import { type Collateral, type NormalizedCollateral, normalizeCollateral } from './collateral.js';
import type { PckCa } from './pck-info.js';

/** Options of {@link PccsClient}. */
export interface PccsClientOptions {
  /** PCCS base URL (PCCS v4 API). Default: Intel PCS `https://api.trustedservices.intel.com`. */
  readonly url?: string;
  /** Timeout of every HTTP request, ms or a string like `"10s"`. Default 10 s. */
  readonly requestTimeout?: number | string;
  /** fetch implementation. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

/** Intel's Provisioning Certification Service (docs/protocol.md §3). */
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
    // A Node timer holds at most ~24.8 days; a longer one would fire at once.
    this.#timeoutMs = parseTimeout(
      options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT_MS,
      'requestTimeout',
    );
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** Fetches a full, fresh collateral set for a TDX platform. */
  async fetchCollateral(
    pck: { readonly fmspc: string; readonly ca: PckCa },
    signal?: AbortSignal,
  ): Promise<NormalizedCollateral> {
    const batch = new AbortController();
    // The caller's signal ends every request of the batch (no one waits for it any more).
    const onAbort = (): void => batch.abort();
    if (signal?.aborted) batch.abort();
    signal?.addEventListener('abort', onAbort);
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
      if (signal?.aborted) {
        throw new RaTlsError(
          'COLLATERAL_UNAVAILABLE',
          `The collateral fetch from ${this.url} was abandoned: nobody waits for it any more`,
          { cause: error, details: { pccsUrl: this.url, fmspc } },
        );
      }
      if (error instanceof RaTlsError) throw error;
      throw new RaTlsError(
        'COLLATERAL_UNAVAILABLE',
        `The PCCS at ${this.url} returned unusable collateral for FMSPC ${fmspc}: ${describeCause(error)}`,
        { cause: error, details: { pccsUrl: this.url, fmspc } },
      );
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  // Intel PCS has no root CA CRL endpoint: the CRL is published at the root
  // certificate's CRL distribution point. A PCCS serves it (hex) at /rootcacrl.
  async #rootCaCrl(qeIssuerChain: string, signal: AbortSignal): Promise<Uint8Array> {
    if (!this.url.startsWith(INTEL_PCS_URL)) {
      const response = await this.#get('/sgx/certification/v4/rootcacrl', signal, [404]);
      if (response.status !== 404) return crlBytes(response);
    }
    const root = pemBlocks(qeIssuerChain, 'CERTIFICATE').at(-1);
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
    // The batch lives for one fetchCollateral only, so this listener needs no removal.
    batch.addEventListener('abort', onBatchAbort);
    // A batch already over (its caller gone before this request) sends nothing.
    if (batch.aborted) controller.abort();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.#timeoutMs);
    try {
      let response: Response;
      try {
        response = await this.#fetch(url, { signal: controller.signal });
      } catch (error) {
        if (controller.signal.aborted || !isStaleConnection(error)) throw error;
        // A pooled keep-alive connection the PCCS had closed while idle: GET
        // is idempotent, so it is sent once more (on a new connection).
        response = await this.#fetch(url, { signal: controller.signal });
      }
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
          : `failed: ${describeFetchFailure(error)}`;
      throw new RaTlsError(
        'COLLATERAL_UNAVAILABLE',
        `PCCS request ${url} ${reason}; check pccsUrl and network access, or pass collateral for offline use`,
        { cause: error, details: { url, timedOut } },
      );
    } finally {
      clearTimeout(timer);
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
  const text = Buffer.from(body).toString('utf8');
  const pem = pemBlocks(text, 'X509 CRL')[0];
  if (pem !== undefined) return pem;
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
  const text = typeof parsed[key] === 'object' ? rawMember(body, key) : undefined;
  if (typeof signature !== 'string' || text === undefined) {
    throw new Error(`${response.url} did not return {"${key}": ..., "signature": ...}`);
  }
  return { text, signature };
}

// Scans the (already JSON.parse-validated) body for the raw value of a
// top-level key, tracking nesting and skipping strings. Only whitespace can
// follow the top-level object's closing brace, so the scan need not leave it.
function rawMember(body: string, key: string): string | undefined {
  let depth = 0;
  let currentKey: string | undefined;
  let inValue = false;
  let valueStart = 0;
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
    }
  }
  return undefined;
}

function crlDistributionPoint(rootDer: Uint8Array): string | undefined {
  const { AsnConvert } = asn1Schema();
  const { Certificate, CRLDistributionPoints, id_ce_cRLDistributionPoints } = asn1X509();
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

// fetch() reports every network error as "fetch failed"; the reason is its cause.
function describeFetchFailure(error: unknown): string {
  const cause = error instanceof Error ? error.cause : undefined;
  return cause instanceof Error
    ? `${describeCause(error)} (${cause.message})`
    : describeCause(error);
}

function isStaleConnection(error: unknown): boolean {
  const cause =
    error instanceof Error ? (error.cause as { code?: unknown } | undefined) : undefined;
  return cause?.code === 'UND_ERR_SOCKET' || cause?.code === 'ECONNRESET';
}
