/**
 * Tests that kill the mutants of src/evidence that survived `npm run mutate`
 * (issue 10): exact boundaries of the SCALE reader and the quote parser, the
 * identity read from RTMR3 events, and the codes, messages and details of the
 * binding check. Pure: the real dstack and Intel fixtures, no I/O.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { encode as encodeMsgpack } from '@msgpack/msgpack';
import { isRaTlsError } from '../src/errors.js';
import { checkBinding, expectedReportData } from '../src/evidence/binding.js';
import {
  readCertificateFacts,
  readRaTlsCertificate,
  unwrapOctetString,
} from '../src/evidence/certificate.js';
import { parseQuote, quoteReportDataOffset } from '../src/evidence/quote.js';
import { replayRtmr3, verifyAppIdentity } from '../src/evidence/rtmr3.js';
import { ScaleReader } from '../src/evidence/scale-reader.js';
import type { RuntimeEvent } from '../src/evidence/types.js';
import {
  decodeVersionedAttestation,
  parseLegacyEventLog,
} from '../src/evidence/versioned-attestation.js';
import { encodeCertificate, encodeName } from '../src/testing/authority/certificate.js';
import {
  bitString,
  ecdsaWithSha256,
  explicit,
  integer,
  objectIdentifier,
  sequence,
  time,
  tlv,
} from '../src/testing/authority/der.js';
import { deriveP256Key } from '../src/testing/authority/keys.js';
import {
  createRaTlsCertificate,
  generateRaTlsKeyPair,
  withReportData,
} from '../src/testing/ra-tls-certificate.js';
import { toHex } from '../src/util/bytes.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);
const fixture = (path: string) => new Uint8Array(readFileSync(new URL(path, FIXTURES)));
const v4 = fixture('intel-tdx-v4/quote.bin');
const v5 = fixture('intel-tdx-v5/quote.bin');
const sample = decodeVersionedAttestation(fixture('dstack-attestation-v0/attestation.bin'));

interface Expected {
  readonly code: string;
  readonly message?: RegExp;
  readonly details?: Record<string, unknown>;
}

function failsWith(run: () => unknown, expected: Expected): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, expected.code, error.message);
    if (expected.message !== undefined) assert.match(error.message, expected.message);
    if (expected.details !== undefined) assert.deepEqual(error.details, expected.details);
    return true;
  });
}

const reader = (bytes: number[], code?: 'MALFORMED_EVENT_LOG') =>
  new ScaleReader(new Uint8Array(bytes), 'Thing', code);

describe('ScaleReader: exact boundaries', () => {
  test('u32 is little-endian over all four bytes, up to 0xffffffff', () => {
    assert.equal(reader([0x78, 0x56, 0x34, 0x12]).u32('n'), 0x12345678);
    assert.equal(reader([0xff, 0xff, 0xff, 0xff]).u32('n'), 0xffffffff);
    assert.equal(reader([0, 0, 0, 0x80]).u32('n'), 0x80000000);
  });

  test('each compact mode decodes its smallest canonical value and refuses the one below', () => {
    // Single byte: value << 2.
    assert.equal(reader([63 << 2]).compact('n'), 63);
    // Two bytes: 64 is the smallest that needs them.
    assert.equal(reader([0x01, 0x01]).compact('n'), 64);
    failsWith(() => reader([0xfd, 0x00]).compact('len'), {
      code: 'MALFORMED_ATTESTATION',
      message: /^Thing is malformed: len: non-canonical compact integer$/,
    });
    // Four bytes: 2^14 is the smallest.
    const four = (value: number) => {
      const raw = value * 4 + 2;
      return [raw & 0xff, (raw >>> 8) & 0xff, (raw >>> 16) & 0xff, raw >>> 24];
    };
    assert.equal(reader(four(1 << 14)).compact('n'), 1 << 14);
    assert.equal(reader(four(2 ** 30 - 1)).compact('n'), 2 ** 30 - 1);
    failsWith(() => reader(four((1 << 14) - 1)).compact('len'), {
      code: 'MALFORMED_ATTESTATION',
      message: /len: non-canonical compact integer/,
    });
    // Big-integer mode with a 4-byte payload: 2^30 is the smallest.
    assert.equal(reader([0b11, 0, 0, 0, 0x40]).compact('n'), 2 ** 30);
    assert.equal(reader([0b11, 0xff, 0xff, 0xff, 0xff]).compact('n'), 0xffffffff);
    failsWith(() => reader([0b11, 0xff, 0xff, 0xff, 0x3f]).compact('len'), {
      code: 'MALFORMED_ATTESTATION',
      message: /len: non-canonical compact integer/,
    });
    failsWith(() => reader([0b111, 0, 0, 0, 0x40, 0]).compact('len'), {
      code: 'MALFORMED_ATTESTATION',
      message: /len: compact integer larger than u32/,
    });
  });

  test('count accepts exactly as many elements as can fit, and no more', () => {
    const fits = reader([3 << 2, 1, 2, 3, 4, 5, 6]);
    assert.equal(fits.count('items', 2), 3);
    assert.equal(fits.remaining, 6);
    failsWith(() => reader([4 << 2, 1, 2, 3, 4, 5, 6, 7]).count('items', 2), {
      code: 'MALFORMED_ATTESTATION',
      message: /items: 4 elements cannot fit in the 7 bytes left/,
      details: { offset: 1 },
    });
  });

  test('reads need exactly their length: the last byte is readable, one more is not', () => {
    const r = reader([2 << 2, 0xaa, 0xbb]);
    assert.deepEqual(r.vecU8('v'), new Uint8Array([0xaa, 0xbb]));
    assert.equal(r.remaining, 0);
    r.end();
    failsWith(() => r.u8('next'), {
      code: 'MALFORMED_ATTESTATION',
      message: /next: needs 1 bytes at offset 3, only 0 left \(truncated\?\)/,
      details: { offset: 3 },
    });
    failsWith(() => reader([1, 2, 3]).u32('n'), {
      code: 'MALFORMED_ATTESTATION',
      message: /n: needs 4 bytes at offset 0, only 3 left/,
    });
    failsWith(() => reader([1, 2]).fixed(3, 'f'), { code: 'MALFORMED_ATTESTATION' });
  });

  test('fixed returns a copy as a plain Uint8Array, and moves past it', () => {
    const input = Buffer.from([1, 2, 3, 4]);
    const r = new ScaleReader(input, 'Thing');
    const out = r.fixed(2, 'f');
    assert.equal(Object.getPrototypeOf(out), Uint8Array.prototype);
    input[0] = 9;
    assert.deepEqual(out, new Uint8Array([1, 2]));
    assert.equal(r.u8('g'), 3);
  });

  test('strings must be UTF-8; trailing bytes are counted; the code is the one given', () => {
    assert.equal(reader([3 << 2, 0x61, 0x62, 0x63]).string('s'), 'abc');
    failsWith(() => reader([1 << 2, 0xff], 'MALFORMED_EVENT_LOG').string('name'), {
      code: 'MALFORMED_EVENT_LOG',
      message: /^Thing is malformed: name: not valid UTF-8$/,
    });
    const r = reader([1, 2, 3]);
    r.u8('a');
    failsWith(() => r.end(), {
      code: 'MALFORMED_ATTESTATION',
      message: /^Thing is malformed: 2 trailing bytes after the last field$/,
      details: { offset: 1 },
    });
  });
});

describe('parseQuote: exact boundaries and refusals', () => {
  const signatureEnd = (bytes: Uint8Array, bodyEnd: number) =>
    bodyEnd + 4 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(bodyEnd, true);

  test('a quote ending exactly after its signature data parses; one byte less does not', () => {
    const end = signatureEnd(v4, 48 + 584);
    assert.equal(parseQuote(v4.subarray(0, end)).mrtd, parseQuote(v4).mrtd);
    failsWith(() => parseQuote(v4.subarray(0, end - 1)), {
      code: 'MALFORMED_QUOTE',
      message: new RegExp(
        `^The server's TDX quote is malformed: the signature data needs \\d+ bytes at offset ${48 + 584 + 4}, but the quote is ${end - 1} bytes \\(truncated\\?\\)\\.$`,
      ),
    });
    const end5 = signatureEnd(v5, 48 + 6 + 648);
    assert.equal(parseQuote(v5.subarray(0, end5)).bodyType, 'td15');
    failsWith(() => parseQuote(v5.subarray(0, 48 + 6 + 648 + 3)), {
      code: 'MALFORMED_QUOTE',
      message: /the signature data length needs 4 bytes/,
    });
  });

  test('the header, the v5 descriptor and each body are needed whole', () => {
    failsWith(() => parseQuote(v4.subarray(0, 47)), {
      code: 'MALFORMED_QUOTE',
      message: /it is 47 bytes, shorter than the 48-byte header/,
    });
    failsWith(() => parseQuote(v5.subarray(0, 53)), {
      code: 'MALFORMED_QUOTE',
      message: /the v5 body descriptor needs 6 bytes at offset 48/,
    });
    failsWith(() => parseQuote(v4.subarray(0, 48 + 583)), {
      code: 'MALFORMED_QUOTE',
      message: /the TD report 1\.0 needs 584 bytes at offset 48/,
    });
    failsWith(() => parseQuote(v5.subarray(0, 54 + 647)), {
      code: 'MALFORMED_QUOTE',
      message: /the TD report 1\.5 needs 648 bytes at offset 54/,
    });
  });

  test('TEE types other than TDX are NOT_TDX with the type and version in details', () => {
    const sgx = new Uint8Array(v4);
    new DataView(sgx.buffer).setUint32(4, 0, true);
    failsWith(() => parseQuote(sgx), {
      code: 'NOT_TDX',
      message: /^The server's quote is an SGX enclave quote, not an Intel TDX/,
      details: { teeType: 0, version: 4 },
    });
    const other = new Uint8Array(v4);
    new DataView(other.buffer).setUint32(4, 0xab, true);
    failsWith(() => parseQuote(other), {
      code: 'NOT_TDX',
      message: /quote is TEE type 0xab, not an Intel TDX/,
      details: { teeType: 0xab, version: 4 },
    });
  });

  test('v5 body types: SGX is NOT_TDX, TD 1.0 is read as td10, anything else is malformed', () => {
    const withBody = (type: number, size: number) => {
      const bytes = new Uint8Array(v5);
      const view = new DataView(bytes.buffer);
      view.setUint16(48, type, true);
      view.setUint32(50, size, true);
      return bytes;
    };
    failsWith(() => parseQuote(withBody(1, 384)), {
      code: 'NOT_TDX',
      message: /v5 carries an SGX enclave report/,
      details: { teeType: 0x81, version: 5 },
    });
    failsWith(() => parseQuote(withBody(4, 648)), {
      code: 'MALFORMED_QUOTE',
      message: /unknown v5 body type 4/,
    });
    failsWith(() => parseQuote(withBody(3, 584)), {
      code: 'MALFORMED_QUOTE',
      message: /the v5 body descriptor says 584 bytes, a td15 report is 648/,
    });
    // A v5 quote carrying a TD report 1.0: the 1.5 report without its last 64 bytes.
    const td10 = new Uint8Array(
      Buffer.concat([withBody(2, 584).subarray(0, 54 + 584), v5.subarray(54 + 648)]),
    );
    failsWith(() => parseQuote(withBody(2, 648)), {
      code: 'MALFORMED_QUOTE',
      message: /says 648 bytes, a td10 report is 584/,
    });
    const parsed = parseQuote(td10);
    assert.equal(parsed.bodyType, 'td10');
    assert.equal(parsed.version, 5);
    assert.equal(parsed.mrServiceTd, undefined);
    assert.equal(parsed.teeTcbSvn2, undefined);
  });

  test('versions other than 4 and 5 are malformed, naming the version', () => {
    for (const version of [3, 6]) {
      const bytes = new Uint8Array(v4);
      new DataView(bytes.buffer).setUint16(0, version, true);
      failsWith(() => parseQuote(bytes), {
        code: 'MALFORMED_QUOTE',
        message: new RegExp(`version ${version} is not a TDX quote version \\(4 or 5\\)`),
      });
    }
    assert.equal(quoteReportDataOffset(5), 574);
    assert.equal(quoteReportDataOffset(3), undefined);
  });

  test('fields are read at their offsets in the TD report, and only bit 0 of td_attributes is debug', () => {
    const quote = parseQuote(v4);
    assert.equal(quote.attestationKeyType, 2);
    assert.equal(quote.teeTcbSvn, toHex(v4.subarray(48, 64)));
    assert.equal(quote.mrSeam, toHex(v4.subarray(64, 112)));
    assert.equal(quote.seamAttributes, toHex(v4.subarray(160, 168)));
    assert.equal(quote.xfam, toHex(v4.subarray(176, 184)));
    assert.equal(quote.mrConfigId, toHex(v4.subarray(232, 280)));
    assert.equal(quote.mrOwner, toHex(v4.subarray(280, 328)));
    assert.equal(quote.mrOwnerConfig, toHex(v4.subarray(328, 376)));
    assert.equal(quote.rtmr1, toHex(v4.subarray(424, 472)));
    assert.equal(quote.rtmr2, toHex(v4.subarray(472, 520)));
    const v5quote = parseQuote(v5);
    assert.equal(v5quote.teeTcbSvn2, toHex(v5.subarray(54 + 584, 54 + 600)));
    assert.equal(v5quote.mrServiceTd, toHex(v5.subarray(54 + 600, 54 + 648)));
    const flip = (value: number) => {
      const bytes = new Uint8Array(v4);
      bytes[168] = value;
      return parseQuote(bytes);
    };
    assert.equal(flip(0x01).isDebug, true);
    assert.equal(flip(0xff).isDebug, true);
    assert.equal(flip(0xfe).isDebug, false);
    assert.equal(flip(0x10).tdAttributes, `10${quote.tdAttributes.slice(2)}`);
    assert.ok(Object.isFrozen(quote));
  });
});

describe('RTMR3 identity: exact reading rules', () => {
  const event = (name: string, payload: number[] | string): RuntimeEvent => ({
    event: name,
    payload:
      typeof payload === 'string' ? new TextEncoder().encode(payload) : new Uint8Array(payload),
  });
  const identityOf = (events: RuntimeEvent[]) =>
    verifyAppIdentity(events, toHex(replayRtmr3(events)));

  test('the first occurrence of an event defines it; empty payloads define nothing', () => {
    const app = identityOf([
      event('app-id', [0xaa]),
      event('app-id', [0xbb]),
      event('compose-hash', []),
      event('instance-id', [0x01, 0x02]),
      event('key-provider', []),
      event('os-image-hash', [0x0f]),
    ]);
    assert.equal(app.appId, 'aa');
    assert.equal(app.composeHash, undefined);
    assert.equal(app.instanceId, '0102');
    assert.equal(app.keyProvider, undefined);
    assert.equal(app.osImageHash, '0f');
  });

  test('key-provider is text; the events are kept, frozen, copies', () => {
    const events = [event('key-provider', '{"name":"kms"}'), event('system-ready', [])];
    const app = identityOf(events);
    assert.equal(app.keyProvider, '{"name":"kms"}');
    assert.equal(app.events.length, 2);
    assert.notEqual(app.events[0], events[0]);
    assert.deepEqual(app.events[0], events[0]);
    assert.ok(
      Object.isFrozen(app) && Object.isFrozen(app.events) && Object.isFrozen(app.events[0]),
    );
  });

  test('an event before system-ready still counts; one after it does not', () => {
    const app = identityOf([
      event('app-id', [0x01]),
      event('system-ready', []),
      event('compose-hash', [0x02]),
    ]);
    assert.equal(app.appId, '01');
    assert.equal(app.composeHash, undefined);
  });

  test('an RTMR3 that is not hex is RTMR_MISMATCH naming both values', () => {
    const events = [event('app-id', [0x01])];
    const replayed = toHex(replayRtmr3(events));
    failsWith(() => verifyAppIdentity(events, 'not hex'), {
      code: 'RTMR_MISMATCH',
      message: new RegExp(
        `^The 1 runtime events replay to RTMR3 ${replayed}, but the quote says not hex: the event log was altered`,
      ),
      details: { replayed, quote: 'not hex' },
    });
  });

  test('a replay matching a 0x-prefixed RTMR3 passes', () => {
    const events = [event('app-id', [0x01])];
    assert.equal(verifyAppIdentity(events, `0x${toHex(replayRtmr3(events))}`).appId, '01');
  });
});

describe('binding: details an operator can act on', () => {
  test('PUBKEY_MISMATCH carries the fingerprint and the quote report_data', () => {
    const keyPair = generateRaTlsKeyPair();
    const wrong = new Uint8Array(64).fill(3);
    const built = createRaTlsCertificate({
      privateKey: keyPair.privateKey,
      attestation: { quote: withReportData(sample.quote, wrong), runtimeEvents: [] },
    });
    const certificate = readRaTlsCertificate(built.certificateDer);
    const expected = toHex(expectedReportData(keyPair.spki));
    failsWith(() => checkBinding(certificate, parseQuote(certificate.attestation.quote)), {
      code: 'PUBKEY_MISMATCH',
      message: new RegExp(
        `^The quote's report_data ${toHex(wrong)} is not SHA-512\\("ratls-cert:" ‖ SPKI\\) of the certificate key \\(${expected}\\)`,
      ),
      details: { fingerprint: certificate.fingerprint, reportData: toHex(wrong) },
    });
  });

  test('an envelope report_data that differs is PUBKEY_MISMATCH naming both, with the fingerprint', () => {
    const keyPair = generateRaTlsKeyPair();
    const expected = expectedReportData(keyPair.spki);
    const other = new Uint8Array(64).fill(9);
    const built = createRaTlsCertificate({
      privateKey: keyPair.privateKey,
      attestation: {
        quote: withReportData(sample.quote, expected),
        runtimeEvents: sample.runtimeEvents,
        reportData: other,
      },
    });
    const certificate = readRaTlsCertificate(built.certificateDer);
    failsWith(() => checkBinding(certificate, parseQuote(certificate.attestation.quote)), {
      code: 'PUBKEY_MISMATCH',
      message: new RegExp(
        `^The attestation envelope's report_data ${toHex(other)} differs from the quote's ${toHex(expected)}`,
      ),
      details: { fingerprint: certificate.fingerprint },
    });
  });
});

describe('certificate: size limits, DER structure and the facts shown of any certificate', () => {
  const seed = new TextEncoder().encode('security-mutants-evidence certificate');
  const key = deriveP256Key(seed, 'leaf');
  const attribute = (oid: string, value: string) =>
    sequence(objectIdentifier(oid), tlv(0x0c, new TextEncoder().encode(value)));
  const SUBJECT = sequence(
    tlv(0x31, attribute('2.5.4.6', 'US')),
    tlv(0x31, attribute('2.5.4.8', 'CA')),
    tlv(0x31, attribute('2.5.4.7', 'SF')),
    tlv(0x31, attribute('2.5.4.10', 'Org')),
    tlv(0x31, attribute('2.5.4.11', 'Unit')),
    tlv(0x31, attribute('0.9.2342.19200300.100.1.25', 'example')),
    tlv(0x31, Buffer.concat([attribute('2.5.4.3', 'db'), attribute('2.5.4.5', 'SN1')])),
  );
  const VALIDITY = sequence(
    time(new Date('2026-01-02T03:04:05Z')),
    time(new Date('2027-01-02T03:04:05Z')),
  );
  const SPKI = new Uint8Array(key.publicKey.export({ type: 'spki', format: 'der' }));
  const ISSUER = sequence(tlv(0x31, attribute('2.5.4.3', 'issuer')));
  // tbsCertificate fields after the optional version; signatures are not this reader's job.
  const FIELDS = [integer(7), ecdsaWithSha256(), ISSUER, VALIDITY, SUBJECT, SPKI];
  const certificate = (fields: Uint8Array[]) =>
    sequence(sequence(...fields), ecdsaWithSha256(), bitString(Uint8Array.of(1, 2, 3)));
  const v3 = certificate([explicit(0, integer(2)), ...FIELDS]);
  const malformed = (message: RegExp): Expected => ({ code: 'MALFORMED_CERTIFICATE', message });

  test('readCertificateFacts shows every name attribute, in order, and the validity', () => {
    const facts = readCertificateFacts(v3);
    assert.equal(facts.subject, 'C=US, ST=CA, L=SF, O=Org, OU=Unit, DC=example, CN=db+2.5.4.5=SN1');
    assert.equal(facts.notBefore.toISOString(), '2026-01-02T03:04:05.000Z');
    assert.equal(facts.notAfter.toISOString(), '2027-01-02T03:04:05.000Z');
  });

  test('the SPKI of a v1 certificate (no version) is found too: it is the attestation that is missing', () => {
    failsWith(() => readRaTlsCertificate(certificate(FIELDS)), { code: 'NO_ATTESTATION' });
    failsWith(() => readRaTlsCertificate(v3), { code: 'NO_ATTESTATION' });
  });

  test('a certificate without its SubjectPublicKeyInfo, or with a BIT STRING there, is malformed', () => {
    const without = certificate([explicit(0, integer(2)), ...FIELDS.slice(0, 5)]);
    failsWith(
      () => readRaTlsCertificate(without),
      malformed(/\(subjectPublicKeyInfo is missing\)/),
    );
    const bits = certificate([explicit(0, integer(2)), ...FIELDS.slice(0, 5), bitString(SPKI)]);
    failsWith(() => readRaTlsCertificate(bits), malformed(/\(subjectPublicKeyInfo is missing\)/));
  });

  test('the outer structure: a SEQUENCE, a SEQUENCE tbsCertificate, nothing after it', () => {
    const set = new Uint8Array(v3);
    set[0] = 0x31;
    failsWith(
      () => readRaTlsCertificate(set),
      malformed(/DER structure is invalid \(not a SEQUENCE\)/),
    );
    const tbsSet = sequence(
      tlv(0x31, Buffer.concat(FIELDS)),
      ecdsaWithSha256(),
      bitString(Uint8Array.of(1)),
    );
    failsWith(
      () => readRaTlsCertificate(tbsSet),
      malformed(/DER structure is invalid \(tbsCertificate is not a SEQUENCE\)/),
    );
    failsWith(
      () => readRaTlsCertificate(new Uint8Array([...v3, 0, 0])),
      malformed(/DER structure is invalid \(2 bytes follow the certificate\)/),
    );
  });

  test('size limits: 11 MiB of DER and twice that of PEM text, and not one byte more', () => {
    const limit = 11 * 1024 * 1024;
    const tooBig = new Uint8Array(limit + 1);
    const message = new RegExp(`it is ${limit + 1} bytes, more than the ${limit}-byte limit`);
    failsWith(() => readRaTlsCertificate(tooBig), malformed(message));
    failsWith(() => readCertificateFacts(tooBig), malformed(message));
    // At the limit the size is fine; the bytes are simply not a certificate.
    failsWith(
      () => readRaTlsCertificate(new Uint8Array(limit)),
      malformed(/DER structure is invalid/),
    );
    failsWith(
      () => readCertificateFacts(new Uint8Array(limit)),
      malformed(/not a DER X\.509 certificate/),
    );
    failsWith(
      () => readRaTlsCertificate('x'.repeat(limit * 2 + 1)),
      malformed(/the PEM text is too large/),
    );
    failsWith(
      () => readRaTlsCertificate('x'.repeat(limit * 2)),
      malformed(/has no "-----BEGIN CERTIFICATE-----" block/),
    );
  });
});

describe('VersionedAttestation V1: the msgpack walk and each field rule', () => {
  const cat = (...parts: ArrayLike<number>[]) =>
    new Uint8Array(parts.flatMap((part) => Array.from(part)));
  const platform = { kind: 'tdx', data: { quote: new Uint8Array(8).fill(1), event_log: [] } };
  const stack = {
    kind: 'dstack',
    data: { report_data: new Uint8Array(64), runtime_events: [], config: '' },
  };
  /** The top-level map {version, platform, stack} plus the raw entries given. */
  const envelope = (...extra: number[][]) =>
    cat(
      [0x80 | (3 + extra.length)],
      encodeMsgpack('version'),
      encodeMsgpack(1),
      encodeMsgpack('platform'),
      encodeMsgpack(platform),
      encodeMsgpack('stack'),
      encodeMsgpack(stack),
      ...extra,
    );
  const X = encodeMsgpack('x');
  const malformedWith = (message: RegExp): Expected => ({ code: 'MALFORMED_ATTESTATION', message });
  const abc = [0x61, 0x62, 0x63];

  // After a value of each msgpack type the walk must land exactly on the next key to see the
  // repeated "x"; a wrong length lands elsewhere and misses it (or cannot walk on).
  const VALUES: ReadonlyArray<readonly [string, number[]]> = [
    ['positive fixint', [0x05]],
    ['negative fixint', [0xe0]],
    ['nil', [0xc0]],
    ['false', [0xc2]],
    ['true', [0xc3]],
    ['fixstr', [0xa3, ...abc]],
    ['empty fixstr', [0xa0]],
    ['31-byte fixstr', [0xbf, ...new Array(31).fill(0x61)]],
    ['str 8', [0xd9, 3, ...abc]],
    ['str 16', [0xda, 0, 3, ...abc]],
    ['str 32', [0xdb, 0, 0, 0, 3, ...abc]],
    ['bin 8', [0xc4, 2, 1, 2]],
    ['bin 16', [0xc5, 0, 2, 1, 2]],
    ['bin 32', [0xc6, 0, 0, 0, 2, 1, 2]],
    ['float 32', [0xca, 0x3f, 0x80, 0, 0]],
    ['float 64', [0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]],
    ['uint 8', [0xcc, 0xff]],
    ['uint 16', [0xcd, 0xff, 0xff]],
    ['uint 32', [0xce, 0xff, 0xff, 0xff, 0xff]],
    ['uint 64', [0xcf, 0, 0, 0, 0, 0, 0, 0, 1]],
    ['int 8', [0xd0, 0x80]],
    ['int 16', [0xd1, 0x80, 0]],
    ['int 32', [0xd2, 0x80, 0, 0, 0]],
    ['int 64', [0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
    ['fixarray', [0x92, 0x01, 0xa1, 0x78]],
    ['array 16', [0xdc, 0, 2, 0x01, 0xa1, 0x78]],
    ['array 32', [0xdd, 0, 0, 0, 2, 0x01, 0xa1, 0x78]],
    ['fixmap', [0x81, 0xa1, 0x78, 0x01]],
    ['map 16', [0xde, 0, 1, 0xa1, 0x78, 0x01]],
    ['map 32', [0xdf, 0, 0, 0, 1, 0xa1, 0x78, 0x01]],
  ];
  for (const [type, value] of VALUES) {
    test(`after a ${type} value the walk finds the repeated key`, () => {
      // Unique keys: the value is walked over and the envelope decodes.
      assert.equal(decodeVersionedAttestation(envelope([...X, ...value])).format, 'versioned-v1');
      failsWith(
        () => decodeVersionedAttestation(envelope([...X, ...value], [...X, 0x00])),
        malformedWith(/repeats the map key "x"/),
      );
    });
  }

  test('of two repeated keys, the first repeated is named', () => {
    const Y = encodeMsgpack('y');
    failsWith(
      () => decodeVersionedAttestation(envelope([...X, 1], [...Y, 1], [...X, 2], [...Y, 2])),
      malformedWith(/repeats the map key "x"$/),
    );
  });

  test('a repeated key is named whatever its string width, and in hex when not a string', () => {
    const keys: ReadonlyArray<readonly [number[], string]> = [
      [[0xd9, 1, 0x79], '"y"'],
      [[0xda, 0, 1, 0x79], '"y"'],
      [[0xdb, 0, 0, 0, 1, 0x79], '"y"'],
      [[0x07], '"0x07"'],
      [[0xa0], '""'],
      [[0xbf, ...new Array(31).fill(0x7a)], `"${'z'.repeat(31)}"`],
    ];
    for (const [key, named] of keys) {
      failsWith(
        () => decodeVersionedAttestation(envelope([...key, 0x01], [...key, 0x02])),
        malformedWith(new RegExp(`repeats the map key ${named.replace(/"/g, '\\"')}`)),
      );
    }
  });

  test('msgpack extensions are refused, even empty ones; nesting is walked to depth 32 and no deeper', () => {
    failsWith(
      () => decodeVersionedAttestation(envelope([...X, 0xd4, 1, 0])),
      malformedWith(/the V1 msgpack does not decode/),
    );
    // The decoder reads an empty ext 8/16/32 (type 5) as ExtData; the walk refuses it.
    for (const ext of [
      [0xc7, 0, 5],
      [0xc8, 0, 0, 5],
      [0xc9, 0, 0, 0, 0, 5],
    ]) {
      failsWith(
        () => decodeVersionedAttestation(envelope([...X, ...ext])),
        malformedWith(
          new RegExp(
            `^The VersionedAttestation is malformed: the V1 msgpack cannot be walked \\(msgpack extension type 0x${ext[0]!.toString(16)} has no place in a V1 envelope\\)$`,
          ),
        ),
      );
    }
    const nested = (depth: number) => [...Array(depth).fill(0x91), 0x00];
    // The value of "x" sits at depth 1; each array adds one.
    assert.equal(
      decodeVersionedAttestation(envelope([...X, ...nested(31)])).format,
      'versioned-v1',
    );
    failsWith(
      () => decodeVersionedAttestation(envelope([...X, ...nested(32)])),
      malformedWith(/the V1 msgpack cannot be walked/),
    );
  });

  test('an empty extension is malformed, not an unknown version', () => {
    failsWith(
      () => decodeVersionedAttestation(new Uint8Array()),
      malformedWith(/the attestation extension is empty/),
    );
  });

  const v1 = (data: { platform?: unknown; stack?: unknown }) =>
    decodeVersionedAttestation(
      encodeMsgpack({
        version: 1,
        platform: 'platform' in data ? data.platform : platform,
        stack: 'stack' in data ? data.stack : stack,
      }),
    );
  const event = (fields: Record<string, unknown>) => ({
    imr: 3,
    event_type: 1,
    digest: [1, 2],
    event: 'app-id',
    event_payload: [3],
    ...fields,
  });
  const withEvent = (fields: Record<string, unknown>) =>
    v1({ platform: { kind: 'tdx', data: { ...platform.data, event_log: [event(fields)] } } });

  test('an event stating version 1, nil or nothing is a version 1 event; any other is refused', () => {
    for (const version of [1, null, undefined]) {
      assert.equal(withEvent({ version }).eventLog.length, 1, String(version));
    }
    failsWith(() => withEvent({ version: 2 }), {
      code: 'UNSUPPORTED_ATTESTATION_FORMAT',
      message: /platform\.data\.event_log\[0\] uses event-log version 2/,
    });
  });

  test('an event without a digest has an empty one; u32 fields take 0..0xffffffff', () => {
    const { digest: _, ...noDigest } = event({ imr: 0xffffffff, event_type: 0 });
    const [entry] = v1({
      platform: { kind: 'tdx', data: { ...platform.data, event_log: [noDigest] } },
    }).eventLog;
    assert.equal(entry?.digest.byteLength, 0);
    assert.equal(entry?.imr, 0xffffffff);
    for (const imr of [-1, 0x100000000, 1.5, '3']) {
      failsWith(
        () => withEvent({ imr }),
        malformedWith(/V1 field platform\.data\.event_log\[0\]\.imr is not a u32/),
      );
    }
  });

  test('each V1 field of the wrong kind is refused naming the field', () => {
    const cases: ReadonlyArray<readonly [() => unknown, RegExp]> = [
      [() => v1({ platform: [platform] }), /V1 field platform is not a map/],
      [() => v1({ platform: new Uint8Array(2) }), /V1 field platform is not a map/],
      [() => v1({ platform: null }), /V1 field platform is not a map/],
      [
        () => v1({ platform: { kind: 7, data: platform.data } }),
        /V1 field platform\.kind is not a string/,
      ],
      [
        () => v1({ platform: { kind: 'tdx', data: { ...platform.data, event_log: {} } } }),
        /V1 field platform\.data\.event_log is not an array/,
      ],
      [
        () => v1({ platform: { kind: 'tdx', data: { ...platform.data, quote: 'AAAA' } } }),
        /V1 field platform\.data\.quote is not bytes/,
      ],
      [() => withEvent({ digest: [256] }), /event_log\[0\]\.digest is not a byte array/],
      [() => withEvent({ digest: [-1] }), /event_log\[0\]\.digest is not a byte array/],
      [() => withEvent({ digest: [0.5] }), /event_log\[0\]\.digest is not a byte array/],
      [() => withEvent({ event: null }), /event_log\[0\]\.event is not a string/],
    ];
    for (const [run, message] of cases) failsWith(run, malformedWith(message));
    // Bytes at the edges of a byte array are fine.
    assert.deepEqual(
      Array.from(withEvent({ digest: [0, 255] }).eventLog[0]?.digest ?? []),
      [0, 255],
    );
  });

  test('the legacy JSON event log: its size limit, u32 event types and hex fields', () => {
    const entry = (fields: Record<string, unknown>) =>
      JSON.stringify([{ imr: 3, event_type: 1, event: '', event_payload: '', ...fields }]);
    const eventLog = (message: RegExp): Expected => ({ code: 'MALFORMED_EVENT_LOG', message });
    failsWith(
      () => parseLegacyEventLog(' '.repeat(10 * 1024 * 1024 + 1)),
      eventLog(/it is 10485761 bytes, more than the 10485760-byte limit/),
    );
    // At the limit the size is fine; blank text is simply not JSON.
    failsWith(
      () => parseLegacyEventLog(' '.repeat(10 * 1024 * 1024)),
      eventLog(/it is not valid UTF-8 JSON/),
    );
    failsWith(
      () => parseLegacyEventLog(new Uint8Array(10 * 1024 * 1024 + 1)),
      eventLog(/it is 10485761 bytes, more than the 10485760-byte limit/),
    );
    failsWith(
      () => parseLegacyEventLog(entry({ event_type: -1 })),
      eventLog(/entry 0\.event_type is not a u32/),
    );
    failsWith(
      () => parseLegacyEventLog(entry({ event_payload: 5 })),
      eventLog(/entry 0 has a non-string hex field/),
    );
    failsWith(
      () => parseLegacyEventLog(entry({ digest: 'zz' })),
      eventLog(/entry 0 has a field that is not hex/),
    );
    const [undigested] = parseLegacyEventLog(entry({}));
    assert.equal(undigested?.digest.byteLength, 0, 'an entry without a digest has an empty one');
    const [parsed] = parseLegacyEventLog(entry({ imr: 0xffffffff, digest: '0A0b' }));
    assert.equal(parsed?.imr, 0xffffffff);
    assert.equal(toHex(parsed?.digest ?? new Uint8Array()), '0a0b');
  });

  test('the legacy JSON event log: each shape rule names the entry and keeps the cause', () => {
    const entry = (fields: Record<string, unknown>) =>
      JSON.stringify([{ imr: 3, event_type: 1, event: '', event_payload: '', ...fields }]);
    const eventLog = (message: RegExp): Expected => ({ code: 'MALFORMED_EVENT_LOG', message });
    const prefix =
      'The legacy event log \\(extension 1\\.3\\.6\\.1\\.4\\.1\\.62397\\.1\\.2\\) is malformed: ';
    const exactly = (reason: string) => eventLog(new RegExp(`^${prefix}${reason}$`));
    failsWith(() => parseLegacyEventLog('{}'), exactly('it is not a JSON array'));
    for (const item of ['null', '[]', '5', '"x"']) {
      failsWith(() => parseLegacyEventLog(`[${item}]`), exactly('entry 0 is not an object'));
    }
    failsWith(() => parseLegacyEventLog(entry({ imr: -1 })), exactly('entry 0\\.imr is not a u32'));
    failsWith(
      () => parseLegacyEventLog(entry({ event: 5 })),
      exactly('entry 0\\.event is not a string'),
    );
    // Bytes that are not UTF-8 inside a JSON string: refused, never replaced by U+FFFD.
    const invalidUtf8 = Buffer.concat([
      Buffer.from('[{"imr":3,"event_type":1,"event":"'),
      Uint8Array.of(0xff),
      Buffer.from('","event_payload":""}]'),
    ]);
    assert.throws(
      () => parseLegacyEventLog(new Uint8Array(invalidUtf8)),
      (error: unknown) =>
        isRaTlsError(error, 'MALFORMED_EVENT_LOG') &&
        /it is not valid UTF-8 JSON$/.test(error.message) &&
        error.cause instanceof TypeError,
    );
    assert.throws(
      () => parseLegacyEventLog('[{'),
      (error: unknown) => isRaTlsError(error) && error.cause instanceof SyntaxError,
    );
  });
});

