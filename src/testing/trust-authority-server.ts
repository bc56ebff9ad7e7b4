/**
 * A local stand-in for Intel Trust Authority (docs/protocol.md §6) for tests and
 * demos: real HTTP on 127.0.0.1, a test RSA key made with node:crypto, tokens
 * whose claims are read from the submitted quote's TD report, and switches
 * for every way a token or the API can go wrong. Never use in production.
 */
import {
  constants,
  createHmac,
  generateKeyPair,
  type KeyObject,
  randomBytes,
  randomUUID,
  sign,
} from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseQuote } from '../evidence/quote.js';
import type { ParsedQuote } from '../evidence/types.js';
import { toHex } from '../util/bytes.js';

/** How the server answers; every field is optional and defaults to a good token. */
export interface TrustAuthorityBehaviour {
  /** attester_tcb_status claim. Default `UpToDate`. */
  readonly tcbStatus?: string;
  /** Forces tdx_is_debuggable and tdx_td_attributes_debug; default: the quote's debug bit. */
  readonly debug?: boolean;
  /** attester_advisory_ids claim. Default `[]`. */
  readonly advisoryIds?: readonly string[];
  /** exp claim in Unix seconds. Default: iat + 5 minutes. */
  readonly expiresAt?: number;
  /** Put TDX claims under a `tdx` object, as `ver` 2.x tokens do. Default false (flat, `ver` 1.0.0). */
  readonly nestTdxClaims?: boolean;
  /** Extra claims, merged over the generated ones (at the level TDX claims live). */
  readonly claims?: Readonly<Record<string, unknown>>;
  /** Sign with a key the JWKS does not publish under this kid (bad signature). */
  readonly signWithWrongKey?: boolean;
  /** `jku` header value; default the server's own `/certs`. */
  readonly jku?: string;
  /** Header `alg`; `none` and `HS256` (HMAC keyed with the public key PEM) model attacks. Default: as requested, else PS384. */
  readonly alg?: 'PS384' | 'RS256' | 'none' | 'HS256';
  /** `kid` header value; default the published key's kid. */
  readonly kid?: string;
  /** Never answer the attest request (timeout tests). */
  readonly stall?: boolean;
  /** Answer the attest request with this HTTP status instead of a token. */
  readonly status?: number;
  /** Body sent with `status`. Default `{"error":"..."}`. */
  readonly errorBody?: string;
}

/** Options of {@link startTrustAuthorityServer}. */
export interface TrustAuthorityServerOptions extends TrustAuthorityBehaviour {
  /** The API key the server accepts; others get HTTP 401. Default `test-api-key`. */
  readonly apiKey?: string;
  /** Clock for iat/nbf/exp. Default `new Date()`. */
  readonly now?: () => Date;
}

/** One attest request as the server received it. */
export interface TrustAuthorityRequest {
  readonly method: string;
  readonly path: string;
  readonly apiKey: string | undefined;
  readonly contentType: string | undefined;
  readonly accept: string | undefined;
  readonly body: unknown;
}

/** A running local Trust Authority. */
export interface TrustAuthorityServer {
  /** API base URL, e.g. `http://127.0.0.1:PORT`; pass it as `baseUrl`. */
  readonly url: string;
  /** The JWKS URL; pass it as `jwksUrl`. */
  readonly jwksUrl: string;
  readonly apiKey: string;
  /** kid of the published signing key. */
  readonly kid: string;
  /** Attest requests received, oldest first. */
  readonly requests: readonly TrustAuthorityRequest[];
  /** Number of JWKS requests served. */
  readonly jwksRequests: number;
  /** Replaces the behaviour (options other than apiKey/now) for later requests. */
  configure(behaviour: TrustAuthorityBehaviour): void;
  /** Signs an arbitrary token with the published key (for hand-made claims). */
  signToken(header: Record<string, unknown>, payload: Record<string, unknown>): string;
  /** Stops the server and drops open (also stalled) connections. */
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;
const TOKEN_LIFETIME_SECONDS = 300;

/** Trust Authority's claim names for the TD report fields (docs/protocol.md §2, §6). */
function tdReportClaims(quote: Uint8Array): Record<string, string> | undefined {
  let parsed: ParsedQuote;
  try {
    parsed = parseQuote(quote);
  } catch {
    return undefined;
  }
  return {
    tdx_tee_tcb_svn: parsed.teeTcbSvn,
    tdx_mrseam: parsed.mrSeam,
    tdx_mrsignerseam: parsed.mrSignerSeam,
    tdx_seam_attributes: parsed.seamAttributes,
    tdx_td_attributes: parsed.tdAttributes,
    tdx_xfam: parsed.xfam,
    tdx_mrtd: parsed.mrtd,
    tdx_mrconfigid: parsed.mrConfigId,
    tdx_mrowner: parsed.mrOwner,
    tdx_mrownerconfig: parsed.mrOwnerConfig,
    tdx_rtmr0: parsed.rtmr0,
    tdx_rtmr1: parsed.rtmr1,
    tdx_rtmr2: parsed.rtmr2,
    tdx_rtmr3: parsed.rtmr3,
    tdx_report_data: toHex(parsed.reportData),
  };
}

function generateRsaKey(): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  return new Promise((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048 }, (error, publicKey, privateKey) =>
      error ? reject(error) : resolve({ publicKey, privateKey }),
    );
  });
}

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function readBody(request: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    request.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    request.on('end', () => resolve(total <= MAX_BODY_BYTES ? Buffer.concat(chunks) : undefined));
    request.on('error', () => resolve(undefined));
  });
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

