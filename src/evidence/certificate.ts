import type { Name } from '@peculiar/asn1-x509';
import { RaTlsError } from '../errors.js';
import { asn1Schema, asn1X509 } from '../util/asn1.js';
import { sha256, toHex } from '../util/bytes.js';
import { type DerElement, readDerElement } from '../util/der.js';
import { pemBlocks } from '../util/pem.js';
import { type CertificateFields, readCertificateDer } from '../util/x509-der.js';
import type { DecodedAttestation, RaTlsCertificate } from './types.js';
import {
  decodeLegacyAttestation,
  decodeVersionedAttestation,
  MAX_ATTESTATION_BYTES,
} from './versioned-attestation.js';

/**
 * Certificate extensions under Phala's enterprise number 62397 (docs/protocol.md §1).
 * Only `attestation`, `tdxQuote` and `eventLog` are read; `appId` and `appInfo`
 * are issuer claims that are never trusted.
 */
export const RA_TLS_OIDS = Object.freeze({
  tdxQuote: '1.3.6.1.4.1.62397.1.1',
  eventLog: '1.3.6.1.4.1.62397.1.2',
  appId: '1.3.6.1.4.1.62397.1.3',
  usage: '1.3.6.1.4.1.62397.1.4',
  attestation: '1.3.6.1.4.1.62397.1.8',
  appInfo: '1.3.6.1.4.1.62397.1.9',
});

/** Largest certificate accepted: the attestation cap plus room for the rest. */
const MAX_CERTIFICATE_BYTES = MAX_ATTESTATION_BYTES + 1024 * 1024;

const TAG_SEQUENCE = 0x30;
const TAG_OCTET_STRING = 0x04;
const TAG_VERSION = 0xa0;

/**
 * Reads an RA-TLS leaf certificate (DER bytes or PEM text; for a PEM chain the
 * first certificate, the leaf) and extracts its attestation: extension 1.8
 * (`VersionedAttestation`) when present, else legacy 1.1 quote + 1.2 event log.
 *
 * Throws MALFORMED_CERTIFICATE when the certificate does not parse,
 * NO_ATTESTATION when it carries no attestation, and the evidence codes of
 * {@link decodeVersionedAttestation} when the attestation itself is bad.
 */
export function readRaTlsCertificate(input: Uint8Array | string): RaTlsCertificate {
  const der = typeof input === 'string' ? pemToDer(input) : new Uint8Array(input);
  checkSize(der);
  const spki = locateSpki(der);
  const { fields, facts } = parseCertificate(der);
  return Object.freeze({
    der,
    fingerprint: toHex(sha256(der)),
    spki,
    ...facts,
    attestation: readAttestation(fields.extensions),
  });
}

