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
  /**
   * Accepted boot chains (docs/protocol.md §2): the server passes only if one set
   * matches every register it names. Pin this (or `trustedKmsRoots`) before
   * trusting app-id or compose-hash: they are written by the OS these
   * registers measure. Absent: not checked. An empty list is refused
   * (BAD_CONFIG), because it would read as a pin while pinning nothing.
   */
  readonly allowedMeasurements?: readonly MeasurementSet[];
  /**
   * dstack KMS roots the server's certificate chain `[leaf, app CA, KMS root]`
   * must end in: the root certificate (PEM text or DER bytes) or the SHA-256
   * of its SubjectPublicKeyInfo (64 hex). The app CA's app-id claim must then
   * equal the verified RTMR3 app-id. Absent: not checked. An empty list is
   * refused (BAD_CONFIG).
   */
  readonly trustedKmsRoots?: readonly (string | Uint8Array)[];
  /** Accept a debug TD. Default false; never true in production. */
  readonly allowDebugMode?: boolean;
  /** Default `['UpToDate', 'SWHardeningNeeded']`. */
  readonly acceptableTcbStatuses?: readonly TcbStatus[];
}

/**
 * One accepted boot chain, 48-byte hex registers (docs/protocol.md §2): MRTD the
 * firmware, RTMR0 its configuration (the VM's CPU/memory shape), RTMR1 the
 * kernel, RTMR2 the command line and initrd. Omit `rtmr0` to accept every VM
 * shape of one image.
 */
export interface MeasurementSet {
  readonly mrtd: string;
  readonly rtmr0?: string;
  readonly rtmr1: string;
  readonly rtmr2: string;
}

/** A validated, normalised, frozen policy. */
export interface NormalizedPolicy {
  readonly allowedMrtds: readonly string[];
  readonly allowedAppIds: readonly string[];
  readonly allowedComposeHashes: readonly string[];
  /** Empty: not pinned. Sets are lowercase hex without `0x`. */
  readonly allowedMeasurements: readonly MeasurementSet[];
  /** SPKI SHA-256 (lowercase hex) of each trusted KMS root. Empty: not pinned. */
  readonly trustedKmsRoots: readonly string[];
  readonly allowDebugMode: boolean;
  readonly acceptableTcbStatuses: readonly TcbStatus[];
}
