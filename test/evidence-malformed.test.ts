import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { type ErrorCode, isRaTlsError } from '../src/errors.js';
import {
  RA_TLS_OIDS,
  readRaTlsCertificate,
  unwrapOctetString,
} from '../src/evidence/certificate.js';
import { parseQuote } from '../src/evidence/quote.js';
import {
  decodeVersionedAttestation,
  parseLegacyEventLog,
} from '../src/evidence/versioned-attestation.js';
import {
  createRaTlsCertificate,
  encodeVersionedAttestationV0,
} from '../src/testing/ra-tls-certificate.js';

const FIXTURE = new URL('./fixtures/', import.meta.url);
const attestationBin = new Uint8Array(
  readFileSync(new URL('dstack-attestation-v0/attestation.bin', FIXTURE)),
);
const quoteBin = new Uint8Array(readFileSync(new URL('dstack-attestation-v0/quote.bin', FIXTURE)));
const certificate = createRaTlsCertificate({ attestationBytes: attestationBin }).certificateDer;

const EVIDENCE_CODES: readonly ErrorCode[] = [
  'MALFORMED_CERTIFICATE',
  'NO_ATTESTATION',
  'MALFORMED_ATTESTATION',
  'UNSUPPORTED_ATTESTATION_FORMAT',
  'MALFORMED_EVENT_LOG',
  'MALFORMED_QUOTE',
  'NOT_TDX',
];

/** Runs `fn`; it may succeed, but any failure must be a RaTlsError with one of `codes`. */
function survives(
  fn: () => unknown,
  codes: readonly ErrorCode[] = EVIDENCE_CODES,
  label = '',
): ErrorCode | 'ok' {
  try {
    fn();
    return 'ok';
  } catch (error) {
    assert.ok(isRaTlsError(error), `${label}: threw a non-RaTlsError: ${String(error)}`);
    assert.ok(
      codes.includes(error.code),
      `${label}: unexpected code ${error.code}: ${error.message}`,
    );
    return error.code;
  }
}

function fails(fn: () => unknown, code: ErrorCode, pattern?: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  });
}

