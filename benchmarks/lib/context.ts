/**
 * The client side of a benchmark run: how each variant reaches the same
 * Postgres. Every variant uses the same role, database and loopback address;
 * they differ only in the path and the security work:
 *
 * - `plain`: TCP straight to Postgres, no TLS.
 * - `tls`: ordinary Postgres TLS (`sslmode=require`: SSLRequest, then TLS,
 *   certificate not verified) straight to Postgres. Context only: one hop
 *   shorter than every sidecar variant.
 * - `sidecarTls`: node-postgres with direct TLS and the client certificate
 *   through the sidecar, the server certificate not verified: the same path
 *   as pg-ra-tls without its attestation. The fair baseline.
 * - `forwarder`: the peers' design (lib/forwarder.ts): plain pg to an
 *   in-process loopback forwarder that attests each sidecar connection and
 *   copies bytes; the baseline pg-ra-tls must beat.
 * - `raTls`: pg-ra-tls through the sidecar.
 *
 * Engines: the stack's quotes are signed by a test root, which only the JS
 * engine accepts (docs/protocol.md §8; the WASM engine has Intel's root compiled
 * in), so every verification through the stack runs engine `'js'`; `'both'`
 * is measured on the real Intel fixture in the verification suite.
 */
import type { ClientConfig, PoolConfig } from 'pg';
import { AttestedConnector } from '../../src/connection/attested-connector.js';
import { type ClientCertificate, ClientIdentity } from '../../src/identity/client-identity.js';
import type { Policy } from '../../src/policy/types.js';
import { DcapVerifier } from '../../src/verification/dcap-verifier.js';
import type { StackEndpoints } from '../stack-process.js';
import { type Forwarder, startForwarder } from './forwarder.js';

/** The engine every verification through the stack uses, and why, for row labels. */
export const STACK_ENGINE = "engine js (test root: 'both' impossible)";

/** Everything a suite needs to open connections of every variant. */
export interface BenchContext {
  readonly endpoints: StackEndpoints;
  /** The app's client certificate (from the stack's guest agent), shared by all variants. */
  readonly identity: ClientIdentity;
  readonly clientCertificate: ClientCertificate;
  readonly rootCaDer: Uint8Array;
  readonly policy: Policy;
  /** A fresh verifier trusting the stack's test root: its collateral cache starts empty. */
  newVerifier(): DcapVerifier;
  /** One verifier shared by the warm variants (collateral cached after first use). */
  readonly sharedVerifier: DcapVerifier;
  /** node-postgres configuration of a baseline variant. */
  pgConfig(variant: 'plain' | 'tls' | 'sidecarTls' | 'forwarder'): ClientConfig & PoolConfig;
  /** The peers' loopback forwarder (warm: its connector shares the verification cache). */
  readonly forwarder: Forwarder;
  close(): Promise<void>;
}

/** Connects the client side to a running stack. */
export async function createBenchContext(endpoints: StackEndpoints): Promise<BenchContext> {
  const identity = new ClientIdentity({ dstackEndpoint: endpoints.dstackEndpoint });
  const clientCertificate = await identity.get();
  const rootCaDer = new Uint8Array(Buffer.from(endpoints.rootCaDerBase64, 'base64'));
  const newVerifier = () =>
    new DcapVerifier({
      engine: 'js',
      rootCa: rootCaDer,
      pccsUrl: endpoints.pccsUrl,
      // The test-root warning is expected here; one line per verifier would drown the table.
      logger: () => {},
    });
  const sharedVerifier = newVerifier();
  const policy: Policy = {
    allowedMrtds: [endpoints.expected.mrtd],
    allowedAppIds: [endpoints.expected.appId],
    allowedComposeHashes: [endpoints.expected.composeHash],
  };
  const sidecar = new URL(endpoints.sidecarUrl);
  const forwarderConnector = new AttestedConnector({
    verifier: sharedVerifier,
    policy,
    clientIdentity: identity,
  });
  const forwarder = await startForwarder(forwarderConnector, {
    host: endpoints.sidecar.host,
    port: endpoints.sidecar.port,
    connectTimeoutMs: 10_000,
    handshakeTimeoutMs: 10_000,
  });
  const credentials = {
    user: decodeURIComponent(sidecar.username),
    password: decodeURIComponent(sidecar.password),
    database: sidecar.pathname.slice(1),
  };
  return {
    endpoints,
    identity,
    clientCertificate,
    rootCaDer,
    policy,
    newVerifier,
    sharedVerifier,
    forwarder,
    pgConfig(variant) {
      if (variant === 'forwarder') {
        return { host: '127.0.0.1', port: forwarder.port, ...credentials, ssl: false };
      }
      if (variant === 'plain') return { connectionString: endpoints.postgresUrl, ssl: false };
      if (variant === 'tls') {
        return { connectionString: endpoints.postgresUrl, ssl: { rejectUnauthorized: false } };
      }
      // pg 8.23's direct TLS (no SSLRequest), as the sidecar requires (docs/protocol.md §5).
      return {
        host: endpoints.sidecar.host,
        port: endpoints.sidecar.port,
        ...credentials,
        ssl: {
          key: clientCertificate.key,
          cert: clientCertificate.cert,
          rejectUnauthorized: false,
        },
        sslnegotiation: 'direct',
      } as ClientConfig & PoolConfig;
    },
    async close() {
      await forwarder.close();
      forwarderConnector.close();
      identity.close();
      sharedVerifier.close();
    },
  };
}
