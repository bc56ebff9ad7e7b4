import type * as Msgpack from '@msgpack/msgpack';
import { describeCause, RaTlsError } from '../errors.js';
import { normalizeHex } from '../util/bytes.js';
import { lazyRequire } from '../util/lazy-require.js';
import { ScaleReader } from './scale-reader.js';
import type { DecodedAttestation, EventLogEntry, RuntimeEvent } from './types.js';

/** dstack refuses `VersionedAttestation` inputs above 10 MiB (docs/protocol.md §1). */
export const MAX_ATTESTATION_BYTES = 10 * 1024 * 1024;

/** The IMR that dstack runtime events extend (RTMR3, docs/protocol.md §2). */
export const RUNTIME_EVENT_IMR = 3;

/** V0 platform variants, in SCALE enum order (docs/protocol.md §1). */
const V0_PLATFORMS = [
  'DstackTdx',
  'DstackGcpTdx',
  'DstackNitroEnclave',
  'DstackAmdSevSnp',
  'DstackAwsNitroTpm',
] as const;

/** Smallest SCALE encodings, used to reject impossible element counts early. */
const MIN_EVENT_LOG_ENTRY_BYTES = 4 + 4 + 1 + 1 + 1;
const MIN_RUNTIME_EVENT_BYTES = 1 + 1;

/**
 * Decodes the payload of the certificate extension 1.3.6.1.4.1.62397.1.8
 * (docs/protocol.md §1). The first byte selects the version: `0x00` is V0 (SCALE,
 * decoded completely), a msgpack map prefix is V1. Anything else, trailing
 * bytes, or inputs above 10 MiB are rejected; the decoder never guesses.
 */