/** Deterministic xorshift32, so a failure can be reproduced. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x100000000;
  };
}

function randomBytes(next: () => number, length: number): Uint8Array {
  return Uint8Array.from({ length }, () => Math.floor(next() * 256));
}

describe('malformed envelopes', () => {
  test('every truncation of the real V0 sample is MALFORMED_ATTESTATION', () => {
    for (let length = 1; length < attestationBin.byteLength; length += 7) {
      fails(
        () => decodeVersionedAttestation(attestationBin.subarray(0, length)),
        'MALFORMED_ATTESTATION',
      );
    }
  });

  test('a huge Compact length fails fast instead of allocating', () => {
    // version 0, DstackTdx, quote length = Compact big-int 0xffffffff.
    fails(
      () => decodeVersionedAttestation(new Uint8Array([0x00, 0x00, 0x03, 0xff, 0xff, 0xff, 0xff])),
      'MALFORMED_ATTESTATION',
      /truncated/,
    );
    // An event-log count of 2^30 after an empty quote.
    fails(
      () =>
        decodeVersionedAttestation(
          new Uint8Array([0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x40, 0x00]),
        ),
      'MALFORMED_ATTESTATION',
      /cannot fit/,
    );
    // Compact big-int with more than 4 bytes does not fit a u32.
    fails(
      () => decodeVersionedAttestation(new Uint8Array([0x00, 0x00, 0x07, 1, 1, 1, 1, 1])),
      'MALFORMED_ATTESTATION',
      /u32/,
    );
  });

  test('non-canonical Compact lengths are refused', () => {
    // Length 1 written in the two-byte form.
    fails(
      () => decodeVersionedAttestation(new Uint8Array([0x00, 0x00, 0x05, 0x00, 0xaa])),
      'MALFORMED_ATTESTATION',
      /non-canonical/,
    );
  });

  test('trailing bytes after a complete V0 envelope are refused', () => {
    const bytes = encodeVersionedAttestationV0({ quote: quoteBin });
    fails(
      () => decodeVersionedAttestation(new Uint8Array([...bytes, 0, 0])),
      'MALFORMED_ATTESTATION',
      /trailing/,
    );
  });

  test('random bytes after each version prefix never escape as anything but evidence errors', () => {
    const next = random(0x5eed);
    for (let i = 0; i < 2000; i++) {
      const body = randomBytes(next, Math.floor(next() * 300));
      const prefix = [0x00, 0x00, 0x81, 0xde, 0xdf, Math.floor(next() * 256)][i % 6]!;
      // Random bytes are never a valid envelope: surviving without an error would be a bug.
      const outcome = survives(
        () => decodeVersionedAttestation(new Uint8Array([prefix, ...body])),
        EVIDENCE_CODES,
        `envelope ${i}`,
      );
      assert.notEqual(outcome, 'ok', `envelope ${i} was accepted`);
    }
  });

  test('random JSON-ish event logs never escape as anything but MALFORMED_EVENT_LOG', () => {
    const next = random(0xbeef);
    const samples = [
      '[',
      ']',
      '{',
      '}',
      '"imr"',
      ':',
      '3',
      ',',
      '"event"',
      '"ab"',
      'null',
      '-1',
      '1e309',
    ];
    for (let i = 0; i < 1000; i++) {
      const text = Array.from(
        { length: 12 },
        () => samples[Math.floor(next() * samples.length)],
      ).join('');
      const outcome = survives(() => parseLegacyEventLog(text), ['MALFORMED_EVENT_LOG'], text);
      assert.notEqual(outcome, 'ok', `${text} was accepted as an event log`);
    }
  });
});

describe('malformed quotes', () => {
  test('every truncation of a real quote inside its signed part is MALFORMED_QUOTE', () => {
    for (let length = 0; length < 4940; length += 13) {
      fails(() => parseQuote(quoteBin.subarray(0, length)), 'MALFORMED_QUOTE');
    }
  });

  test('random bytes never escape as anything but quote errors', () => {
    const next = random(0xc0ffee);
    for (let i = 0; i < 2000; i++) {
      const bytes = randomBytes(next, Math.floor(next() * 1400));
      if (bytes.byteLength >= 8 && i % 2 === 0) {
        bytes.set([4 + (i % 4 === 0 ? 1 : 0), 0, 2, 0, 0x81, 0, 0, 0]);
      }
      const outcome = survives(
        () => parseQuote(bytes),
        ['MALFORMED_QUOTE', 'NOT_TDX'],
        `quote ${i}`,
      );
      assert.notEqual(outcome, 'ok', `random quote ${i} was accepted`);
    }
  });
});

describe('malformed certificates', () => {
  test('truncated certificates are MALFORMED_CERTIFICATE', () => {
    for (let length = 0; length < certificate.byteLength; length += 97) {
      fails(() => readRaTlsCertificate(certificate.subarray(0, length)), 'MALFORMED_CERTIFICATE');
    }
  });

  test('bytes after the certificate are MALFORMED_CERTIFICATE', () => {
    fails(
      () => readRaTlsCertificate(new Uint8Array([...certificate, 0])),
      'MALFORMED_CERTIFICATE',
      /follow/,
    );
  });

  test('garbage PEM and empty input are MALFORMED_CERTIFICATE', () => {
    for (const pem of [
      '',
      'hello',
      '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----',
      '-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----',
      `-----BEGIN CERTIFICATE-----\n${Buffer.from('not der at all').toString('base64')}\n-----END CERTIFICATE-----`,
      '-----BEGIN CERTIFICATE-----\n',
    ]) {
      fails(() => readRaTlsCertificate(pem), 'MALFORMED_CERTIFICATE');
    }
    fails(() => readRaTlsCertificate(new Uint8Array(0)), 'MALFORMED_CERTIFICATE');
  });

  test('flipped bytes anywhere in a certificate only ever produce evidence errors', () => {
    const next = random(0xf11b);
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      const bytes = new Uint8Array(certificate);
      for (let flips = 0; flips < 3; flips++) {
        bytes[Math.floor(next() * bytes.byteLength)] = Math.floor(next() * 256);
      }
      const outcome = survives(() => readRaTlsCertificate(bytes), EVIDENCE_CODES, `flip ${i}`);
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    // Flips in unparsed bytes (signature, key) pass, the rest must be refused: both must occur,
    // or the flips never reached the parser's checks.
    assert.ok((outcomes.get('ok') ?? 0) > 0, JSON.stringify([...outcomes]));
    assert.ok(
      outcomes.size > 1,
      `no flipped certificate was refused: ${JSON.stringify([...outcomes])}`,
    );
  });

  test('random bytes as DER never escape as anything but evidence errors', () => {
    const next = random(0xd3e);
    for (let i = 0; i < 1000; i++) {
      const bytes = randomBytes(next, Math.floor(next() * 600));
      if (i % 2 === 0 && bytes.byteLength > 4)
        bytes.set([0x30, 0x82, bytes.byteLength >> 8, bytes.byteLength & 0xff]);
      const outcome = survives(() => readRaTlsCertificate(bytes), EVIDENCE_CODES, `der ${i}`);
      assert.notEqual(outcome, 'ok', `random DER ${i} was accepted as a certificate`);
    }
  });

  test('an oversized attestation extension is refused at the 10 MiB cap', () => {
    const oversized = new Uint8Array(10 * 1024 * 1024 + 1);
    const built = createRaTlsCertificate({ attestationBytes: oversized });
    fails(() => readRaTlsCertificate(built.certificateDer), 'MALFORMED_ATTESTATION', /10485760/);
  });

  test('a doubly wrapped payload is refused, never unwrapped twice', () => {
    const inner = unwrapOctetString(
      new Uint8Array([0x04, 0x03, 0x04, 0x01, 0x00]),
      RA_TLS_OIDS.attestation,
    );
    assert.deepEqual(inner, new Uint8Array([0x04, 0x01, 0x00]));
    const doubly = new Uint8Array([
      0x04,
      0x82,
      (attestationBin.byteLength + 4) >> 8,
      (attestationBin.byteLength + 4) & 0xff,
      0x04,
      0x82,
      attestationBin.byteLength >> 8,
      attestationBin.byteLength & 0xff,
      ...attestationBin,
    ]);
    const built = createRaTlsCertificate({
      rawExtensions: [{ oid: RA_TLS_OIDS.attestation, extnValue: doubly }],
    });
    fails(
      () => readRaTlsCertificate(built.certificateDer),
      'UNSUPPORTED_ATTESTATION_FORMAT',
      /0x04/,
    );
  });

  test('garbage inside each RA-TLS extension yields a sensible code', () => {
    const next = random(0xabc);
    const cases: [string, ErrorCode[]][] = [
      [RA_TLS_OIDS.attestation, ['MALFORMED_ATTESTATION', 'UNSUPPORTED_ATTESTATION_FORMAT']],
      [RA_TLS_OIDS.tdxQuote, ['MALFORMED_ATTESTATION']],
    ];
    for (const [oid, codes] of cases) {
      for (let i = 0; i < 20; i++) {
        const payload = randomBytes(next, 1 + Math.floor(next() * 200));
        const built = createRaTlsCertificate({ rawExtensions: [{ oid, extnValue: payload }] });
        const code = survives(
          () => readRaTlsCertificate(built.certificateDer),
          codes,
          `${oid} ${i}`,
        );
        assert.notEqual(code, 'ok');
      }
    }
    const badLog = createRaTlsCertificate({
      rawExtensions: [
        { oid: RA_TLS_OIDS.tdxQuote, extnValue: new Uint8Array([0x04, 0x02, 0x01, 0x02]) },
        { oid: RA_TLS_OIDS.eventLog, extnValue: new Uint8Array([0x04, 0x03, 0x7b, 0x7d, 0x7d]) },
      ],
    });
    fails(() => readRaTlsCertificate(badLog.certificateDer), 'MALFORMED_EVENT_LOG');
  });
});
