/**
 * A local PCCS speaking the v4 HTTP API (the endpoints pg-ra-tls's PccsClient
 * and `@phala/dcap-qvl`'s getCollateral use), serving collateral you provide:
 * real fixtures or a test authority's. For tests only.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Collateral } from '../verification/collateral.js';
import { normalizeCollateral } from '../verification/collateral.js';

/**
 * Collateral to serve: one set for every platform, or a function of the FMSPC
 * (uppercase hex). Endpoints that name no FMSPC (PCK CRL, QE identity, root CA
 * CRL) are platform-wide, so the function is called with `undefined` for them.
 * Returning undefined answers 404.
 */
export type PccsCollateralProvider =
  | Collateral
  | ((fmspc: string | undefined) => Collateral | undefined);

/** Options of {@link startPccsServer}. */
export interface PccsServerOptions {
  readonly collateral: PccsCollateralProvider;
  /** Default 0 (any free port). */
  readonly port?: number;
  /** Default `127.0.0.1`. */
  readonly host?: string;
}

/** Requests received per endpoint (including those answered while stalled or down). */
export interface PccsRequestCounts {
  tcb: number;
  qeIdentity: number;
  pckCrl: number;
  rootCaCrl: number;
  other: number;
}

/** A running local PCCS. */
export interface PccsServer {
  /** Base URL, e.g. `http://127.0.0.1:40123`; pass it as `pccsUrl`. */
  readonly url: string;
  /** Live counters. */
  readonly requests: PccsRequestCounts;
  /** While true, requests are accepted but never answered (to test timeouts). */
  setStalled(stalled: boolean): void;
  /** While true, every request gets HTTP 503. */
  setDown(down: boolean): void;
  /**
   * While true, every request gets HTTP 200 with an endless body (no
   * Content-Length), written as fast as the client reads it, until the client
   * hangs up: a malicious PCCS trying to exhaust the client's memory.
   */
  setFlooding(flooding: boolean): void;
  /** Body bytes the flooding answers have handed to the network so far. */
  readonly floodedBytes: number;
  /**
   * Resolves once the server has received `total` requests in all (counted as
   * in {@link requests}): lets a test act only after a request truly arrived.
   */
  receivedRequests(total: number): Promise<void>;
  /** Stops the server and drops held and open connections. */
  close(): Promise<void>;
}

type Endpoint = keyof PccsRequestCounts;