export function decodeVersionedAttestation(bytes: Uint8Array): DecodedAttestation {
  if (bytes.byteLength === 0) {
    throw malformed('the attestation extension is empty');
  }
  if (bytes.byteLength > MAX_ATTESTATION_BYTES) {
    throw malformed(
      `it is ${bytes.byteLength} bytes, more than the ${MAX_ATTESTATION_BYTES}-byte limit dstack enforces`,
    );
  }
  const first = bytes[0]!;
  if (first === 0x00) return decodeV0(bytes);
  if ((first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf) return decodeV1(bytes);
  throw new RaTlsError(
    'UNSUPPORTED_ATTESTATION_FORMAT',
    `Unknown VersionedAttestation version byte 0x${first.toString(16).padStart(2, '0')}: expected 0x00 (V0) or a msgpack map (V1). Upgrade pg-ra-tls if the server runs a newer dstack.`,
    { details: { versionByte: first } },
  );
}

function decodeV0(bytes: Uint8Array): DecodedAttestation {
  const reader = new ScaleReader(bytes, 'VersionedAttestation V0');
  reader.u8('version');
  const variant = reader.u8('platform variant');
  const platform = V0_PLATFORMS[variant];
  if (platform === undefined) {
    throw malformed(`unknown V0 platform variant ${variant}`);
  }
  if (platform !== 'DstackTdx') throw unsupportedPlatform(platform);

  const quote = reader.vecU8('quote');
  const eventLogCount = reader.count('event_log length', MIN_EVENT_LOG_ENTRY_BYTES);
  const eventLog: EventLogEntry[] = [];
  for (let i = 0; i < eventLogCount; i++) {
    eventLog.push(
      Object.freeze({
        imr: reader.u32(`event_log[${i}].imr`),
        eventType: reader.u32(`event_log[${i}].event_type`),
        digest: reader.vecU8(`event_log[${i}].digest`),
        event: reader.string(`event_log[${i}].event`),
        eventPayload: reader.vecU8(`event_log[${i}].event_payload`),
      }),
    );
  }
  const runtimeCount = reader.count('runtime_events length', MIN_RUNTIME_EVENT_BYTES);
  const runtimeEvents: RuntimeEvent[] = [];
  for (let i = 0; i < runtimeCount; i++) {
    runtimeEvents.push(
      Object.freeze({
        event: reader.string(`runtime_events[${i}].event`),
        payload: reader.vecU8(`runtime_events[${i}].payload`),
      }),
    );
  }
  const reportData = reader.fixed(64, 'report_data');
  const config = reader.string('config');
  reader.end();
  return Object.freeze({
    format: 'versioned-v0',
    platform,
    quote,
    eventLog: Object.freeze(eventLog),
    runtimeEvents: Object.freeze(runtimeEvents),
    reportData,
    config,
  });
}

/*
 * V1 layout, from dstack's dstack-attest/src/v1.rs (serde + rmp_serde named):
 * `{version: 1, platform: {kind: "tdx", data: {quote, event_log}}, stack: {kind:
 * "dstack", data: {report_data, runtime_events, config}}}`. serde writes plain
 * `Vec<u8>` fields as arrays of integers and `serde_human_bytes` fields as bin,
 * so byte fields accept both forms.
 */
/** `@msgpack/msgpack`, loaded at the first V1 attestation decoded. */
const msgpack = lazyRequire<typeof Msgpack>('@msgpack/msgpack');

function decodeV1(bytes: Uint8Array): DecodedAttestation {
  const { decode } = msgpack();
  let root: unknown;
  try {
    root = decode(bytes, {
      maxStrLength: bytes.byteLength,
      maxBinLength: bytes.byteLength,
      maxArrayLength: bytes.byteLength,
      maxMapLength: bytes.byteLength,
      maxExtLength: 0,
    });
  } catch (cause) {
    throw malformed(
      'the V1 msgpack does not decode (truncated, trailing bytes or bad types)',
      cause,
    );
  }
  // The decoder keeps the last of duplicate keys: an envelope that says two
  // things about one field must not be read as either.
  const duplicate = findDuplicateMapKey(bytes);
  if (duplicate !== undefined) {
    throw malformed(`the V1 msgpack repeats the map key ${JSON.stringify(duplicate)}`);
  }
  const top = record(root, 'attestation');
  if (top['version'] !== 1) {
    throw new RaTlsError(
      'UNSUPPORTED_ATTESTATION_FORMAT',
      `VersionedAttestation V1 declares version ${JSON.stringify(top['version'])}; only 1 is supported. Upgrade pg-ra-tls if the server runs a newer dstack.`,
    );
  }
  const platformEnvelope = record(top['platform'], 'platform');
  const platformKind = text(platformEnvelope['kind'], 'platform.kind');
  if (platformKind !== 'tdx') throw unsupportedPlatform(platformKind);
  const platformData = record(platformEnvelope['data'], 'platform.data');
  const stackEnvelope = record(top['stack'], 'stack');
  const stackKind = text(stackEnvelope['kind'], 'stack.kind');
  if (stackKind !== 'dstack') {
    throw new RaTlsError(
      'UNSUPPORTED_ATTESTATION_FORMAT',
      `VersionedAttestation V1 stack kind "${stackKind}" is not supported; only "dstack" is.`,
    );
  }
  const stackData = record(stackEnvelope['data'], 'stack.data');

  const quote = byteField(platformData['quote'], 'platform.data.quote');
  const eventLog = list(platformData['event_log'], 'platform.data.event_log').map((item, i) => {
    const where = `platform.data.event_log[${i}]`;
    const entry = record(item, where);
    rejectNewEventVersion(entry['version'], where);
    return Object.freeze({
      imr: u32(entry['imr'], `${where}.imr`),
      eventType: u32(entry['event_type'], `${where}.event_type`),
      digest:
        entry['digest'] === undefined
          ? new Uint8Array(0)
          : byteField(entry['digest'], `${where}.digest`),
      event: text(entry['event'], `${where}.event`),
      eventPayload: byteField(entry['event_payload'], `${where}.event_payload`),
    });
  });
  const runtimeEvents = list(stackData['runtime_events'], 'stack.data.runtime_events').map(
    (item, i) => {
      const where = `stack.data.runtime_events[${i}]`;
      const event = record(item, where);
      rejectNewEventVersion(event['version'], where);
      return Object.freeze({
        event: text(event['event'], `${where}.event`),
        payload: byteField(event['payload'], `${where}.payload`),
      });
    },
  );
  const reportData = byteField(stackData['report_data'], 'stack.data.report_data');
  if (reportData.byteLength !== 64) {
    throw malformed(`stack.data.report_data is ${reportData.byteLength} bytes, expected 64`);
  }
  return Object.freeze({
    format: 'versioned-v1',
    platform: 'DstackTdx',
    quote,
    eventLog: Object.freeze(eventLog),
    runtimeEvents: Object.freeze(runtimeEvents),
    reportData,
    config: text(stackData['config'], 'stack.data.config'),
  });
}

/**
 * Event-log version 2 (a JSON-canonical digest) exists in recent dstack
 * sources but its digest input is still changing there; replaying it with the
 * V1 formula of docs/protocol.md §2 would be wrong, so it is refused outright.
 */
function rejectNewEventVersion(version: unknown, where: string): void {
  if (version === undefined || version === null || version === 1) return;
  throw new RaTlsError(
    'UNSUPPORTED_ATTESTATION_FORMAT',
    `${where} uses event-log version ${JSON.stringify(version)}; only version 1 runtime events are supported. Upgrade pg-ra-tls if the server runs a newer dstack.`,
  );
}

/**
 * Parses the legacy event log of extension 1.3.6.1.4.1.62397.1.2: a JSON array
 * of `{imr, event_type, digest, event, event_payload}` with hex byte fields
 * (docs/protocol.md §1). Throws MALFORMED_EVENT_LOG on anything else.
 */
export function parseLegacyEventLog(json: Uint8Array | string): EventLogEntry[] {
  const size = typeof json === 'string' ? json.length : json.byteLength;
  if (size > MAX_ATTESTATION_BYTES) {
    throw badEventLog(`it is ${size} bytes, more than the ${MAX_ATTESTATION_BYTES}-byte limit`);
  }
  let parsed: unknown;
  try {
    const textValue =
      typeof json === 'string' ? json : new TextDecoder('utf-8', { fatal: true }).decode(json);
    parsed = JSON.parse(textValue);
  } catch (cause) {
    throw badEventLog('it is not valid UTF-8 JSON', cause);
  }
  if (!Array.isArray(parsed)) throw badEventLog('it is not a JSON array');
  return parsed.map((item: unknown, i) => {
    const where = `entry ${i}`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw badEventLog(`${where} is not an object`);
    }
    const entry = item as Record<string, unknown>;
    const imr = entry['imr'];
    const eventType = entry['event_type'];
    const event = entry['event'];
    if (!isU32(imr)) throw badEventLog(`${where}.imr is not a u32`);
    if (!isU32(eventType)) throw badEventLog(`${where}.event_type is not a u32`);
    if (typeof event !== 'string') throw badEventLog(`${where}.event is not a string`);
    return Object.freeze({
      imr,
      eventType,
      digest: entry['digest'] === undefined ? new Uint8Array(0) : hexField(entry['digest'], where),
      event,
      eventPayload: hexField(entry['event_payload'], where),
    });
  });
}

