import { createHash, timingSafeEqual } from 'node:crypto';

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

const HEX = /^[0-9a-f]*$/;

/**
 * Normalises a user-supplied hex string: trimmed, lowercase, optional `0x`
 * removed. Returns undefined when what remains is not even-length hex.
 */
export function normalizeHex(value: string): string | undefined {
  let hex = value.trim().toLowerCase();
  if (hex.startsWith('0x')) hex = hex.slice(2);
  if (hex.length % 2 !== 0 || !HEX.test(hex)) return undefined;
  return hex;
}

/** Bytes of a hex string (`0x` and case tolerated); throws TypeError on bad hex. */
export function fromHex(value: string): Uint8Array {
  const hex = normalizeHex(value);
  if (hex === undefined) throw new TypeError('not a hex string');
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** Constant-time equality for equal lengths; false for different lengths. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

export function isAllZero(bytes: Uint8Array): boolean {
  for (const byte of bytes) if (byte !== 0) return false;
  return true;
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return new Uint8Array(hash.digest());
}

export function sha384(...parts: Uint8Array[]): Uint8Array {
  const hash = createHash('sha384');
  for (const part of parts) hash.update(part);
  return new Uint8Array(hash.digest());
}

export function sha512(...parts: Uint8Array[]): Uint8Array {
  const hash = createHash('sha512');
  for (const part of parts) hash.update(part);
  return new Uint8Array(hash.digest());
}
