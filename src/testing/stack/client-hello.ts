/**
 * A pure, bounds-checked reader of the TLS ClientHello's server_name, as a
 * TLS-passthrough gateway needs it (docs/protocol.md §5; RFC 8446 §4.1.2, RFC 6066 §3).
 * It never throws: every input yields complete, incomplete or invalid.
 */

/** The outcome of {@link parseClientHello}. */
export type ClientHelloResult =
  | { readonly status: 'complete'; readonly serverName: string | undefined }
  /** A prefix of what may still become a valid ClientHello: read more. */
  | { readonly status: 'incomplete' }
  | { readonly status: 'invalid'; readonly reason: string };

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXTENSION_SERVER_NAME = 0;
const NAME_TYPE_HOST_NAME = 0;
const RECORD_HEADER_BYTES = 5;
/** RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes. */
const MAX_RECORD_BYTES = 16_384;
const MAX_HOST_NAME_BYTES = 255;
const HOST_NAME = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/;

const INCOMPLETE: ClientHelloResult = Object.freeze({ status: 'incomplete' });

class Malformed extends Error {}

function invalid(reason: string): ClientHelloResult {
  return Object.freeze({ status: 'invalid', reason });
}

/**
 * Reads the first ClientHello from the bytes a client sent first, reassembling
 * it across handshake records if it is fragmented. `serverName` is the
 * lowercased host_name of the server_name extension, or undefined without one.
 */
export function parseClientHello(bytes: Uint8Array): ClientHelloResult {
  const handshake: number[] = [];
  let offset = 0;
  for (;;) {
    const header = bytes.subarray(offset, offset + RECORD_HEADER_BYTES);
    if (header.length >= 1 && header[0] !== RECORD_HANDSHAKE) {
      return invalid('not a TLS handshake record');
    }
    if (header.length >= 2 && header[1] !== 3) return invalid('not a TLS record version');
    if (header.length < RECORD_HEADER_BYTES) return INCOMPLETE;
    const recordLength = (header[3]! << 8) | header[4]!;
    if (recordLength === 0 || recordLength > MAX_RECORD_BYTES) {
      return invalid(`bad TLS record length ${recordLength}`);
    }
    const fragment = bytes.subarray(
      offset + RECORD_HEADER_BYTES,
      offset + RECORD_HEADER_BYTES + recordLength,
    );
    for (const byte of fragment) handshake.push(byte);
    if (handshake.length >= 1 && handshake[0] !== HANDSHAKE_CLIENT_HELLO) {
      return invalid('not a ClientHello');
    }
    if (handshake.length >= 4) {
      const messageLength = (handshake[1]! << 16) | (handshake[2]! << 8) | handshake[3]!;
      if (handshake.length >= 4 + messageLength) {
        try {
          return readClientHelloBody(Uint8Array.from(handshake.slice(4, 4 + messageLength)));
        } catch (error) {
          return invalid(error instanceof Malformed ? error.message : 'unparsable ClientHello');
        }
      }
    }
    if (fragment.length < recordLength) return INCOMPLETE;
    offset += RECORD_HEADER_BYTES + recordLength;
  }
}

function readClientHelloBody(body: Uint8Array): ClientHelloResult {
  const reader = new Reader(body);
  const legacyVersion = reader.u16('legacy_version');
  if (legacyVersion >> 8 !== 3) throw new Malformed('bad ClientHello version');
  reader.skip(32, 'random');
  const sessionIdLength = reader.u8('session id length');
  if (sessionIdLength > 32) throw new Malformed('session id longer than 32 bytes');
  reader.skip(sessionIdLength, 'session id');
  const cipherSuitesLength = reader.u16('cipher suites length');
  if (cipherSuitesLength < 2 || cipherSuitesLength % 2 !== 0) {
    throw new Malformed('bad cipher suites length');
  }
  reader.skip(cipherSuitesLength, 'cipher suites');
  const compressionLength = reader.u8('compression methods length');
  if (compressionLength < 1) throw new Malformed('no compression method');
  reader.skip(compressionLength, 'compression methods');
  if (reader.remaining === 0) return Object.freeze({ status: 'complete', serverName: undefined });

  const extensionsLength = reader.u16('extensions length');
  if (extensionsLength !== reader.remaining) {
    throw new Malformed('extensions length does not match the ClientHello');
  }
  let serverName: string | undefined;
  let sawServerName = false;
  while (reader.remaining > 0) {
    const type = reader.u16('extension type');
    const data = reader.bytes(reader.u16('extension length'), 'extension data');
    if (type !== EXTENSION_SERVER_NAME) continue;
    if (sawServerName) throw new Malformed('duplicate server_name extension');
    sawServerName = true;
    serverName = readServerName(data);
  }
  return Object.freeze({ status: 'complete', serverName });
}

function readServerName(data: Uint8Array): string | undefined {
  const reader = new Reader(data);
  const listLength = reader.u16('server name list length');
  if (listLength === 0 || listLength !== reader.remaining) {
    throw new Malformed('bad server name list length');
  }
  let hostName: string | undefined;
  while (reader.remaining > 0) {
    const nameType = reader.u8('server name type');
    const name = reader.bytes(reader.u16('server name length'), 'server name');
    if (nameType !== NAME_TYPE_HOST_NAME) continue;
    // RFC 6066 §3: at most one name of each type.
    if (hostName !== undefined) throw new Malformed('more than one host_name');
    if (name.length === 0 || name.length > MAX_HOST_NAME_BYTES) {
      throw new Malformed('bad host_name length');
    }
    const text = Buffer.from(name).toString('latin1').toLowerCase();
    if (!HOST_NAME.test(text)) throw new Malformed('host_name is not a DNS name');
    hostName = text;
  }
  return hostName;
}

/** Bounds-checked big-endian reads; throws Malformed past the end. */
class Reader {
  #offset = 0;
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  get remaining(): number {
    return this.#bytes.length - this.#offset;
  }

  u8(what: string): number {
    return this.bytes(1, what)[0]!;
  }

  u16(what: string): number {
    const two = this.bytes(2, what);
    return (two[0]! << 8) | two[1]!;
  }

  skip(length: number, what: string): void {
    this.bytes(length, what);
  }

  bytes(length: number, what: string): Uint8Array {
    if (length > this.remaining) throw new Malformed(`truncated ${what}`);
    const slice = this.#bytes.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return slice;
  }
}
