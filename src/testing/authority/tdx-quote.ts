/**
 * Byte layout of a TDX quote v4 with a TD report 1.0 body (docs/protocol.md §2, §8;
 * Intel "TDX DCAP Quoting Library API", Appendix A), and the encoders the test
 * authority signs with. All integers are little-endian.
 */
import { type KeyObject, sign } from 'node:crypto';
import { RaTlsError } from '../../errors.js';
import { sha256 } from '../../util/bytes.js';
import { TEST_QUOTING_ENCLAVE } from './tcb-info.js';

/** Byte offsets in a v4 TDX quote issued by the test authority (for tamper tests). */
export const TDX_QUOTE_V4_OFFSETS = Object.freeze({
  /** 48-byte header: version, attestation key type, TEE type, QE vendor id, user data. */
  header: 0,
  /** TD report 1.0 (584 bytes). */
  body: 48,
  teeTcbSvn: 48,
  mrSeam: 64,
  mrSignerSeam: 112,
  seamAttributes: 160,
  tdAttributes: 168,
  xfam: 176,
  mrTd: 184,
  mrConfigId: 232,
  mrOwner: 280,
  mrOwnerConfig: 328,
  rtmr0: 376,
  rtmr1: 424,
  rtmr2: 472,
  rtmr3: 520,
  reportData: 568,
  /** End of the bytes the attestation key signs (header + body); the u32 auth-data size sits here. */
  signedLength: 632,
  /** Raw r‖s ECDSA signature over bytes 0..632 by the attestation key. */
  quoteSignature: 636,
  /** Attestation public key x‖y. */
  attestationKey: 700,
  /** Certification data type 6 (u16) and size (u32), then the QE report. */
  certificationData: 764,
  /** The QE's SGX report (384 bytes) whose report_data binds the attestation key. */
  qeReport: 770,
  /** Raw r‖s signature over the QE report by the PCK key. */
  qeReportSignature: 1154,
  /** u16 size, then the QE authentication data. */
  qeAuthData: 1218,
});

/** The fields of a TD report 1.0, as raw bytes of their fixed sizes. */
export interface TdReport10Fields {
  /** 16 bytes. */
  readonly teeTcbSvn: Uint8Array;
  /** 48 bytes each. */
  readonly mrSeam: Uint8Array;
  readonly mrSignerSeam: Uint8Array;
  /** 8 bytes each. */
  readonly seamAttributes: Uint8Array;
  readonly tdAttributes: Uint8Array;
  readonly xfam: Uint8Array;
  /** 48 bytes each. */
  readonly mrTd: Uint8Array;
  readonly mrConfigId: Uint8Array;
  readonly mrOwner: Uint8Array;
  readonly mrOwnerConfig: Uint8Array;
  readonly rtmr0: Uint8Array;
  readonly rtmr1: Uint8Array;
  readonly rtmr2: Uint8Array;
  readonly rtmr3: Uint8Array;
  /** 64 bytes. */
  readonly reportData: Uint8Array;
}

const TD_REPORT_10_LAYOUT: readonly [keyof TdReport10Fields, number][] = [
  ['teeTcbSvn', 16],
  ['mrSeam', 48],
  ['mrSignerSeam', 48],
  ['seamAttributes', 8],
  ['tdAttributes', 8],
  ['xfam', 8],
  ['mrTd', 48],
  ['mrConfigId', 48],
  ['mrOwner', 48],
  ['mrOwnerConfig', 48],
  ['rtmr0', 48],
  ['rtmr1', 48],
  ['rtmr2', 48],
  ['rtmr3', 48],
  ['reportData', 64],
];

/** The 584-byte TD report 1.0; throws BAD_CONFIG when a field has the wrong size. */
export function encodeTdReport10(fields: TdReport10Fields): Uint8Array {
  const parts = TD_REPORT_10_LAYOUT.map(([name, size]) => {
    const value = fields[name];
    if (value.byteLength !== size) {
      throw new RaTlsError('BAD_CONFIG', `${name} must be ${size} bytes, got ${value.byteLength}`, {
        details: { option: name },
      });
    }
    return value;
  });
  return new Uint8Array(Buffer.concat(parts));
}

/** Intel's QE vendor id, which real TDX quotes carry. */
const INTEL_QE_VENDOR_ID = Buffer.from('939a7233f79c4ca9940a0db3957f0607', 'hex');
const ATTESTATION_KEY_TYPE_ECDSA_P256 = 2;
const TEE_TYPE_TDX = 0x81;

/** The 48-byte v4 header; `qeId` (16 bytes) opens the 20-byte user data, as Intel's QE writes it. */
export function encodeQuoteHeader(qeId: Uint8Array): Uint8Array {
  const header = Buffer.alloc(48);
  header.writeUInt16LE(4, 0);
  header.writeUInt16LE(ATTESTATION_KEY_TYPE_ECDSA_P256, 2);
  header.writeUInt32LE(TEE_TYPE_TDX, 4);
  // Bytes 8..12 (QE SVN, PCE SVN) are reserved zero in v4 quotes.
  INTEL_QE_VENDOR_ID.copy(header, 12);
  Buffer.from(qeId).copy(header, 28, 0, 16);
  return new Uint8Array(header);
}

