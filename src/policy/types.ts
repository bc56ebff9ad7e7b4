import type { TcbStatus } from '../verification/verifier.js';

/**
 * What a server must be to be trusted. Applied by pg-ra-tls itself after every
 * verifier (docs/protocol.md §3: never left to an engine). Hex values are case- and
 * `0x`-insensitive and trimmed.
 */
export interface Policy {
  /** Allowed MRTDs (48-byte hex). Empty or absent: any MRTD, with a warning. */
  readonly allowedMrtds?: readonly string[];
  /** Allowed app-ids (20-byte hex) from verified RTMR3 events. Empty or absent: any. */
  readonly allowedAppIds?: readonly string[];
  /** Allowed compose-hashes (32-byte hex) from verified RTMR3 events. Empty or absent: any. */
  readonly allowedComposeHashes?: readonly string[];
  /** Accept a debug TD. Default false; never true in production. */
  readonly allowDebugMode?: boolean;
  /** Default `['UpToDate', 'SWHardeningNeeded']`. */
  readonly acceptableTcbStatuses?: readonly TcbStatus[];
}

/** A validated, normalised, frozen policy. */
export interface NormalizedPolicy {
  readonly allowedMrtds: readonly string[];
  readonly allowedAppIds: readonly string[];
  readonly allowedComposeHashes: readonly string[];
  readonly allowDebugMode: boolean;
  readonly acceptableTcbStatuses: readonly TcbStatus[];
}
