/**
 * X.509 v2 CRLs shaped like Intel's root CA CRL and PCK CRL (docs/protocol.md §3, §8):
 * ecdsa-with-SHA256, thisUpdate/nextUpdate, revoked entries with a reason code,
 * CRL number and authority key identifier extensions. Built by hand so that
 * `TestAuthority.collateral()` stays synchronous.
 */
import { type KeyObject, sign } from 'node:crypto';
import {
  bitString,
  ecdsaWithSha256,
  enumerated,
  explicit,
  integer,
  objectIdentifier,
  octetString,
  sequence,
  time,
  tlv,
} from './der.js';

/** RFC 5280 §5.3.1 reason code keyCompromise, the reason Intel's PCK CRL entries carry. */
const REASON_KEY_COMPROMISE = 1;

/** One revoked certificate. */
export interface RevokedEntry {
  /** Serial number, unsigned big-endian bytes. */
  readonly serialNumber: Uint8Array;
  readonly revocationDate: Date;
}

/** What a CRL says. */
export interface CrlContent {
  /** DER of the issuer's Name (the issuing CA's subject). */
  readonly issuerName: Uint8Array;
  /** Key identifier of the issuing CA (its subject key identifier). */
  readonly authorityKeyId: Uint8Array;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  readonly revoked: readonly RevokedEntry[];
  readonly crlNumber: number;
}

function extension(oid: string, value: Uint8Array): Uint8Array {
  return sequence(objectIdentifier(oid), octetString(value));
}

/** DER of a CRL signed with `issuerKey` (the issuing CA's P-256 private key). */
export function encodeCrl(content: CrlContent, issuerKey: KeyObject): Uint8Array {
  const entries = content.revoked.map((entry) =>
    sequence(
      integer(entry.serialNumber),
      time(entry.revocationDate),
      sequence(extension('2.5.29.21', enumerated(REASON_KEY_COMPROMISE))),
    ),
  );
  const extensions = explicit(
    0,
    sequence(
      extension('2.5.29.20', integer(content.crlNumber)),
      extension('2.5.29.35', sequence(tlv(0x80, content.authorityKeyId))),
    ),
  );
  // An empty revokedCertificates SEQUENCE is not allowed (RFC 5280 §5.1.2.6): omit it, as
  // Intel's root CA CRL does.
  const tbs = sequence(
    integer(1),
    ecdsaWithSha256(),
    content.issuerName,
    time(content.thisUpdate),
    time(content.nextUpdate),
    ...(entries.length > 0 ? [sequence(...entries)] : []),
    extensions,
  );
  const signature = sign('sha256', tbs, issuerKey);
  return sequence(tbs, ecdsaWithSha256(), bitString(signature));
}