/** Raw r‖s P-256/SHA-256 signature, the form DCAP structures carry. */
export function signRaw(data: Uint8Array, key: KeyObject): Uint8Array {
  return new Uint8Array(sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }));
}

/**
 * The 384-byte SGX report of the quoting enclave. Its report_data is
 * SHA-256(attestation key ‖ QE auth data) zero-padded to 64 bytes: that is what
 * ties the attestation key to the PCK-signed report.
 */
export function encodeQeReport(attestationPoint: Uint8Array, qeAuthData: Uint8Array): Uint8Array {
  const report = Buffer.alloc(384);
  // CPUSVN of the QE (16 bytes at 0) stays zero: verifiers take CPUSVN from the PCK certificate.
  report.writeUInt32LE(TEST_QUOTING_ENCLAVE.miscSelect, 16);
  Buffer.from(TEST_QUOTING_ENCLAVE.attributes, 'hex').copy(report, 48);
  Buffer.from(sha256(attestationPoint)).copy(report, 64); // MRENCLAVE: any stable value
  Buffer.from(TEST_QUOTING_ENCLAVE.mrSigner, 'hex').copy(report, 128);
  report.writeUInt16LE(TEST_QUOTING_ENCLAVE.isvProdId, 256);
  report.writeUInt16LE(TEST_QUOTING_ENCLAVE.isvSvn, 258);
  Buffer.from(sha256(attestationPoint, qeAuthData)).copy(report, 320);
  return new Uint8Array(report);
}

const CERTIFICATION_DATA_PCK_CHAIN = 5;
const CERTIFICATION_DATA_QE_REPORT = 6;

/** Inputs of the certification data (everything after the attestation key). */
export interface QeCertificationInputs {
  /** Attestation public key x‖y (64 bytes). */
  readonly attestationPoint: Uint8Array;
  readonly qeAuthData: Uint8Array;
  /** The PCK private key that signs the QE report. */
  readonly pckKey: KeyObject;
  /** PEM chain leaf → platform CA → root. */
  readonly pckChainPem: string;
}

/**
 * Certification data type 6 (QE report certification data) wrapping type 5 (PCK
 * chain PEM), as a v4 TDX quote carries it. The same for every quote of one
 * authority, so it is built once.
 */
export function encodeQeCertificationData(inputs: QeCertificationInputs): Uint8Array {
  const qeReport = encodeQeReport(inputs.attestationPoint, inputs.qeAuthData);
  const qeReportSignature = signRaw(qeReport, inputs.pckKey);
  // Intel's QE terminates the PEM chain with a NUL byte; parsers must tolerate it.
  const chain = Buffer.concat([Buffer.from(inputs.pckChainPem, 'latin1'), Uint8Array.of(0)]);
  const inner = Buffer.alloc(6);
  inner.writeUInt16LE(CERTIFICATION_DATA_PCK_CHAIN, 0);
  inner.writeUInt32LE(chain.byteLength, 2);
  const authSize = Buffer.alloc(2);
  authSize.writeUInt16LE(inputs.qeAuthData.byteLength, 0);
  const body = Buffer.concat([
    qeReport,
    qeReportSignature,
    authSize,
    inputs.qeAuthData,
    inner,
    chain,
  ]);
  const outer = Buffer.alloc(6);
  outer.writeUInt16LE(CERTIFICATION_DATA_QE_REPORT, 0);
  outer.writeUInt32LE(body.byteLength, 2);
  return new Uint8Array(Buffer.concat([outer, body]));
}

/** A complete quote: header ‖ body signed by the attestation key, then the auth data. */
export function assembleQuote(
  header: Uint8Array,
  body: Uint8Array,
  attestation: { readonly key: KeyObject; readonly point: Uint8Array },
  certificationData: Uint8Array,
): Uint8Array {
  const signed = Buffer.concat([header, body]);
  const signature = signRaw(signed, attestation.key);
  const authData = Buffer.concat([signature, attestation.point, certificationData]);
  const authSize = Buffer.alloc(4);
  authSize.writeUInt32LE(authData.byteLength, 0);
  return new Uint8Array(Buffer.concat([signed, authSize, authData]));
}

/**
 * A copy of `quote` with the lowest bit of the byte at `offset` flipped
 * (default: the first MRTD byte, inside the signed body).
 */
export function tamperQuote(
  quote: Uint8Array,
  offset: number = TDX_QUOTE_V4_OFFSETS.mrTd,
): Uint8Array {
  if (!Number.isInteger(offset) || offset < 0 || offset >= quote.byteLength) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `tamper offset ${offset} is outside the ${quote.byteLength}-byte quote`,
      { details: { option: 'offset' } },
    );
  }
  const copy = new Uint8Array(quote);
  copy[offset] = copy[offset]! ^ 0x01;
  return copy;
}
