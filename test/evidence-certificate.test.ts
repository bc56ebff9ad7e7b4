import assert from 'node:assert/strict';
import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import {
  RA_TLS_OIDS,
  readRaTlsCertificate,
  unwrapOctetString,
} from '../src/evidence/certificate.js';
import { decodeVersionedAttestation } from '../src/evidence/versioned-attestation.js';
import {
  createRaTlsCertificate,
  encodeVersionedAttestationV0,
  generateRaTlsKeyPair,
} from '../src/testing/ra-tls-certificate.js';
import { toHex } from '../src/util/bytes.js';

const FIXTURE = new URL('./fixtures/', import.meta.url);
const attestationBin = new Uint8Array(
  readFileSync(new URL('dstack-attestation-v0/attestation.bin', FIXTURE)),
);
const sample = decodeVersionedAttestation(attestationBin);
const otherQuote = new Uint8Array(readFileSync(new URL('intel-tdx-v4/quote.bin', FIXTURE)));

describe('readRaTlsCertificate', () => {
  test('reads a 1.8 certificate from DER and from PEM alike', () => {
    const keyPair = generateRaTlsKeyPair();
    const built = createRaTlsCertificate({
      privateKey: keyPair.privateKey,
      attestationBytes: attestationBin,
      subject: 'CN=db.example, O=teesql',
      notBefore: new Date('2025-01-01T00:00:00Z'),
      notAfter: new Date('2035-01-01T00:00:00Z'),
    });
    const fromDer = readRaTlsCertificate(built.certificateDer);
    const fromPem = readRaTlsCertificate(built.certificatePem);
    assert.deepEqual(fromPem, fromDer);
    assert.equal(
      fromDer.fingerprint,
      createHash('sha256').update(built.certificateDer).digest('hex'),
    );
    assert.equal(fromDer.subject, 'CN=db.example, O=teesql');
    assert.equal(fromDer.notBefore.toISOString(), '2025-01-01T00:00:00.000Z');
    assert.equal(fromDer.notAfter.toISOString(), '2035-01-01T00:00:00.000Z');
    assert.equal(fromDer.attestation.format, 'versioned-v0');
    assert.deepEqual(fromDer.attestation.quote, sample.quote);
    assert.equal(fromDer.attestation.runtimeEvents.length, 9);
  });

  test('spki is the exact SubjectPublicKeyInfo DER of the leaf key', () => {
    const keyPair = generateRaTlsKeyPair();
    const built = createRaTlsCertificate({
      privateKey: keyPair.privateKey,
      attestationBytes: attestationBin,
    });
    const certificate = readRaTlsCertificate(built.certificateDer);
    assert.deepEqual(certificate.spki, keyPair.spki);
    const reexported = createPublicKey({
      key: Buffer.from(certificate.spki),
      format: 'der',
      type: 'spki',
    });
    assert.equal(reexported.asymmetricKeyType, 'ec');
  });

  test('a PEM chain yields its first certificate, the leaf', () => {
    const ca = createRaTlsCertificate({ subject: 'CN=local CA', ca: true });
    const leaf = createRaTlsCertificate({
      subject: 'CN=leaf',
      attestationBytes: attestationBin,
      issuer: { certificate: ca.certificatePem, privateKey: ca.privateKeyPem },
    });
    const certificate = readRaTlsCertificate(leaf.certificatePem + ca.certificatePem);
    assert.equal(certificate.subject, 'CN=leaf');
  });

  test('reads the legacy 1.1 quote + 1.2 event log', () => {
    const built = createRaTlsCertificate({
      attestation: { format: 'legacy', quote: sample.quote, runtimeEvents: sample.runtimeEvents },
    });
    const { attestation } = readRaTlsCertificate(built.certificateDer);
    assert.equal(attestation.format, 'legacy');
    assert.deepEqual(attestation.quote, sample.quote);
    assert.deepEqual(
      attestation.runtimeEvents.map((event) => [event.event, toHex(event.payload)]),
      sample.runtimeEvents.map((event) => [event.event, toHex(event.payload)]),
    );
  });

  test('prefers 1.8 over a legacy 1.1 quote in the same certificate', () => {
    const legacyQuote = { oid: RA_TLS_OIDS.tdxQuote, extnValue: derOctetString(otherQuote) };
    const built = createRaTlsCertificate({
      attestationBytes: attestationBin,
      rawExtensions: [legacyQuote],
    });
    assert.deepEqual(readRaTlsCertificate(built.certificateDer).attestation.quote, sample.quote);
  });

  test('ignores the app_id (1.3), usage (1.4) and app info (1.9) issuer claims', () => {
    const built = createRaTlsCertificate({
      attestationBytes: attestationBin,
      appId: new Uint8Array(20).fill(0xaa),
      usage: 'app:custom',
      appInfo: new Uint8Array([0x93, 1, 2, 3]),
    });
    const certificate = readRaTlsCertificate(built.certificateDer);
    assert.equal(certificate.attestation.runtimeEvents[1]?.event, 'app-id');
    assert.equal(
      toHex(certificate.attestation.runtimeEvents[1]!.payload),
      '5bb4ff9a3837357f19dc176407a5709c62eb6c56',
    );
  });

  test('a certificate without attestation is NO_ATTESTATION', () => {
    const plain = createRaTlsCertificate({ appId: new Uint8Array(20) });
    assert.throws(
      () => readRaTlsCertificate(plain.certificateDer),
      (error: unknown) => isRaTlsError(error, 'NO_ATTESTATION'),
    );
  });

  test('a legacy quote without its event log is MALFORMED_ATTESTATION', () => {
    const built = createRaTlsCertificate({
      rawExtensions: [{ oid: RA_TLS_OIDS.tdxQuote, extnValue: derOctetString(otherQuote) }],
    });
    assert.throws(
      () => readRaTlsCertificate(built.certificateDer),
      (error: unknown) =>
        isRaTlsError(error, 'MALFORMED_ATTESTATION') && /event log/.test(error.message),
    );
  });

  test('a second attestation extension makes the certificate ambiguous and malformed', () => {
    const second = { oid: RA_TLS_OIDS.attestation, extnValue: derOctetString(attestationBin) };
    const built = createRaTlsCertificate({
      attestationBytes: attestationBin,
      rawExtensions: [second],
    });
    assert.throws(
      () => readRaTlsCertificate(built.certificateDer),
      (error: unknown) =>
        isRaTlsError(error, 'MALFORMED_CERTIFICATE') && /twice/.test(error.message),
    );
  });

  test('the extension payload without its inner OCTET STRING is refused, not guessed', () => {
    const built = createRaTlsCertificate({
      rawExtensions: [{ oid: RA_TLS_OIDS.attestation, extnValue: attestationBin }],
    });
    assert.throws(
      () => readRaTlsCertificate(built.certificateDer),
      (error: unknown) =>
        isRaTlsError(error, 'MALFORMED_ATTESTATION') && /OCTET STRING/.test(error.message),
    );
  });
});

