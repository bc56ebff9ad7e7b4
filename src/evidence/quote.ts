import { RaTlsError } from '../errors.js';
import { toHex } from '../util/bytes.js';
import type { ParsedQuote } from './types.js';

/** Quote header size (docs/protocol.md §2). */
export const QUOTE_HEADER_BYTES = 48;
/** TEE type of TDX quotes; 0 is SGX (docs/protocol.md §2). */
export const TEE_TYPE_TDX = 0x81;
export const TEE_TYPE_SGX = 0x00;

const TD_REPORT10_BYTES = 584;
const TD_REPORT15_BYTES = 648;
/** v5 body descriptor: u16 body type + u32 body size. */
const BODY_DESCRIPTOR_BYTES = 6;
const BODY_TYPE_SGX = 1;
const BODY_TYPE_TD10 = 2;
const BODY_TYPE_TD15 = 3;
/** Offset of report_data inside a TD report (after the 9 fixed fields and 4 RTMRs). */
const REPORT_DATA_OFFSET_IN_BODY = 520;

/**
 * Parses the header and TD report of an Intel TDX quote: v4 (TD report 1.0)
 * or v5 (body descriptor, then TD report 1.0 or 1.5), docs/protocol.md §2.
 *
 * Pure structure only: signatures are the verifier's job. SGX quotes (and any
 * other TEE type) fail with NOT_TDX; truncated or inconsistent quotes with
 * MALFORMED_QUOTE. Bytes after the signature data are tolerated because real
 * quotes carry zero padding there (measured: 70 bytes in the v4 fixtures).
 */
export function parseQuote(bytes: Uint8Array): ParsedQuote {
  if (bytes.byteLength < QUOTE_HEADER_BYTES) {
    throw malformed(`it is ${bytes.byteLength} bytes, shorter than the 48-byte header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(0, true);
  const attestationKeyType = view.getUint16(2, true);
  const teeType = view.getUint32(4, true);
  if (teeType !== TEE_TYPE_TDX) {
    const kind =
      teeType === TEE_TYPE_SGX ? 'an SGX enclave quote' : `TEE type 0x${teeType.toString(16)}`;
    throw new RaTlsError(
      'NOT_TDX',
      `The server's quote is ${kind}, not an Intel TDX trust-domain quote; pg-ra-tls only trusts TDX servers.`,
      { details: { teeType, version } },
    );
  }

  let offset = QUOTE_HEADER_BYTES;
  let bodyType: 'td10' | 'td15';
  let quoteVersion: 4 | 5;
  if (version === 4) {
    quoteVersion = 4;
    bodyType = 'td10';
  } else if (version === 5) {
    quoteVersion = 5;
    need(bytes, offset, BODY_DESCRIPTOR_BYTES, 'the v5 body descriptor');
    const descriptorType = view.getUint16(offset, true);
    const bodySize = view.getUint32(offset + 2, true);
    offset += BODY_DESCRIPTOR_BYTES;
    if (descriptorType === BODY_TYPE_SGX) {
      throw new RaTlsError(
        'NOT_TDX',
        'The server quote v5 carries an SGX enclave report, not a TD report.',
        {
          details: { teeType, version },
        },
      );
    }
    if (descriptorType === BODY_TYPE_TD10) bodyType = 'td10';
    else if (descriptorType === BODY_TYPE_TD15) bodyType = 'td15';
    else throw malformed(`unknown v5 body type ${descriptorType}`);
    const expected = bodyType === 'td10' ? TD_REPORT10_BYTES : TD_REPORT15_BYTES;
    if (bodySize !== expected) {
      throw malformed(
        `the v5 body descriptor says ${bodySize} bytes, a ${bodyType} report is ${expected}`,
      );
    }
  } else {
    throw malformed(`version ${version} is not a TDX quote version (4 or 5)`);
  }

  const bodyStart = offset;
  const bodyLength = bodyType === 'td10' ? TD_REPORT10_BYTES : TD_REPORT15_BYTES;
  need(
    bytes,
    bodyStart,
    bodyLength,
    `the ${bodyType === 'td10' ? 'TD report 1.0' : 'TD report 1.5'}`,
  );
  const signatureStart = bodyStart + bodyLength;
  need(bytes, signatureStart, 4, 'the signature data length');
  const signatureLength = view.getUint32(signatureStart, true);
  need(bytes, signatureStart + 4, signatureLength, 'the signature data');

  let cursor = bodyStart;
  const take = (length: number): Uint8Array => {
    const field = bytes.subarray(cursor, cursor + length);
    cursor += length;
    return field;
  };
  const teeTcbSvn = toHex(take(16));
  const mrSeam = toHex(take(48));
  const mrSignerSeam = toHex(take(48));
  const seamAttributes = toHex(take(8));
  const tdAttributesBytes = take(8);
  const xfam = toHex(take(8));
  const mrtd = toHex(take(48));
  const mrConfigId = toHex(take(48));
  const mrOwner = toHex(take(48));
  const mrOwnerConfig = toHex(take(48));
  const rtmr0 = toHex(take(48));
  const rtmr1 = toHex(take(48));
  const rtmr2 = toHex(take(48));
  const rtmr3 = toHex(take(48));
  const reportData = new Uint8Array(take(64));
  const td15 =
    bodyType === 'td15' ? { teeTcbSvn2: toHex(take(16)), mrServiceTd: toHex(take(48)) } : {};

  return Object.freeze({
    version: quoteVersion,
    attestationKeyType,
    teeType,
    bodyType,
    teeTcbSvn,
    mrSeam,
    mrSignerSeam,
    seamAttributes,
    tdAttributes: toHex(tdAttributesBytes),
    xfam,
    mrtd,
    mrConfigId,
    mrOwner,
    mrOwnerConfig,
    rtmr0,
    rtmr1,
    rtmr2,
    rtmr3,
    reportData,
    ...td15,
    // Debug TD: bit 0 of td_attributes (docs/protocol.md §2).
    isDebug: (tdAttributesBytes[0]! & 0x01) === 0x01,
  });
}

/**
 * Byte offset of report_data in a TDX quote: 568 for v4 (docs/protocol.md §2),
 * 574 for v5 (after the 6-byte body descriptor). Undefined for other versions.
 */
export function quoteReportDataOffset(version: number): number | undefined {
  if (version === 4) return QUOTE_HEADER_BYTES + REPORT_DATA_OFFSET_IN_BODY;
  if (version === 5) return QUOTE_HEADER_BYTES + BODY_DESCRIPTOR_BYTES + REPORT_DATA_OFFSET_IN_BODY;
  return undefined;
}

function need(bytes: Uint8Array, offset: number, length: number, what: string): void {
  if (offset + length > bytes.byteLength) {
    throw malformed(
      `${what} needs ${length} bytes at offset ${offset}, but the quote is ${bytes.byteLength} bytes (truncated?)`,
    );
  }
}

function malformed(reason: string): RaTlsError {
  return new RaTlsError('MALFORMED_QUOTE', `The server's TDX quote is malformed: ${reason}.`);
}