/**
 * Starts a local Trust Authority on 127.0.0.1 (random port). Speaks
 * `POST /appraisal/v2/attest` and `GET /certs` (docs/protocol.md §6).
 */
export async function startTrustAuthorityServer(
  options: TrustAuthorityServerOptions = {},
): Promise<TrustAuthorityServer> {
  const apiKey = options.apiKey ?? 'test-api-key';
  const now = options.now ?? (() => new Date());
  const [signing, wrong] = await Promise.all([generateRsaKey(), generateRsaKey()]);
  const kid = randomBytes(24).toString('hex');
  const publicPem = signing.publicKey.export({ type: 'spki', format: 'pem' });
  const jwks = {
    keys: [{ ...signing.publicKey.export({ format: 'jwk' }), kid, alg: 'PS384', use: 'sig' }],
  };
  let behaviour: TrustAuthorityBehaviour = { ...options };
  const requests: TrustAuthorityRequest[] = [];
  let jwksRequests = 0;

  const signToken = (
    header: Record<string, unknown>,
    payload: Record<string, unknown>,
    privateKey: KeyObject = signing.privateKey,
  ): string => {
    const input = `${base64url(header)}.${base64url(payload)}`;
    let signature: Buffer;
    switch (header['alg']) {
      case 'PS384':
        signature = sign('sha384', Buffer.from(input), {
          key: privateKey,
          padding: constants.RSA_PKCS1_PSS_PADDING,
          saltLength: 48,
        });
        break;
      case 'RS256':
        signature = sign('sha256', Buffer.from(input), privateKey);
        break;
      case 'HS256':
        // The classic algorithm-confusion forgery: HMAC keyed with the public key.
        signature = createHmac('sha256', publicPem).update(input).digest();
        break;
      default:
        signature = Buffer.alloc(0);
    }
    return `${input}.${signature.toString('base64url')}`;
  };

  const issueToken = (report: Record<string, string>, requestedAlg: unknown, url: string) => {
    const b = behaviour;
    const iat = Math.floor(now().getTime() / 1000);
    const quoteDebug =
      (Number.parseInt(report['tdx_td_attributes']?.slice(0, 2) ?? '0', 16) & 1) === 1;
    const debug = b.debug ?? quoteDebug;
    const tdx = {
      ...report,
      tdx_is_debuggable: debug,
      tdx_td_attributes_debug: debug,
      attester_tcb_status: b.tcbStatus ?? 'UpToDate',
      attester_tcb_date: '2024-03-13T00:00:00Z',
      attester_advisory_ids: [...(b.advisoryIds ?? [])],
      ...b.claims,
    };
    const registered = {
      iss: 'Intel Trust Authority (local test server)',
      iat,
      nbf: iat,
      exp: b.expiresAt ?? iat + TOKEN_LIFETIME_SECONDS,
      jti: randomUUID(),
      attester_type: 'TDX',
    };
    const payload = b.nestTdxClaims
      ? { ...registered, ver: '2.0.0', tdx }
      : { ...registered, ver: '1.0.0', ...tdx };
    const alg =
      b.alg ?? (requestedAlg === 'RS256' || requestedAlg === 'PS384' ? requestedAlg : 'PS384');
    const header = { alg, jku: b.jku ?? `${url}/certs`, kid: b.kid ?? kid, typ: 'JWT' };
    return signToken(header, payload, b.signWithWrongKey ? wrong.privateKey : signing.privateKey);
  };

  const handle = async (request: IncomingMessage, response: ServerResponse, url: string) => {
    const path = new URL(request.url ?? '/', url).pathname;
    if (request.method === 'GET' && path === '/certs') {
      jwksRequests += 1;
      sendJson(response, 200, jwks);
      return;
    }
    if (request.method !== 'POST' || path !== '/appraisal/v2/attest') {
      sendJson(response, 404, { error: 'not found' });
      return;
    }
    const raw = await readBody(request);
    let body: unknown;
    try {
      body = raw === undefined ? undefined : JSON.parse(raw.toString('utf8'));
    } catch {
      body = undefined;
    }
    const header = (name: string) => {
      const value = request.headers[name];
      return Array.isArray(value) ? value.join(',') : value;
    };
    requests.push({
      method: request.method,
      path,
      apiKey: header('x-api-key'),
      contentType: header('content-type'),
      accept: header('accept'),
      body,
    });
    const b = behaviour;
    if (b.stall) return;
    if (b.status !== undefined) {
      sendJson(response, b.status, b.errorBody ?? { error: `configured failure ${b.status}` });
      return;
    }
    if (header('x-api-key') !== apiKey) {
      sendJson(response, 401, { error: 'Unauthorized: invalid API key' });
      return;
    }
    const fields =
      typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
    const report =
      typeof fields['quote'] === 'string'
        ? tdReportClaims(new Uint8Array(Buffer.from(fields['quote'], 'base64')))
        : undefined;
    if (!report) {
      sendJson(response, 400, { error: 'quote is not a TDX quote' });
      return;
    }
    sendJson(response, 200, { token: issueToken(report, fields['token_signing_alg'], url) });
  };

  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    handle(request, response, url).catch(() => {
      if (!response.headersSent) sendJson(response, 500, { error: 'internal error' });
      else response.destroy();
    });
  });

  return {
    url,
    jwksUrl: `${url}/certs`,
    apiKey,
    kid,
    requests,
    get jwksRequests() {
      return jwksRequests;
    },
    configure(next: TrustAuthorityBehaviour) {
      behaviour = { ...next };
    },
    signToken: (header, payload) => signToken(header, payload),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