describe('unwrapOctetString', () => {
  const oid = RA_TLS_OIDS.attestation;
  const fails = (bytes: number[]) =>
    assert.throws(
      () => unwrapOctetString(new Uint8Array(bytes), oid),
      (error: unknown) => isRaTlsError(error, 'MALFORMED_ATTESTATION'),
    );

  test('strips a short-form and a long-form header', () => {
    assert.deepEqual(
      unwrapOctetString(new Uint8Array([0x04, 0x02, 7, 8]), oid),
      new Uint8Array([7, 8]),
    );
    const long = new Uint8Array(300).fill(5);
    assert.deepEqual(unwrapOctetString(derOctetString(long), oid), long);
  });

  test('refuses other tags, indefinite or non-minimal lengths, truncation and trailing bytes', () => {
    fails([0x30, 0x01, 0x00]);
    fails([0x04, 0x80, 0x00, 0x00]);
    fails([0x04, 0x81, 0x02, 7, 8]);
    fails([0x04, 0x82, 0x00, 0x81, ...new Array(0x81).fill(0)]);
    fails([0x04, 0x03, 7, 8]);
    fails([0x04, 0x01, 7, 8]);
    fails([0x04]);
    fails([]);
    fails([0x04, 0x85, 1, 1, 1, 1, 1]);
  });
});

function derOctetString(payload: Uint8Array): Uint8Array {
  const length = payload.byteLength;
  const header =
    length < 0x80
      ? [0x04, length]
      : length < 0x100
        ? [0x04, 0x81, length]
        : length < 0x10000
          ? [0x04, 0x82, length >> 8, length & 0xff]
          : [0x04, 0x83, length >> 16, (length >> 8) & 0xff, length & 0xff];
  return new Uint8Array([...header, ...payload]);
}

test('a certificate built from V0 parts reads back the same parts', () => {
  const payload = encodeVersionedAttestationV0({ quote: sample.quote, config: '{"a":1}' });
  const built = createRaTlsCertificate({ attestationBytes: payload });
  const { attestation } = readRaTlsCertificate(built.certificateDer);
  assert.equal(attestation.config, '{"a":1}');
  assert.equal(attestation.runtimeEvents.length, 0);
});
