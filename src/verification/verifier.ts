/** The contract every quote verifier fulfils. Binding and policy are NOT the verifier's job. */

/** TCB statuses of Intel's TCB info (docs/protocol.md §3), plus the engines' `Unknown`. */
export type TcbStatus =
  | 'UpToDate'
  | 'SWHardeningNeeded'
  | 'ConfigurationNeeded'
  | 'ConfigurationAndSWHardeningNeeded'
  | 'OutOfDate'
  | 'OutOfDateConfigurationNeeded'
  | 'Revoked'
  | 'Unknown';

export const TCB_STATUSES: readonly TcbStatus[] = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'Revoked',
  'Unknown',
];

/** What a verifier vouches for after checking a quote's signatures and collateral. Hex lowercase. */
export interface VerificationResult {
  readonly mrtd: string;
  readonly rtmr0: string;
  readonly rtmr1: string;
  readonly rtmr2: string;
  readonly rtmr3: string;
  readonly tcbStatus: TcbStatus;
  readonly advisoryIds: readonly string[];
  readonly isDebug: boolean;
  readonly reportData: Uint8Array;
  /** Which verifier (and engines) produced this result, e.g. `dcap:both`, `intel-api`, `noop`. */
  readonly verifier: string;
  /** Earliest time (ms since epoch) until which the evidence behind this result stays valid, if known. */
  readonly validUntil?: number;
  /**
   * True when the quote was checked against a test root of trust passed by
   * the caller instead of Intel's: the result proves nothing about hardware.
   */
  readonly testRoot?: boolean;
}

export interface VerifyOptions {
  /** Verification time; defaults to the current time. */
  readonly now?: Date;
  readonly signal?: AbortSignal;
}

/**
 * A quote verifier. Implementations check the quote's cryptographic validity
 * (and report its TCB status); pg-ra-tls itself always checks the key binding,
 * RTMR3 replay and policy around any verifier, so a custom verifier cannot skip them.
 * Implementations throw {@link RaTlsError} on failure.
 */
export interface RaTlsVerifier {
  /** Short name for logs and telemetry. */
  readonly name: string;
  /**
   * True only for verifiers that check nothing (NoopVerifier): their TCB status
   * means nothing, so policy skips the status check but still applies every other rule.
   */
  readonly unverified?: boolean;
  verify(quote: Uint8Array, options?: VerifyOptions): Promise<VerificationResult>;
  /**
   * Prepares the verifier in the background so that the first verification
   * runs at steady-state cost (optional; pools and clients call it when they
   * are created). Must never reject and must not change any verdict.
   */
  warmUp?(): Promise<void>;
  /** Releases timers or sockets the verifier holds (optional). */
  close?(): Promise<void> | void;
}
