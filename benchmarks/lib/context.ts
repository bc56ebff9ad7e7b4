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
 * - `raTls`: pg-ra-tls through the sidecar.
 */
import type { ClientConfig, PoolConfig } from 'pg';
import { type ClientCertificate, ClientIdentity } from '../../src/identity/client-identity.js';
import type { Policy } from '../../src/policy/types.js';
import { DcapVerifier } from '../../src/verification/dcap-verifier.js';
import type { StackEndpoints } from '../stack-process.js';

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
  pgConfig(variant: 'plain' | 'tls' | 'sidecarTls'): ClientConfig & PoolConfig;
  close(): void;
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
  return {
    endpoints,
    identity,
    clientCertificate,
    rootCaDer,
    policy,
    newVerifier,
    sharedVerifier,
    pgConfig(variant) {
      if (variant === 'plain') return { connectionString: endpoints.postgresUrl, ssl: false };
      if (variant === 'tls') {
        return { connectionString: endpoints.postgresUrl, ssl: { rejectUnauthorized: false } };
      }
      // pg 8.23's direct TLS (no SSLRequest), as the sidecar requires (docs/protocol.md §5).
      return {
        host: endpoints.sidecar.host,
        port: endpoints.sidecar.port,
        user: decodeURIComponent(sidecar.username),
        password: decodeURIComponent(sidecar.password),
        database: sidecar.pathname.slice(1),
        ssl: {
          key: clientCertificate.key,
          cert: clientCertificate.cert,
          rejectUnauthorized: false,
        },
        sslnegotiation: 'direct',
      } as ClientConfig & PoolConfig;
    },
    close() {
      identity.close();
      sharedVerifier.close();
    },
  };
}