describe('VersionedAttestation: the version byte, the size limit and V0 counts', () => {
  const MAX = 10 * 1024 * 1024;

  test('exactly 10 MiB is read (and judged by its version byte); one byte more is refused for size', () => {
    failsWith(() => decodeVersionedAttestation(new Uint8Array(MAX).fill(0xff)), {
      code: 'UNSUPPORTED_ATTESTATION_FORMAT',
      message: /^Unknown VersionedAttestation version byte 0xff: /,
      details: { versionByte: 0xff },
    });
    failsWith(() => decodeVersionedAttestation(new Uint8Array(MAX + 1).fill(0xff)), {
      code: 'MALFORMED_ATTESTATION',
      message: /it is 10485761 bytes, more than the 10485760-byte limit/,
    });
  });

  test('every msgpack map prefix selects V1, and only those', () => {
    const v1 = /VersionedAttestation V1 declares version undefined/;
    // fixmap 0x80..0x8f: an empty map decodes (and lacks a version); a fixmap of 15
    // entries with none following does not decode, but is read as V1.
    failsWith(() => decodeVersionedAttestation(Uint8Array.of(0x80)), {
      code: 'UNSUPPORTED_ATTESTATION_FORMAT',
      message: v1,
    });
    failsWith(() => decodeVersionedAttestation(Uint8Array.of(0x8f)), {
      code: 'MALFORMED_ATTESTATION',
      message: /the V1 msgpack does not decode/,
    });
    failsWith(() => decodeVersionedAttestation(Uint8Array.of(0xde, 0, 0)), {
      code: 'UNSUPPORTED_ATTESTATION_FORMAT',
      message: v1,
    });
    failsWith(() => decodeVersionedAttestation(Uint8Array.of(0xdf, 0, 0, 0, 0)), {
      code: 'UNSUPPORTED_ATTESTATION_FORMAT',
      message: v1,
    });
    for (const first of [0x7f, 0x90, 0xdc, 0xdd]) {
      failsWith(() => decodeVersionedAttestation(Uint8Array.of(first, 0)), {
        code: 'UNSUPPORTED_ATTESTATION_FORMAT',
        details: { versionByte: first },
      });
    }
  });

  test('a V0 element count is held to the smallest element size before anything is read', () => {
    // version 0, platform DstackTdx, empty quote, then the event log count.
    const head = [0x00, 0x00, 0x00];
    const compact = (count: number) => count << 2;
    // Three entries of at least 11 bytes do not fit in 30.
    failsWith(
      () => decodeVersionedAttestation(Uint8Array.of(...head, compact(3), ...new Uint8Array(30))),
      {
        code: 'MALFORMED_ATTESTATION',
        message:
          /^VersionedAttestation V0 is malformed: event_log length: 3 elements cannot fit in the 30 bytes left$/,
      },
    );
    // No event log; three runtime events of at least 2 bytes do not fit in 5.
    failsWith(
      () =>
        decodeVersionedAttestation(
          Uint8Array.of(...head, compact(0), compact(3), ...new Uint8Array(5)),
        ),
      {
        code: 'MALFORMED_ATTESTATION',
        message:
          /^VersionedAttestation V0 is malformed: runtime_events length: 3 elements cannot fit in the 5 bytes left$/,
      },
    );
  });

  test('a V0 attestation for another platform names it in details', () => {
    failsWith(() => decodeVersionedAttestation(Uint8Array.of(0x00, 0x01)), {
      code: 'UNSUPPORTED_ATTESTATION_FORMAT',
      message: /for platform DstackGcpTdx; /,
      details: { platform: 'DstackGcpTdx' },
    });
  });

  test('a refusal by the V1 decoder keeps its cause', () => {
    assert.throws(
      () => decodeVersionedAttestation(Uint8Array.of(0x81)),
      (error: unknown) =>
        isRaTlsError(error, 'MALFORMED_ATTESTATION') && error.cause instanceof Error,
    );
  });
});

