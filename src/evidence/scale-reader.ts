import { type ErrorCode, RaTlsError } from '../errors.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A bounds-checked reader of SCALE-encoded bytes (the codec of dstack's
 * `VersionedAttestation` V0, docs/protocol.md §1).
 *
 * Every read checks the remaining length first, so a forged length can only
 * make decoding fail, never allocate or read past the end. Failures are
 * {@link RaTlsError}s with the code given at construction.
 */
export class ScaleReader {
  readonly #bytes: Uint8Array;
  readonly #code: ErrorCode;
  readonly #what: string;
  #offset = 0;

  /**
   * @param bytes the encoded input
   * @param what what the input is, for error messages (e.g. "VersionedAttestation V0")
   * @param code the error code of every decoding failure
   */
  constructor(bytes: Uint8Array, what: string, code: ErrorCode = 'MALFORMED_ATTESTATION') {
    this.#bytes = bytes;
    this.#what = what;
    this.#code = code;
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.#bytes.byteLength - this.#offset;
  }

  /** Reads one byte. */
  u8(field: string): number {
    this.#need(1, field);
    return this.#bytes[this.#offset++]!;
  }

  /** Reads a little-endian u32. */
  u32(field: string): number {
    this.#need(4, field);
    const b = this.#bytes;
    const o = this.#offset;
    this.#offset += 4;
    return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;
  }

  /**
   * Reads a `Compact<u32>`, the length prefix of SCALE vectors and strings.
   * Non-canonical encodings and values above u32 are rejected, as
   * parity-scale-codec does.
   */
  compact(field: string): number {
    const first = this.u8(field);
    switch (first & 0b11) {
      case 0b00:
        return first >>> 2;
      case 0b01: {
        const value = (first | (this.u8(field) << 8)) >>> 2;
        if (value < 1 << 6) this.#fail(`${field}: non-canonical compact integer`);
        return value;
      }
      case 0b10: {
        this.#offset -= 1;
        const value = Math.floor(this.u32(field) / 4);
        if (value < 1 << 14) this.#fail(`${field}: non-canonical compact integer`);
        return value;
      }
      default: {
        // Big-integer mode: only a 4-byte payload fits a Compact<u32>.
        if (first >>> 2 !== 0) this.#fail(`${field}: compact integer larger than u32`);
        const value = this.u32(field);
        if (value < 1 << 30) this.#fail(`${field}: non-canonical compact integer`);
        return value;
      }
    }
  }

  /**
   * Reads a `Compact` element count and checks that `count × minElementSize`
   * bytes can still follow, so a huge count fails before any allocation.
   */
  count(field: string, minElementSize: number): number {
    const count = this.compact(field);
    if (count * minElementSize > this.remaining) {
      this.#fail(`${field}: ${count} elements cannot fit in the ${this.remaining} bytes left`);
    }
    return count;
  }

  /** Reads exactly `length` bytes (a copy). */
  fixed(length: number, field: string): Uint8Array {
    this.#need(length, field);
    // A copy, and a plain Uint8Array even when the input is a Buffer.
    const out = new Uint8Array(this.#bytes.subarray(this.#offset, this.#offset + length));
    this.#offset += length;
    return out;
  }

  /** Reads a `Vec<u8>`: Compact length, then the bytes. */
  vecU8(field: string): Uint8Array {
    return this.fixed(this.compact(field), field);
  }

  /** Reads a `String`: a `Vec<u8>` that must be valid UTF-8. */
  string(field: string): string {
    const bytes = this.vecU8(field);
    try {
      return utf8.decode(bytes);
    } catch {
      return this.#fail(`${field}: not valid UTF-8`);
    }
  }

  /** Fails unless every byte was consumed (dstack rejects trailing bytes). */
  end(): void {
    if (this.remaining !== 0) {
      this.#fail(`${this.remaining} trailing bytes after the last field`);
    }
  }

  #need(length: number, field: string): void {
    if (length > this.remaining) {
      this.#fail(
        `${field}: needs ${length} bytes at offset ${this.#offset}, only ${this.remaining} left (truncated?)`,
      );
    }
  }

  #fail(reason: string): never {
    throw new RaTlsError(this.#code, `${this.#what} is malformed: ${reason}`, {
      details: { offset: this.#offset },
    });
  }
}
