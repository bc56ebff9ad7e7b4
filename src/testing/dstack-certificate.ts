/**
 * X.509 certificates shaped like the ones dstack's KMS and guest agent issue
 * (docs/protocol.md §1): P-256, ecdsa-with-SHA256, a CN-only (or O + CN) subject,
 * critical key usage, extended key usage only for the requested purposes, DNS
 * or IP subject alternative names, and Phala's 62397 extensions. Encoded with
 * the test authority's DER writer: synchronous and cheap.
 */
import { createHash, type KeyObject, randomBytes, sign } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { encodeName, type NameAttribute } from './authority/certificate.js';
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
} from './authority/der.js';

/** An extension: OID, criticality and the DER content of its extnValue OCTET STRING. */
interface Extension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Uint8Array;
}

/** What one dstack-shaped certificate carries. */
export interface DstackCertificateSpec {
  /** Subject attributes, most significant first (dstack: optional O, then CN). */
  readonly subject: readonly NameAttribute[];
  /** DER Name of the issuer; the subject itself for a self-signed root. */
  readonly issuerName: Uint8Array;
  /** SubjectKeyIdentifier of the issuer, for the AKI extension. */
  readonly issuerKeyId: Uint8Array;
  readonly publicKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** pathLenConstraint of a CA; absent for a leaf (no basicConstraints, as rcgen writes). */
  readonly caPathLength?: number;
  readonly serverAuth?: boolean;
  readonly clientAuth?: boolean;
  /** DNS names and IP addresses. */
  readonly altNames?: readonly string[];
  /** Phala extensions (OID → payload); each payload is DER-wrapped in an OCTET STRING (docs/protocol.md §1). */
  readonly phalaExtensions?: ReadonlyMap<string, Uint8Array>;
  /** Default: 16 random bytes. */
  readonly serialNumber?: Uint8Array;
}

// RFC 5280 §4.2.1.3 key usage bits, trailing zero bits dropped as DER demands.
const KEY_USAGE_LEAF = Uint8Array.of(0x07, 0x80); // digitalSignature
const KEY_USAGE_CA = Uint8Array.of(0x01, 0x86); // digitalSignature | keyCertSign | cRLSign
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** RFC 5280 §4.2.1.2 method 1 key identifier: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(publicKey: KeyObject): Uint8Array {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  // A P-256 SPKI is 91 bytes; its last 65 are the uncompressed point.
  return new Uint8Array(
    createHash('sha1')
      .update(spki.subarray(spki.length - 65))
      .digest(),
  );
}

/** DER of a certificate for `spec`, signed by `issuerKey`. */
export function encodeDstackCertificate(
  spec: DstackCertificateSpec,
  issuerKey: KeyObject,
): Uint8Array {
  const extensions: Extension[] = [
    { oid: '2.5.29.15', critical: true, value: tlv(0x03, keyUsage(spec)) },
  ];
  if (spec.caPathLength !== undefined) {
    extensions.push({
      oid: '2.5.29.19',
      critical: true,
      value: sequence(boolean(true), integer(spec.caPathLength)),
    });
  }
  const purposes = [
    ...(spec.serverAuth ? [SERVER_AUTH] : []),
    ...(spec.clientAuth ? [CLIENT_AUTH] : []),
  ];
  if (purposes.length > 0) {
    extensions.push({
      oid: '2.5.29.37',
      critical: false,
      value: sequence(...purposes.map(objectIdentifier)),
    });
  }
  const altNames = spec.altNames ?? [];
  if (altNames.length > 0) {
    extensions.push({
      oid: '2.5.29.17',
      critical: false,
      value: sequence(...altNames.map(generalName)),
    });
  }
  extensions.push(
    { oid: '2.5.29.14', critical: false, value: octetString(keyIdentifier(spec.publicKey)) },
    { oid: '2.5.29.35', critical: false, value: sequence(tlv(0x80, spec.issuerKeyId)) },
  );
  for (const [oid, payload] of spec.phalaExtensions ?? []) {
    extensions.push({ oid, critical: false, value: octetString(payload) });
  }

  const serial = spec.serialNumber ?? randomBytes(16);
  const tbs = sequence(
    explicit(0, integer(2)),
    integer(serial),
    ecdsaWithSha256(),
    spec.issuerName,
    sequence(time(spec.notBefore), time(spec.notAfter)),
    encodeName(spec.subject),
    new Uint8Array(spec.publicKey.export({ type: 'spki', format: 'der' })),
    explicit(3, sequence(...extensions.map(encodeExtension))),
  );
  return sequence(tbs, ecdsaWithSha256(), bitString(sign('sha256', tbs, issuerKey)));
}

function keyUsage(spec: DstackCertificateSpec): Uint8Array {
  return spec.caPathLength === undefined ? KEY_USAGE_LEAF : KEY_USAGE_CA;
}

function encodeExtension({ oid, critical, value }: Extension): Uint8Array {
  return sequence(objectIdentifier(oid), ...(critical ? [boolean(true)] : []), octetString(value));
}

/** GeneralName: iPAddress [7] for IP literals, dNSName [2] otherwise. */
function generalName(name: string): Uint8Array {
  if (isIPv4(name)) return tlv(0x87, Uint8Array.from(name.split('.').map(Number)));
  if (isIPv6(name)) return tlv(0x87, ipv6Bytes(name));
  return tlv(0x82, Buffer.from(name, 'latin1'));
}

/** The 16 bytes of an IPv6 literal (`::` compression and a dotted IPv4 tail allowed). */
function ipv6Bytes(address: string): Uint8Array {
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a = 0, b = 0, c = 0, d = 0] = dotted[1]!.split('.').map(Number);
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...left, ...new Array(8 - left.length - right.length).fill('0'), ...right];
  const bytes = new Uint8Array(16);
  groups.forEach((group, index) => {
    const value = Number.parseInt(group, 16);
    bytes[index * 2] = value >> 8;
    bytes[index * 2 + 1] = value & 0xff;
  });
  return bytes;
}