/**
 * The attestation of a legacy certificate (extensions 1.1 + 1.2, dstack ≤ 0.5.8):
 * the runtime events are the IMR 3 entries of the event log.
 */
export function decodeLegacyAttestation(
  quote: Uint8Array,
  eventLogJson: Uint8Array | string,
): DecodedAttestation {
  const eventLog = parseLegacyEventLog(eventLogJson);
  const runtimeEvents = eventLog
    .filter((entry) => entry.imr === RUNTIME_EVENT_IMR)
    .map((entry) => Object.freeze({ event: entry.event, payload: entry.eventPayload }));
  return Object.freeze({
    format: 'legacy',
    platform: 'DstackTdx',
    quote: new Uint8Array(quote),
    eventLog: Object.freeze(eventLog),
    runtimeEvents: Object.freeze(runtimeEvents),
  });
}

function hexField(value: unknown, where: string): Uint8Array {
  if (typeof value !== 'string') throw badEventLog(`${where} has a non-string hex field`);
  const hex = normalizeHex(value);
  if (hex === undefined) throw badEventLog(`${where} has a field that is not hex`);
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

function isU32(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffffffff;
}

function record(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw malformed(`V1 field ${where} is not a map`);
  }
  if (value instanceof Uint8Array) throw malformed(`V1 field ${where} is not a map`);
  return value as Record<string, unknown>;
}

function list(value: unknown, where: string): unknown[] {
  if (!Array.isArray(value)) throw malformed(`V1 field ${where} is not an array`);
  return value;
}

function text(value: unknown, where: string): string {
  if (typeof value !== 'string') throw malformed(`V1 field ${where} is not a string`);
  return value;
}

function u32(value: unknown, where: string): number {
  if (!isU32(value)) throw malformed(`V1 field ${where} is not a u32`);
  return value;
}

function byteField(value: unknown, where: string): Uint8Array {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (Array.isArray(value)) {
    const out = new Uint8Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const byte: unknown = value[i];
      if (!Number.isInteger(byte) || (byte as number) < 0 || (byte as number) > 255) {
        throw malformed(`V1 field ${where} is not a byte array`);
      }
      out[i] = byte as number;
    }
    return out;
  }
  throw malformed(`V1 field ${where} is not bytes`);
}

function unsupportedPlatform(platform: string): RaTlsError {
  return new RaTlsError(
    'UNSUPPORTED_ATTESTATION_FORMAT',
    `The attestation is for platform ${platform}; pg-ra-tls verifies only Intel TDX (DstackTdx) servers.`,
    { details: { platform } },
  );
}