describe('the extension OIDs are the ones dstack writes (docs/protocol.md §1), not whatever the builders share', () => {
  // Literal OIDs: a test certificate built with the library's own constant would follow any
  // change to it; a real dstack certificate would not.
  const seed = new TextEncoder().encode('security-mutants-evidence oids');
  const key = deriveP256Key(seed, 'leaf');
  const name = encodeName([['CN', 'dstack app']]);
  const leaf = (extensions: readonly [string, Uint8Array][]) =>
    encodeCertificate(
      {
        serialNumber: Uint8Array.of(9),
        issuer: name,
        subject: name,
        notBefore: new Date('2026-01-01T00:00:00Z'),
        notAfter: new Date('2027-01-01T00:00:00Z'),
        publicKey: key.publicKey,
        subjectKeyId: key.keyId,
        authorityKeyId: key.keyId,
        ca: false,
        crlUrl: 'https://kms.invalid/crl',
        extraExtensions: extensions.map(([oid, value]) => ({
          oid,
          critical: false,
          value: octetStringOf(value),
        })),
      },
      key.privateKey,
    );
  const octetStringOf = (value: Uint8Array) => tlv(0x04, value);

  test('1.3.6.1.4.1.62397.1.8 carries the VersionedAttestation', () => {
    const attestation = fixture('dstack-attestation-v0/attestation.bin');
    const certificate = readRaTlsCertificate(leaf([['1.3.6.1.4.1.62397.1.8', attestation]]));
    assert.equal(certificate.attestation.format, 'versioned-v0');
    assert.equal(toHex(certificate.attestation.quote), toHex(sample.quote));
  });

  test('1.3.6.1.4.1.62397.1.1 and .1.2 carry the legacy quote and JSON event log', () => {
    const eventLog = JSON.stringify([
      { imr: 3, event_type: 134217729, digest: '', event: 'app-id', event_payload: '0a0b' },
    ]);
    const certificate = readRaTlsCertificate(
      leaf([
        ['1.3.6.1.4.1.62397.1.1', sample.quote],
        ['1.3.6.1.4.1.62397.1.2', new TextEncoder().encode(eventLog)],
      ]),
    );
    assert.equal(certificate.attestation.format, 'legacy');
    assert.deepEqual(
      certificate.attestation.runtimeEvents.map((event) => [event.event, toHex(event.payload)]),
      [['app-id', '0a0b']],
    );
    failsWith(() => readRaTlsCertificate(leaf([['1.3.6.1.4.1.62397.1.1', sample.quote]])), {
      code: 'MALFORMED_ATTESTATION',
      message:
        /legacy quote \(1\.3\.6\.1\.4\.1\.62397\.1\.1\) but no event log \(1\.3\.6\.1\.4\.1\.62397\.1\.2\)/,
    });
  });

  test('a certificate with none of them is NO_ATTESTATION, naming both OIDs', () => {
    failsWith(() => readRaTlsCertificate(leaf([['1.3.6.1.4.1.62397.1.3', new Uint8Array(20)]])), {
      code: 'NO_ATTESTATION',
      message: /neither extension 1\.3\.6\.1\.4\.1\.62397\.1\.8 nor 1\.3\.6\.1\.4\.1\.62397\.1\.1/,
    });
  });
});

