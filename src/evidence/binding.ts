import { RaTlsError } from '../errors.js';
import { bytesEqual, sha512, toHex } from '../util/bytes.js';
import type { ParsedQuote, RaTlsCertificate } from './types.js';

/** The domain tag dstack puts in front of the TLS key before hashing (docs/protocol.md §1). */
const RA_TLS_REPORT_DATA_TAG = new TextEncoder().encode('ratls-cert:');

/**
 * The report_data a quote must carry to vouch for a TLS key:
 * `SHA-512("ratls-cert:" ‖ DER SubjectPublicKeyInfo)` (docs/protocol.md §1).
 */
export function expectedReportData(spki: Uint8Array): Uint8Array {
  return sha512(RA_TLS_REPORT_DATA_TAG, spki);
}

/**
 * Proves that `quote` was produced for this certificate's key. Without this
 * check any captured quote could be replayed inside an attacker's certificate
 * (docs/protocol.md §1). Also rejects an envelope whose own report_data disagrees
 * with the quote's. Throws PUBKEY_MISMATCH.
 */
export function checkBinding(certificate: RaTlsCertificate, quote: ParsedQuote): void {
  const expected = expectedReportData(certificate.spki);
  if (!bytesEqual(quote.reportData, expected)) {
    throw new RaTlsError(
      'PUBKEY_MISMATCH',
      `The quote's report_data ${toHex(quote.reportData)} is not SHA-512("ratls-cert:" ‖ SPKI) of the certificate key (${toHex(expected)}): the quote was made for another key. Do not connect; the certificate may carry a replayed quote.`,
      { details: { fingerprint: certificate.fingerprint, reportData: toHex(quote.reportData) } },
    );
  }
  const envelopeReportData = certificate.attestation.reportData;
  if (envelopeReportData !== undefined && !bytesEqual(envelopeReportData, quote.reportData)) {
    throw new RaTlsError(
      'PUBKEY_MISMATCH',
      `The attestation envelope's report_data ${toHex(envelopeReportData)} differs from the quote's ${toHex(quote.reportData)}: the envelope is inconsistent. Do not connect.`,
      { details: { fingerprint: certificate.fingerprint } },
    );
  }
}