function malformed(reason: string, cause?: unknown): RaTlsError {
  return new RaTlsError(
    'MALFORMED_ATTESTATION',
    `The VersionedAttestation is malformed: ${reason}`,
    {
      cause,
    },
  );
}

function badEventLog(reason: string, cause?: unknown): RaTlsError {
  return new RaTlsError(
    'MALFORMED_EVENT_LOG',
    `The legacy event log (extension 1.3.6.1.4.1.62397.1.2) is malformed: ${reason}`,
    { cause },
  );
}

/** Nesting deeper than any V1 envelope; past it the scan refuses instead of recursing on. */
const MAX_MSGPACK_DEPTH = 32;

/**
 * Walks msgpack that already decoded and returns the first key repeated
 * within one map (as text, or hex for non-string keys), else undefined.
 * Keys compare by their exact encoding, which for strings is their bytes.
 */
function findDuplicateMapKey(bytes: Uint8Array): string | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let duplicate: string | undefined;
  const size = (at: number, width: 1 | 2 | 4): number =>
    width === 1 ? view.getUint8(at) : width === 2 ? view.getUint16(at) : view.getUint32(at);
  // Returns the offset after the item at `at`.
  const skip = (at: number, depth: number): number => {
    if (depth > MAX_MSGPACK_DEPTH) throw new RangeError('msgpack nested too deeply');
    const b = view.getUint8(at);
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) return at + 1;
    if (b >= 0xa0 && b <= 0xbf) return at + 1 + (b & 0x1f);
    if (b >= 0x90 && b <= 0x9f) return items(at + 1, b & 0x0f, depth);
    if (b >= 0x80 && b <= 0x8f) return map(at + 1, b & 0x0f, depth);
    switch (b) {
      case 0xc4:
      case 0xd9:
        return at + 2 + size(at + 1, 1);
      case 0xc5:
      case 0xda:
        return at + 3 + size(at + 1, 2);
      case 0xc6:
      case 0xdb:
        return at + 5 + size(at + 1, 4);
      case 0xca:
        return at + 5;
      case 0xcb:
        return at + 9;
      case 0xcc:
      case 0xd0:
        return at + 2;
      case 0xcd:
      case 0xd1:
        return at + 3;
      case 0xce:
      case 0xd2:
        return at + 5;
      case 0xcf:
      case 0xd3:
        return at + 9;
      // Extension types: the decoder refuses every one with a payload
      // (maxExtLength 0) but reads an empty ext 8/16/32 as ExtData. No V1
      // field is an extension, so none is walked over.
      case 0xc7:
      case 0xc8:
      case 0xc9:
      case 0xd4:
      case 0xd5:
      case 0xd6:
      case 0xd7:
      case 0xd8:
        throw new RangeError(
          `msgpack extension type 0x${b.toString(16)} has no place in a V1 envelope`,
        );
      case 0xdc:
        return items(at + 3, size(at + 1, 2), depth);
      case 0xdd:
        return items(at + 5, size(at + 1, 4), depth);
      case 0xde:
        return map(at + 3, size(at + 1, 2), depth);
      case 0xdf:
        return map(at + 5, size(at + 1, 4), depth);
      default:
        throw new RangeError(`msgpack byte 0x${b.toString(16)} is not a type`);
    }
  };
  const items = (at: number, count: number, depth: number): number => {
    let cursor = at;
    for (let i = 0; i < count; i++) cursor = skip(cursor, depth + 1);
    return cursor;
  };
  const map = (at: number, count: number, depth: number): number => {
    const keys = new Set<string>();
    let cursor = at;
    for (let i = 0; i < count; i++) {
      const keyEnd = skip(cursor, depth + 1);
      const key = Buffer.from(bytes.subarray(cursor, keyEnd)).toString('hex');
      if (keys.has(key) && duplicate === undefined) duplicate = describeKey(bytes, cursor, keyEnd);
      keys.add(key);
      cursor = skip(keyEnd, depth + 1);
    }
    return cursor;
  };
  try {
    skip(0, 0);
  } catch (cause) {
    throw malformed(`the V1 msgpack cannot be walked (${describeCause(cause)})`, cause);
  }
  return duplicate;
}

function describeKey(bytes: Uint8Array, start: number, end: number): string {
  const b = bytes[start]!;
  const header = b >= 0xa0 && b <= 0xbf ? 1 : b === 0xd9 ? 2 : b === 0xda ? 3 : b === 0xdb ? 5 : 0;
  if (header === 0) return `0x${Buffer.from(bytes.subarray(start, end)).toString('hex')}`;
  return Buffer.from(bytes.subarray(start + header, end)).toString('utf8');
}