describe('certificate and quote refusals: their exact text, details and cause', () => {
  test('an extension payload not wrapped in exactly one OCTET STRING names the tag or the extra bytes', () => {
    failsWith(() => unwrapOctetString(sequence(), '1.2.3'), {
      code: 'MALFORMED_ATTESTATION',
      message:
        /^Certificate extension 1\.2\.3 is not a DER OCTET STRING wrapping its payload: it starts with tag 0x30, not an OCTET STRING\.$/,
      details: { oid: '1.2.3' },
    });
    const padded = Uint8Array.of(...tlv(0x04, Uint8Array.of(1, 2)), 0, 0);
    failsWith(() => unwrapOctetString(padded, '1.2.3'), {
      code: 'MALFORMED_ATTESTATION',
      message: /: 2 bytes follow the OCTET STRING\.$/,
      details: { oid: '1.2.3' },
    });
    assert.deepEqual(unwrapOctetString(padded.subarray(0, 4), '1.2.3'), Uint8Array.of(1, 2));
  });

  test('a PEM certificate that is not base64 says so; a DER one that does not parse keeps its cause', () => {
    failsWith(
      () => readRaTlsCertificate('-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n'),
      {
        code: 'MALFORMED_CERTIFICATE',
        message: /^The server certificate cannot be parsed: the PEM block is not valid base64\.$/,
      },
    );
    assert.throws(
      () => readCertificateFacts(Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00)),
      (error: unknown) =>
        isRaTlsError(error, 'MALFORMED_CERTIFICATE') && error.cause instanceof Error,
    );
  });

  test('a quote of exactly its 48-byte header is read past the header check', () => {
    failsWith(() => parseQuote(v4.subarray(0, 47)), {
      code: 'MALFORMED_QUOTE',
      message: /it is 47 bytes, shorter than the 48-byte header/,
    });
    assert.throws(
      () => parseQuote(v4.subarray(0, 48)),
      (error: unknown) =>
        isRaTlsError(error, 'MALFORMED_QUOTE') &&
        !/shorter than the 48-byte header/.test(error.message),
    );
  });
});