/** What any X.509 certificate says of itself, whether or not it carries an attestation. */
export interface CertificateFacts {
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * Subject and validity of a DER certificate, attested or not (e.g. to show
 * what a refused server presented). Throws MALFORMED_CERTIFICATE.
 */
export function readCertificateFacts(der: Uint8Array): CertificateFacts {
  return parseCertificate(der).facts;
}

function checkSize(der: Uint8Array): void {
  if (der.byteLength > MAX_CERTIFICATE_BYTES) {
    throw badCertificate(
      `it is ${der.byteLength} bytes, more than the ${MAX_CERTIFICATE_BYTES}-byte limit`,
    );
  }
}

// The whole certificate is read by the strict DER reader (util/x509-der.ts); only
// the small subject Name goes through the schema decoder, for its text.
function parseCertificate(der: Uint8Array): { fields: CertificateFields; facts: CertificateFacts } {
  checkSize(der);
  let fields: CertificateFields;
  try {
    fields = readCertificateDer(der);
  } catch (cause) {
    throw badCertificate(`it is not a DER X.509 certificate (${describe(cause)})`, cause);
  }
  try {
    const subject = asn1Schema().AsnConvert.parse(fields.subject.slice(), asn1X509().Name);
    const facts = Object.freeze({
      subject: formatName(subject),
      notBefore: fields.notBefore,
      notAfter: fields.notAfter,
    });
    return { fields, facts };
  } catch (cause) {
    throw badCertificate('its subject or validity cannot be read', cause);
  }
}

function readAttestation(extensions: ReadonlyMap<string, Uint8Array>): DecodedAttestation {
  const versioned = extensions.get(RA_TLS_OIDS.attestation);
  if (versioned !== undefined) {
    return decodeVersionedAttestation(unwrapOctetString(versioned, RA_TLS_OIDS.attestation));
  }
  const quote = extensions.get(RA_TLS_OIDS.tdxQuote);
  if (quote === undefined) {
    throw new RaTlsError(
      'NO_ATTESTATION',
      `The server certificate carries no RA-TLS attestation (neither extension ${RA_TLS_OIDS.attestation} nor ${RA_TLS_OIDS.tdxQuote}): it was not issued by a dstack guest agent with usage_ra_tls. Check that the host and port reach the teesql sidecar in TLS passthrough.`,
    );
  }
  const eventLog = extensions.get(RA_TLS_OIDS.eventLog);
  if (eventLog === undefined) {
    throw new RaTlsError(
      'MALFORMED_ATTESTATION',
      `The certificate has a legacy quote (${RA_TLS_OIDS.tdxQuote}) but no event log (${RA_TLS_OIDS.eventLog}), which must accompany it.`,
    );
  }
  return decodeLegacyAttestation(
    unwrapOctetString(quote, RA_TLS_OIDS.tdxQuote),
    unwrapOctetString(eventLog, RA_TLS_OIDS.eventLog),
  );
}

/**
 * Strips exactly one DER OCTET STRING header from an extension value: dstack
 * wraps each payload in an OCTET STRING inside extnValue (docs/protocol.md §1).
 * The header must be a minimal DER length and cover the value exactly.
 */
export function unwrapOctetString(extnValue: Uint8Array, oid: string): Uint8Array {
  let tlv: DerElement;
  try {
    tlv = readDerElement(extnValue, 0);
  } catch (cause) {
    throw badWrapping(oid, describe(cause));
  }
  if (tlv.tag !== TAG_OCTET_STRING) {
    throw badWrapping(oid, `it starts with tag 0x${tlv.tag.toString(16)}, not an OCTET STRING`);
  }
  if (tlv.end !== extnValue.byteLength) {
    throw badWrapping(oid, `${extnValue.byteLength - tlv.end} bytes follow the OCTET STRING`);
  }
  return new Uint8Array(extnValue.subarray(tlv.valueStart, tlv.end));
}

/**
 * Returns the exact DER bytes of the leaf's SubjectPublicKeyInfo. Taken from
 * the certificate as sent (not re-encoded) because report_data binds these
 * very bytes (docs/protocol.md §1). Also checks that the input is one certificate
 * with nothing after it.
 */
function locateSpki(der: Uint8Array): Uint8Array {
  try {
    const certificate = readDerElement(der, 0);
    if (certificate.tag !== TAG_SEQUENCE) throw new Error('not a SEQUENCE');
    if (certificate.end !== der.byteLength) {
      throw new Error(`${der.byteLength - certificate.end} bytes follow the certificate`);
    }
    const tbs = readDerElement(der, certificate.valueStart);
    if (tbs.tag !== TAG_SEQUENCE) throw new Error('tbsCertificate is not a SEQUENCE');
    let cursor = tbs.valueStart;
    const first = readDerElement(der, cursor);
    // Skip [0] version (optional), serialNumber, signature, issuer, validity, subject.
    const skip = first.tag === TAG_VERSION ? 6 : 5;
    for (let i = 0; i < skip; i++) cursor = readDerElement(der, cursor).end;
    const spki = readDerElement(der, cursor);
    if (spki.tag !== TAG_SEQUENCE || spki.end > tbs.end) {
      throw new Error('subjectPublicKeyInfo is missing');
    }
    return new Uint8Array(der.subarray(cursor, spki.end));
  } catch (cause) {
    throw badCertificate(`its DER structure is invalid (${describe(cause)})`, cause);
  }
}

function pemToDer(pem: string): Uint8Array {
  if (pem.length > MAX_CERTIFICATE_BYTES * 2) {
    throw badCertificate('the PEM text is too large');
  }
  let blocks: Uint8Array[];
  try {
    blocks = pemBlocks(pem, 'CERTIFICATE');
  } catch {
    throw badCertificate('the PEM block is not valid base64');
  }
  const der = blocks[0];
  if (der === undefined) {
    throw badCertificate(
      'the text has no "-----BEGIN CERTIFICATE-----" block; pass DER bytes or PEM',
    );
  }
  return der;
}

const NAME_KEYS: Readonly<Record<string, string>> = {
  '2.5.4.3': 'CN',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '0.9.2342.19200300.100.1.25': 'DC',
};

/** RFC 4514-like text of a Name, most significant RDN first, for logs and reports. */
function formatName(name: Name): string {
  return Array.from(name, (rdn) =>
    Array.from(
      rdn,
      (attribute) => `${NAME_KEYS[attribute.type] ?? attribute.type}=${attribute.value.toString()}`,
    ).join('+'),
  ).join(', ');
}

function describe(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}

function badCertificate(reason: string, cause?: unknown): RaTlsError {
  return new RaTlsError(
    'MALFORMED_CERTIFICATE',
    `The server certificate cannot be parsed: ${reason}.`,
    {
      cause,
    },
  );
}

function badWrapping(oid: string, reason: string): RaTlsError {
  return new RaTlsError(
    'MALFORMED_ATTESTATION',
    `Certificate extension ${oid} is not a DER OCTET STRING wrapping its payload: ${reason}.`,
    { details: { oid } },
  );
}
