/**
 * The one DER reader of pg-ra-tls: a strict tag-length header reader for the
 * few places that walk DER by hand (the RA-TLS certificate's SPKI and
 * extension wrapping, the Intel SGX extension of PCK certificates). Strict
 * because these bytes come from the network: only definite, minimal lengths
 * that stay inside the input are accepted. Pure code; throws plain Errors that
 * callers turn into their own typed error.
 */

/** One DER element: its tag, where its value starts and where it ends (exclusive). */
export interface DerElement {
  readonly tag: number;
  readonly valueStart: number;
  readonly end: number;
}

/** DER universal tags the hand-written readers look for. */
export const DER_TAG = Object.freeze({
  integer: 0x02,
  octetString: 0x04,
  oid: 0x06,
  sequence: 0x30,
  /** `[0]` constructed, context-specific: an X.509 version. */
  contextZero: 0xa0,
});

/**
 * Reads the DER header at `offset` of `bytes`: single-byte tags, definite
 * lengths in minimal form (at most 4 length bytes), and a value that ends
 * inside `bytes`. Throws an Error saying what is wrong otherwise.
 */
export function readDerElement(bytes: Uint8Array, offset: number): DerElement {
  if (offset < 0 || offset + 2 > bytes.byteLength) throw new Error('truncated DER header');
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new Error('multi-byte DER tags are not expected here');
  const first = bytes[offset + 1]!;
  let length: number;
  let headerLength: number;
  if (first < 0x80) {
    length = first;
    headerLength = 2;
  } else {
    const count = first & 0x7f;
    if (count === 0) throw new Error('indefinite BER length is not DER');
    if (count > 4) throw new Error('DER length field is too long');
    if (offset + 2 + count > bytes.byteLength) throw new Error('truncated DER length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[offset + 2 + i]!;
    if (bytes[offset + 2]! === 0 || length < 0x80) throw new Error('non-minimal DER length');
    headerLength = 2 + count;
  }
  const valueStart = offset + headerLength;
  const end = valueStart + length;
  if (end > bytes.byteLength) throw new Error('DER length runs past the end of the input');
  return { tag, valueStart, end };
}

/** The value bytes of `element` (a view into `bytes`, not a copy). */
export function derValue(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.valueStart, element.end);
}
