export type { AttestationReport } from './attest/report.js';
export { describeCause, type ErrorCode, ErrorCodes, isRaTlsError, RaTlsError } from './errors.js';
export type {
  AppIdentity,
  AttestationFormat,
  DecodedAttestation,
  EventLogEntry,
  ParsedQuote,
  RaTlsCertificate,
  RuntimeEvent,
} from './evidence/types.js';
export type { NormalizedPolicy, Policy } from './policy/types.js';
export { parseDuration } from './util/duration.js';
export {
  type RaTlsVerifier,
  TCB_STATUSES,
  type TcbStatus,
  type VerificationResult,
  type VerifyOptions,
} from './verification/verifier.js';