/** Starts a local PCCS v4 server on 127.0.0.1 (by default). */
export async function startPccsServer(options: PccsServerOptions): Promise<PccsServer> {
  const requests: PccsRequestCounts = { tcb: 0, qeIdentity: 0, pckCrl: 0, rootCaCrl: 0, other: 0 };
  const held = new Set<ServerResponse>();
  let stalled = false;
  let down = false;
  let flooding = false;
  let floodedBytes = 0;
  const waiting: { total: number; resolve: () => void }[] = [];
  const received = (): number => Object.values(requests).reduce((sum, n) => sum + n, 0);

  const provide = (fmspc: string | undefined): Collateral | undefined =>
    typeof options.collateral === 'function' ? options.collateral(fmspc) : options.collateral;

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://pccs.invalid');
    const endpoint = endpointOf(url.pathname);
    requests[endpoint]++;
    for (const waiter of waiting.filter((w) => received() >= w.total)) {
      waiting.splice(waiting.indexOf(waiter), 1);
      waiter.resolve();
    }
    if (stalled) {
      held.add(res);
      res.on('close', () => held.delete(res));
      return;
    }
    if (flooding) {
      held.add(res);
      res.on('close', () => held.delete(res));
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = (): void => {
        while (!res.destroyed) {
          floodedBytes += chunk.byteLength;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
      };
      pump();
      return;
    }
    let reply: Reply;
    if (down) reply = text(503, 'PCCS is down (test switch)');
    else if (req.method !== 'GET') reply = text(405, 'only GET');
    else {
      try {
        reply = answer(endpoint, url, provide);
      } catch (error) {
        reply = text(500, error instanceof Error ? error.message : 'internal error');
      }
    }
    send(res, reply);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  return {
    url: `http://${host}:${address.port}`,
    requests,
    setStalled(value: boolean) {
      stalled = value;
    },
    setDown(value: boolean) {
      down = value;
    },
    setFlooding(value: boolean) {
      flooding = value;
    },
    get floodedBytes() {
      return floodedBytes;
    },
    receivedRequests(total: number) {
      if (received() >= total) return Promise.resolve();
      return new Promise<void>((resolve) => waiting.push({ total, resolve }));
    },
    close() {
      for (const res of held) res.destroy();
      held.clear();
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function endpointOf(pathname: string): Endpoint {
  const match = /^\/(sgx|tdx)\/certification\/v4\/(.+)$/.exec(pathname);
  switch (match?.[2]) {
    case 'tcb':
      return 'tcb';
    case 'qe/identity':
      return 'qeIdentity';
    case 'pckcrl':
      return match[1] === 'sgx' ? 'pckCrl' : 'other';
    case 'rootcacrl':
      return match[1] === 'sgx' ? 'rootCaCrl' : 'other';
    default:
      return 'other';
  }
}

interface Reply {
  readonly status: number;
  readonly body: string | Uint8Array;
  readonly headers?: Record<string, string>;
}

const text = (status: number, body: string): Reply => ({ status, body });

function answer(
  endpoint: Endpoint,
  url: URL,
  provide: (fmspc: string | undefined) => Collateral | undefined,
): Reply {
  if (endpoint === 'other') return text(404, 'unknown PCCS endpoint');
  const fmspc = endpoint === 'tcb' ? url.searchParams.get('fmspc')?.toUpperCase() : undefined;
  if (endpoint === 'tcb' && !fmspc) return text(400, 'fmspc is required');
  const raw = provide(fmspc);
  if (raw === undefined) return text(404, 'no collateral for this request');
  const collateral = normalizeCollateral(raw);
  switch (endpoint) {
    case 'tcb':
      // The body embeds the signed TCB info text verbatim; Intel PCS v4 names the header TCB-Info-Issuer-Chain.
      return {
        status: 200,
        body: signedBody('tcbInfo', collateral.tcb_info, collateral.tcb_info_signature),
        headers: {
          'Content-Type': 'application/json',
          'TCB-Info-Issuer-Chain': encodeURIComponent(collateral.tcb_info_issuer_chain),
        },
      };
    case 'qeIdentity':
      return {
        status: 200,
        body: signedBody(
          'enclaveIdentity',
          collateral.qe_identity,
          collateral.qe_identity_signature,
        ),
        headers: {
          'Content-Type': 'application/json',
          'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(
            collateral.qe_identity_issuer_chain,
          ),
        },
      };
    case 'pckCrl': {
      const ca = url.searchParams.get('ca');
      if (ca !== 'platform' && ca !== 'processor') {
        return text(400, 'ca must be platform or processor');
      }
      // encoding=der gives DER; otherwise PCCS answers with the CRL as hex text.
      const der = url.searchParams.get('encoding') === 'der';
      return {
        status: 200,
        body: der ? Buffer.from(collateral.pck_crl, 'hex') : collateral.pck_crl,
        headers: {
          'Content-Type': der ? 'application/pkix-crl' : 'text/plain',
          'SGX-PCK-CRL-Issuer-Chain': encodeURIComponent(collateral.pck_crl_issuer_chain),
        },
      };
    }
    case 'rootCaCrl':
      // Intel's PCCS serves the root CA CRL as hex text.
      return text(200, collateral.root_ca_crl);
  }
}

function signedBody(key: string, signedJson: string, signatureHex: string): string {
  return `{"${key}":${signedJson},"signature":"${signatureHex}"}`;
}

function send(res: ServerResponse, reply: Reply): void {
  const headers = reply.headers ?? { 'Content-Type': 'text/plain' };
  res.writeHead(reply.status, { ...headers, 'Content-Length': Buffer.byteLength(reply.body) });
  res.end(reply.body);
}
