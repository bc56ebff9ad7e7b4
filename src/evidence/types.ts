/** Types of the evidence layer: what a certificate and its quote say, before anyone trusts it. */

/** One dstack runtime event (extended into RTMR3). docs/protocol.md §2. */
export interface RuntimeEvent {
  readonly event: string;
  readonly payload: Uint8Array;
}

/** One entry of the (certificate-stripped) TDX event log. docs/protocol.md §1. */
export interface EventLogEntry {
  readonly imr: number;
  readonly eventType: number;
  readonly digest: Uint8Array;
  readonly event: string;
  readonly eventPayload: Uint8Array;
}

/** Where the attestation came from in the certificate. */
export type AttestationFormat = 'versioned-v0' | 'versioned-v1' | 'legacy';

/** The decoded attestation envelope of an RA-TLS certificate. */
export interface DecodedAttestation {
  readonly format: AttestationFormat;
  /** Platform variant name, e.g. `DstackTdx`. */
  readonly platform: string;
  /** The raw TDX quote bytes. */
  readonly quote: Uint8Array;
  readonly eventLog: readonly EventLogEntry[];
  /** Runtime events (V0: their own list; legacy: the IMR 3 entries of the event log). */
  readonly runtimeEvents: readonly RuntimeEvent[];
  /** report_data carried next to the quote (V0/V1); absent for legacy. */
  readonly reportData?: Uint8Array;
  /** Free-form JSON configuration string (V0/V1); absent for legacy. */
  readonly config?: string;
}

/** A parsed RA-TLS leaf certificate. Only `attestation` and `spki` matter for trust. */
export interface RaTlsCertificate {
  /** DER of the whole certificate. */
  readonly der: Uint8Array;
  /** SHA-256 of the DER, lowercase hex: the pinning fingerprint. */
  readonly fingerprint: string;
  /** DER of SubjectPublicKeyInfo: what report_data must bind. */
  readonly spki: Uint8Array;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly attestation: DecodedAttestation;
}

/** Fields of a parsed TDX quote (header + TD report 1.0 / 1.5). Hex is lowercase. */
export interface ParsedQuote {
  readonly version: 4 | 5;
  readonly attestationKeyType: number;
  readonly teeType: number;
  /** `td10` for TD report 1.0, `td15` for TD report 1.5. */
  readonly bodyType: 'td10' | 'td15';
  readonly teeTcbSvn: string;
  readonly mrSeam: string;
  readonly mrSignerSeam: string;
  readonly seamAttributes: string;
  readonly tdAttributes: string;
  readonly xfam: string;
  readonly mrtd: string;
  readonly mrConfigId: string;
  readonly mrOwner: string;
  readonly mrOwnerConfig: string;
  readonly rtmr0: string;
  readonly rtmr1: string;
  readonly rtmr2: string;
  readonly rtmr3: string;
  readonly reportData: Uint8Array;
  /** TD report 1.5 only. */
  readonly teeTcbSvn2?: string;
  readonly mrServiceTd?: string;
  /** `td_attributes[0] & 0x01`. */
  readonly isDebug: boolean;
}

/** The application identity read from runtime events whose replay matched RTMR3. */
export interface AppIdentity {
  readonly appId?: string;
  readonly composeHash?: string;
  readonly instanceId?: string;
  readonly osImageHash?: string;
  /** key-provider payload as text (JSON). */
  readonly keyProvider?: string;
  readonly events: readonly RuntimeEvent[];
}
