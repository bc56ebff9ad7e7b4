/**
 * pg-ra-tls/testing: a test root of trust and a local attested stack, for our
 * own tests, the demo and users' test suites. Nothing here is trusted by the
 * production defaults: a test root is accepted only when passed explicitly.
 */

export * from './authority/index.js';
export { clientOptionsFromEnv, type EnvClientOptions } from './client-options-from-env.js';
export {
  type DnsFault,
  type DnsServer,
  type DnsServerOptions,
  startDnsServer,
  type TxtRecord,
} from './cluster/dns-server.js';
export {
  type ClusterMember,
  type ClusterMemberRole,
  type LocalCluster,
  type LocalClusterOptions,
  type PublishManifestOptions,
  startLocalCluster,
} from './cluster/local-cluster.js';
export {
  createManifestSigner,
  type ManifestFields,
  type ManifestSigner,
  type SignManifestOptions,
} from './cluster/manifest-signer.js';
export {
  createDstackIssuer,
  type DstackExpectedIdentity,
  type DstackIdentity,
  type DstackInfoResponse,
  type DstackIssuer,
  type DstackIssuerFaults,
  type DstackIssuerOptions,
  type DstackQuoteResponse,
  type DstackTlsKey,
  type DstackTlsKeyRequest,
} from './dstack-issuer.js';
export {
  type LocalStack,
  type LocalStackClientOptions,
  type LocalStackExpectedIdentity,
  type LocalStackIdentity,
  type LocalStackOptions,
  type LocalStackTimings,
  startLocalStack,
} from './local-stack.js';
export { type PccsServer, type PccsServerOptions, startPccsServer } from './pccs-server.js';
export {
  type CreateRaTlsCertificateOptions,
  createRaTlsCertificate,
  encodeLegacyEventLog,
  encodeVersionedAttestationV0,
  generateRaTlsKeyPair,
  type RaTlsKeyPair,
  type RaTlsTestCertificate,
  withReportData,
} from './ra-tls-certificate.js';
export {
  startTrustAuthorityServer,
  type TrustAuthorityServer,
  type TrustAuthorityServerOptions,
} from './trust-authority-server.js';
