/**
 * pg-ra-tls: attested Postgres connections for Node.js.
 * Layers, in the order data flows: evidence → verification → policy → attest → (pool).
 */

export { type AttestCertificateOptions, attestCertificate } from './attest/attest-certificate.js';
export type { AttestationReport } from './attest/report.js';
export {
  type ClusterLeader,
  LEADER_RECORD_PREFIX,
  type ResolveLeaderOptions,
  resolveLeader,
} from './cluster/discovery.js';
export type {
  ClusterOptions,
  LeaderChangedEvent,
} from './cluster/leader-follower.js';
export {
  type LeaderManifest,
  MAX_MANIFEST_BYTES,
  type VerifyManifestOptions,
  verifyManifest,
} from './cluster/manifest.js';
export {
  type HostEntry,
  type HostList,
  type LoadBalanceHosts,
  parseHostList,
  type TargetSessionAttrs,
} from './cluster/multi-host.js';
export {
  type ConnectionSettings,
  type ConnectionSettingsInput,
  resolveConnectionSettings,
} from './config/connection-settings.js';
export { maskConnectionString } from './config/connection-string.js';
export {
  type AttestationOptions,
  AttestedConnector,
  type AttestedSocket,
  type EndpointTarget,
} from './connection/attested-connector.js';
export {
  type InspectServerOptions,
  inspectServer,
  type PresentedCertificate,
  type ServerInspection,
} from './connection/inspect-server.js';
export { RaTlsClient, type RaTlsClientOptions } from './connection/ra-tls-client.js';
export { closeSharedDefaults } from './connection/shared-defaults.js';
export {
  type PgConnectOptsOptions,
  pgConnectOptsRaTls,
  type ServerTarget,
  type VerifyServerOptions,
  verifyServer,
} from './connection/verify-server.js';
export {
  describeCause,
  type ErrorCode,
  ErrorCodes,
  findRaTlsError,
  isRaTlsError,
  RaTlsError,
} from './errors.js';
export { expectedReportData } from './evidence/binding.js';
export { RA_TLS_OIDS, readRaTlsCertificate } from './evidence/certificate.js';
export { parseQuote } from './evidence/quote.js';
export { replayRtmr3, verifyAppIdentity } from './evidence/rtmr3.js';
export type {
  AppIdentity,
  AttestationFormat,
  DecodedAttestation,
  EventLogEntry,
  ParsedQuote,
  RaTlsCertificate,
  RuntimeEvent,
} from './evidence/types.js';
export { decodeVersionedAttestation } from './evidence/versioned-attestation.js';
export {
  type ClientCertificate,
  ClientIdentity,
  type ClientIdentityOptions,
} from './identity/client-identity.js';
export {
  applyPolicy,
  DEFAULT_ACCEPTABLE_TCB_STATUSES,
  normalizePolicy,
  type PolicyFacts,
  policyWarnings,
} from './policy/policy.js';
export type { MeasurementSet, NormalizedPolicy, Policy } from './policy/types.js';
export {
  type AttestationFailedEvent,
  createPool,
  type DiscoveryFailedEvent,
  RaTlsPool,
  type RaTlsPoolOptions,
  type ServerChangedEvent,
  type ServerChangeMode,
} from './pool/ra-tls-pool.js';
export { SpanAttributes, SpanNames, TRACER_NAME } from './telemetry/tracing.js';
export { parseDuration } from './util/duration.js';
export type { Collateral } from './verification/collateral.js';
export {
  DcapVerifier,
  type DcapVerifierOptions,
  type EngineChoice,
  verifyWithCollateral,
} from './verification/dcap-verifier.js';
export {
  IntelApiVerifier,
  type IntelApiVerifierOptions,
  type IntelTrustAuthorityRegion,
} from './verification/intel-api-verifier.js';
export { NoopVerifier, type NoopVerifierOptions } from './verification/noop-verifier.js';
export { INTEL_PCS_URL, PccsClient } from './verification/pccs-client.js';
export {
  type RaTlsVerifier,
  TCB_STATUSES,
  type TcbStatus,
  type VerificationResult,
  type VerifyOptions,
} from './verification/verifier.js';
