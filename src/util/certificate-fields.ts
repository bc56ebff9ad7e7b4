/**
 * The few fields of an X.509 certificate (RFC 5280 §4.1) that per-quote code
 * needs, read with the strict DER reader in microseconds: a full ASN.1 schema
 * parse costs ~1.4 ms per certificate, and every verification reads the three
 * certificates of the quote's PCK chain (docs/protocol.md §3). Names stay raw
 * DER, so comparing them is the binary comparison of RFC 5280 §7.1. Pure code;
 * throws plain Errors that callers turn into their own typed error.
 */
import { DER_TAG, type DerElement, derValue, readDerElement } from './der.js';

/** One extension: its OID (DER content bytes) and its extnValue contents. */
export interface CertificateExtension {
  readonly oid: Uint8Array;
  readonly value: Uint8Array;
}

/** Raw fields of one certificate; every array is a view into the input. */
export interface CertificateFields {
  /** serialNumber, the INTEGER's content bytes as encoded. */
  readonly serial: Uint8Array;
  /** DER of the issuer Name (tag and length included). */
  readonly issuer: Uint8Array;
  /** DER of the subject Name (tag and length included). */
  readonly subject: Uint8Array;
  readonly extensions: readonly CertificateExtension[];
}

const EXTENSIONS_TAG = 0xa3; // [3] EXPLICIT, constructed
const BOOLEAN_TAG = 0x01;

/** Reads `der`, which must be exactly one DER certificate. */
export function readCertificateFields(der: Uint8Array): CertificateFields {
  const certificate = expect(der, 0, DER_TAG.sequence, 'Certificate');
  if (certificate.end !== der.byteLength) throw new Error('bytes follow the certificate');
  const tbs = expect(der, certificate.valueStart, DER_TAG.sequence, 'tbsCertificate');
  let at = tbs.valueStart;
  if (der[at] === DER_TAG.contextZero) at = readDerElement(der, at).end; // version
  const serial = expect(der, at, DER_TAG.integer, 'serialNumber', tbs.end);
  const signature = expect(der, serial.end, DER_TAG.sequence, 'signature', tbs.end);
  const issuer = expect(der, signature.end, DER_TAG.sequence, 'issuer', tbs.end);
  const validity = expect(der, issuer.end, DER_TAG.sequence, 'validity', tbs.end);
  const subject = expect(der, validity.end, DER_TAG.sequence, 'subject', tbs.end);
  at = expect(der, subject.end, DER_TAG.sequence, 'subjectPublicKeyInfo', tbs.end).end;
  const extensions: CertificateExtension[] = [];
  while (at < tbs.end) {
    const element = within(readDerElement(der, at), tbs.end, 'a tbsCertificate field');
    if (element.tag === EXTENSIONS_TAG) {
      const list = expect(der, element.valueStart, DER_TAG.sequence, 'extensions', element.end);
      for (let next = list.valueStart; next < list.end; ) {
        const extension = expect(der, next, DER_TAG.sequence, 'Extension', list.end);
        const oid = expect(der, extension.valueStart, DER_TAG.oid, 'extnID', extension.end);
        let valueAt = oid.end;
        if (der[valueAt] === BOOLEAN_TAG) {
          valueAt = expect(der, valueAt, BOOLEAN_TAG, 'critical', extension.end).end;
        }
        const value = expect(der, valueAt, DER_TAG.octetString, 'extnValue', extension.end);
        if (value.end !== extension.end) throw new Error('bytes follow an extension value');
        extensions.push({ oid: derValue(der, oid), value: derValue(der, value) });
        next = extension.end;
      }
    }
    at = element.end;
  }
  return {
    serial: derValue(der, serial),
    issuer: der.subarray(signature.end, issuer.end),
    subject: der.subarray(validity.end, subject.end),
    extensions,
  };
}

/**
 * DER of the issuer Name of a CRL's signed body (tbsCertList, RFC 5280 §5.1),
 * as {@link readCertificateFields} returns a certificate's names.
 */
export function readCrlIssuer(tbsCertList: Uint8Array): Uint8Array {
  const tbs = expect(tbsCertList, 0, DER_TAG.sequence, 'tbsCertList');
  let at = tbs.valueStart;
  if (tbsCertList[at] === DER_TAG.integer) at = readDerElement(tbsCertList, at).end; // version
  const signature = expect(tbsCertList, at, DER_TAG.sequence, 'signature', tbs.end);
  const issuer = expect(tbsCertList, signature.end, DER_TAG.sequence, 'issuer', tbs.end);
  return tbsCertList.subarray(signature.end, issuer.end);
}

function expect(
  bytes: Uint8Array,
  offset: number,
  tag: number,
  name: string,
  limit = bytes.byteLength,
): DerElement {
  const element = within(readDerElement(bytes, offset), limit, name);
  if (element.tag !== tag) {
    throw new Error(`${name} has tag 0x${element.tag.toString(16)}, not 0x${tag.toString(16)}`);
  }
  return element;
}

function within(element: DerElement, limit: number, name: string): DerElement {
  if (element.end > limit) throw new Error(`${name} overruns its container`);
  return element;
}
