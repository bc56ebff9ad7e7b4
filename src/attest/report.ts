import type { AppIdentity, AttestationFormat } from '../evidence/types.js';
import type { TcbStatus } from '../verification/verifier.js';

/**
 * The verified, judged attestation of one server certificate: everything a
 * caller may rely on. Produced only when binding, RTMR3 replay (when events
 * exist), the verifier and the policy all passed. Hex is lowercase.
 */
export interface AttestationReport {
  /** SHA-256 of the leaf certificate DER (hex): the pinning fingerprint. */
  readonly fingerprint: string;
  /** When this report was produced (ms since epoch). */
  readonly verifiedAt: number;
  readonly certificate: {
    readonly subject: string;
    readonly notBefore: Date;
    readonly notAfter: Date;
  };
  readonly attestationFormat: AttestationFormat;
  readonly quoteVersion: 4 | 5;
  readonly mrtd: string;
  readonly rtmr0: string;
  readonly rtmr1: string;
  readonly rtmr2: string;
  readonly rtmr3: string;
  readonly tdAttributes: string;
  readonly mrSeam: string;
  readonly isDebug: boolean;
  readonly tcbStatus: TcbStatus;
  readonly advisoryIds: readonly string[];
  /** report_data (hex), proven equal to SHA-512("ratls-cert:" ‖ SPKI). */
  readonly reportData: string;
  /** The app identity from RTMR3 events whose replay matched; undefined when there are no events. */
  readonly app?: AppIdentity;
  /**
   * The dstack KMS behind the certificate, when the server presented a chain
   * `[leaf, app CA, KMS root]` whose signatures and dates verified (docs/protocol.md §1).
   * `pinned` is true only when `policy.trustedKmsRoots` names that root, which
   * then also proved `appId` equal to the attested app-id; unpinned, it is only
   * what was presented (copy `rootSpkiSha256` into a policy once you trust it).
   */
  readonly kms?: {
    /** SHA-256 of the KMS root's DER SubjectPublicKeyInfo, lowercase hex: the value `trustedKmsRoots` accepts. */
    readonly rootSpkiSha256: string;
    /** The app CA's app-id claim (OID 1.3.6.1.4.1.62397.1.3). */
    readonly appId: string;
    readonly pinned: boolean;
  };
  /** Name of the verifier that checked the quote. */
  readonly verifier: string;
  /** Policy warnings (e.g. "allowedMrtds is empty: any MRTD is accepted"), as `policyWarnings` gives them. */
  readonly warnings: readonly string[];
  /**
   * Until when (ms since epoch) the evidence behind this report stays valid,
   * when the verifier knows (DCAP: the collateral's earliest nextUpdate, capped
   * at `collateralMaxAge` after its fetch). A cached report is not reused past it.
   */
  readonly validUntil?: number;
  /**
   * True when a test root of trust, not Intel's, vouched for the quote: the
   * report proves nothing about real hardware (a warning says so too).
   */
  readonly testRoot?: boolean;
}
