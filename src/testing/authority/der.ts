/**
 * A minimal DER writer for the few ASN.1 shapes the test authority emits by hand
 * (the Intel SGX PCK extension and CRLs). Pure functions over bytes; each returns
 * one complete TLV.
 */

/** Encodes a DER length (short form below 128, long form above). */
function encodeLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  const octets: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) octets.unshift(rest % 256);
  return Uint8Array.of(0x80 | octets.length, ...octets);
}

/** One TLV with the given tag byte and content (a plain Uint8Array, not a Buffer). */
export function tlv(tag: number, content: Uint8Array): Uint8Array {
  const joined = Buffer.concat([Uint8Array.of(tag), encodeLength(content.byteLength), content]);
  return new Uint8Array(joined.buffer, joined.byteOffset, joined.byteLength);
}

/** SEQUENCE of already-encoded elements. */
export function sequence(...elements: Uint8Array[]): Uint8Array {
  return tlv(0x30, Buffer.concat(elements));
}

/** OCTET STRING. */
export function octetString(content: Uint8Array): Uint8Array {
  return tlv(0x04, content);
}

/** BOOLEAN (DER: true is 0xff). */
export function boolean(value: boolean): Uint8Array {
  return tlv(0x01, Uint8Array.of(value ? 0xff : 0x00));
}

/** Minimal two's-complement content octets of a non-negative integer given as big-endian bytes. */
function unsignedContent(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < bytes.byteLength - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  if (trimmed.byteLength === 0) return Uint8Array.of(0);
  return (trimmed[0]! & 0x80) === 0 ? trimmed : Buffer.concat([Uint8Array.of(0), trimmed]);
}

/** Big-endian bytes of a non-negative safe integer. */
function numberBytes(value: number): Uint8Array {
  const octets: number[] = [];
  for (let rest = value; rest > 0; rest = Math.floor(rest / 256)) octets.unshift(rest % 256);
  return Uint8Array.from(octets);
}

/** INTEGER from a non-negative number or from unsigned big-endian bytes (e.g. a serial number). */
export function integer(value: number | Uint8Array): Uint8Array {
  return tlv(0x02, unsignedContent(typeof value === 'number' ? numberBytes(value) : value));
}

/** ENUMERATED from a small non-negative number. */
export function enumerated(value: number): Uint8Array {
  return tlv(0x0a, unsignedContent(numberBytes(value)));
}

/** OBJECT IDENTIFIER from dotted text. */
export function objectIdentifier(oid: string): Uint8Array {
  const arcs = oid.split('.').map(Number);
  const [first = 0, second = 0, ...rest] = arcs;
  const octets: number[] = [first * 40 + second];
  for (const arc of rest) {
    const base128: number[] = [arc & 0x7f];
    for (let high = Math.floor(arc / 128); high > 0; high = Math.floor(high / 128)) {
      base128.unshift(0x80 | (high & 0x7f));
    }
    octets.push(...base128);
  }
  return tlv(0x06, Uint8Array.from(octets));
}

/** RFC 5280 §4.1.2.5 Time: UTCTime for 1950–2049, GeneralizedTime otherwise. */
export function time(date: Date): Uint8Array {
  const iso = date.toISOString();
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050
    ? tlv(0x17, Buffer.from(digits.slice(2), 'latin1'))
    : tlv(0x18, Buffer.from(digits, 'latin1'));
}

/** Context-specific constructed tag `[n]` (EXPLICIT wrapping). */
export function explicit(tagNumber: number, content: Uint8Array): Uint8Array {
  return tlv(0xa0 | tagNumber, content);
}

/** BIT STRING of whole bytes (no unused bits), as signatures are carried. */
export function bitString(content: Uint8Array): Uint8Array {
  return tlv(0x03, Buffer.concat([Uint8Array.of(0), content]));
}

/** AlgorithmIdentifier for ecdsa-with-SHA256 (RFC 5758: parameters absent). */
export function ecdsaWithSha256(): Uint8Array {
  return sequence(objectIdentifier('1.2.840.10045.4.3.2'));
}
