/**
 * X.509 v3 certificates of the test DCAP chain, shaped like Intel's SGX root, PCK
 * platform CA, PCK and TCB signing certificates (docs/protocol.md §8): P-256 keys,
 * ecdsa-with-SHA256, AKI, CRL distribution point, SKI, critical key usage and
 * basic constraints, then any extra extension. Encoded by hand with node:crypto
 * signing: synchronous and ~10× faster than a generic certificate builder, which
 * keeps an authority cheap to create (measured: ~3.5 ms per certificate with
 * @peculiar/x509, well under 0.5 ms here).
 */
import { type KeyObject, sign } from 'node:crypto';
import {
  bitString,
  boolean,
  ecdsaWithSha256,
  explicit,
  integer,
  objectIdentifier,
  octetString,
  sequence,
  time,
  tlv,
} from './der.js';

/** One attribute of a distinguished name, e.g. `['CN', 'Test Root CA']`. */
export type NameAttribute = readonly ['CN' | 'O' | 'L' | 'ST' | 'C', string];

const NAME_OIDS: Record<NameAttribute[0], string> = {
  CN: '2.5.4.3',
  O: '2.5.4.10',
  L: '2.5.4.7',
  ST: '2.5.4.8',
  C: '2.5.4.6',
};

/** DER Name: one attribute per RDN, UTF8String except PrintableString for the country (as Intel's). */
export function encodeName(attributes: readonly NameAttribute[]): Uint8Array {
  return sequence(
    ...attributes.map(([type, value]) =>
      tlv(
        0x31,
        sequence(
          objectIdentifier(NAME_OIDS[type]),
          tlv(type === 'C' ? 0x13 : 0x0c, Buffer.from(value, 'utf8')),
        ),
      ),
    ),
  );
}

/** An extension: OID, criticality and the DER of its value. */
export interface CertificateExtension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Uint8Array;
}

/** What goes into one certificate. */
export interface CertificateSpec {
  /** Unsigned big-endian serial number. */
  readonly serialNumber: Uint8Array;
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** P-256 public key of the subject. */
  readonly publicKey: KeyObject;
  readonly subjectKeyId: Uint8Array;
  readonly authorityKeyId: Uint8Array;
  /** CA certificates get keyCertSign|cRLSign, others digitalSignature|nonRepudiation. */
  readonly ca: boolean;
  /** pathLenConstraint of a CA. */
  readonly pathLength?: number;
  readonly crlUrl: string;
  readonly extraExtensions?: readonly CertificateExtension[];
}

function extension({ oid, critical, value }: CertificateExtension): Uint8Array {
  return sequence(objectIdentifier(oid), ...(critical ? [boolean(true)] : []), octetString(value));
}

// KeyUsage bit strings (RFC 5280 §4.2.1.3), trailing zero bits dropped as DER demands.
const KEY_USAGE_CA = Uint8Array.of(0x01, 0x06); // keyCertSign | cRLSign
const KEY_USAGE_SIGNER = Uint8Array.of(0x06, 0xc0); // digitalSignature | nonRepudiation

/** DER of a certificate signed by `issuerKey` (P-256, ecdsa-with-SHA256). */
export function encodeCertificate(spec: CertificateSpec, issuerKey: KeyObject): Uint8Array {
  const uri = tlv(0x86, Buffer.from(spec.crlUrl, 'latin1'));
  const extensions: CertificateExtension[] = [
    { oid: '2.5.29.35', critical: false, value: sequence(tlv(0x80, spec.authorityKeyId)) },
    // CRLDistributionPoints: one DistributionPoint with a fullName URI.
    { oid: '2.5.29.31', critical: false, value: sequence(sequence(tlv(0xa0, tlv(0xa0, uri)))) },
    { oid: '2.5.29.14', critical: false, value: octetString(spec.subjectKeyId) },
    {
      oid: '2.5.29.15',
      critical: true,
      value: tlv(0x03, spec.ca ? KEY_USAGE_CA : KEY_USAGE_SIGNER),
    },
    {
      oid: '2.5.29.19',
      critical: true,
      value: spec.ca
        ? sequence(
            boolean(true),
            ...(spec.pathLength === undefined ? [] : [integer(spec.pathLength)]),
          )
        : sequence(),
    },
    ...(spec.extraExtensions ?? []),
  ];
  const spki = new Uint8Array(spec.publicKey.export({ type: 'spki', format: 'der' }));
  const tbs = sequence(
    explicit(0, integer(2)),
    integer(spec.serialNumber),
    ecdsaWithSha256(),
    spec.issuer,
    sequence(time(spec.notBefore), time(spec.notAfter)),
    spec.subject,
    spki,
    explicit(3, sequence(...extensions.map(extension))),
  );
  return sequence(tbs, ecdsaWithSha256(), bitString(sign('sha256', tbs, issuerKey)));
}

/** PEM of a DER certificate, 64-character lines, trailing newline. */
export function certificatePem(der: Uint8Array): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}
