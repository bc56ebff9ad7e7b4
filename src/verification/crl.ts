/**
 * Strict checking of the DCAP certificate revocation lists (docs/protocol.md §3).
 *
 * The pure-JS engine only matches serial numbers against the CRLs; it checks
 * neither their signatures nor their dates. Whenever its answer is the one that
 * stands (engine 'js', or a v5 quote the WASM engine cannot decode), these
 * checks close that gap: each CRL is signed by its issuing CA, which chains to
 * the trusted root; thisUpdate ≤ now < nextUpdate; each certificate of the
 * quote's PCK chain is covered by a CRL and not revoked. Pure code: bytes in,
 * verdict out.
 *
 * The work that depends only on the collateral (parsing both CRLs, checking
 * their signatures and the issuer chain) is done once per collateral set by
 * {@link prepareCrls}; per quote, {@link checkPckChain} only compares dates
 * and looks serial numbers up.
 */
import { createVerify, X509Certificate } from 'node:crypto';
import { RaTlsError } from '../errors.js';
import { bytesEqual, toHex } from '../util/bytes.js';
import { type CrlFields, readCertificateNames, readCrlDer } from '../util/x509-der.js';

/** The fields of a CRL that the strict check relies on. */
export interface ParsedCrl {
  /** DER of the issuer Name. */
  readonly issuer: Uint8Array;
  readonly thisUpdate: Date;
  /** Absent only in malformed CRLs; the strict check rejects those. */
  readonly nextUpdate: Date | undefined;
  /** Revoked serial numbers, lowercase hex without leading zero bytes. */
  readonly revokedSerials: ReadonlySet<string>;
  /** OID of the signature algorithm. */
  readonly signatureAlgorithm: string;
  /** The exact signed bytes (tbsCertList DER). */
  readonly tbs: Uint8Array;
  readonly signature: Uint8Array;
}

/** What {@link checkCrlsStrictly} needs; DER throughout, chains leaf first. */
export interface StrictCrlInput {
  /** Root CA CRL (collateral `root_ca_crl`). */
  readonly rootCaCrl: Uint8Array;
  /** PCK CRL (collateral `pck_crl`). */
  readonly pckCrl: Uint8Array;
  /** Collateral `pck_crl_issuer_chain`: the PCK CRL's issuing CA first, the root last. */
  readonly pckCrlIssuerChain: readonly Uint8Array[];
  /** The quote's PCK certificate chain: PCK leaf first. */
  readonly pckChain: readonly Uint8Array[];
  /** The root of trust (Intel SGX Root CA, or an explicitly passed test root). */
  readonly trustedRootCa: Uint8Array;
  readonly now: Date;
}

// X.509 signature algorithms used by DCAP CRLs (Intel signs with ecdsa-with-SHA256).
const DIGEST_BY_SIGNATURE_OID: Readonly<Record<string, string>> = {
  '1.2.840.10045.4.3.2': 'SHA256',
  '1.2.840.10045.4.3.3': 'SHA384',
};

/** Parses a DER CRL strictly (x509-der.ts); throws CRL_INVALID naming `label` when it cannot be decoded. */
export function parseCrl(der: Uint8Array, label: string): ParsedCrl {
  let crl: CrlFields;
  try {
    crl = readCrlDer(der);
  } catch (cause) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The ${label} is not a DER certificate revocation list; the collateral source served a broken CRL — fetch fresh collateral`,
      { cause, details: { crl: label } },
    );
  }
  const revokedSerials = new Set<string>();
  for (const serial of crl.revokedSerials) revokedSerials.add(serialHex(serial));
  return {
    issuer: crl.issuer.slice(),
    thisUpdate: crl.thisUpdate,
    nextUpdate: crl.nextUpdate,
    revokedSerials,
    signatureAlgorithm: crl.signatureAlgorithm,
    tbs: crl.tbs.slice(),
    signature: crl.signature.slice(),
  };
}

/**
 * Checks that `crl` was issued and signed by the certificate `issuerDer` and
 * that `now` lies in [thisUpdate, nextUpdate). Throws CRL_INVALID otherwise.
 */
export function verifyCrl(crl: ParsedCrl, issuerDer: Uint8Array, now: Date, label: string): void {
  verifyCrlSignature(crl, readCertificate(issuerDer, `issuer of the ${label}`), label);
  checkCrlDates(crl, now, label);
}

// Issuer name, signature and the presence of nextUpdate: facts of the CRL alone.
function verifyCrlSignature(crl: ParsedCrl, issuer: CertificateFacts, label: string): void {
  const details = { crl: label };
  if (!bytesEqual(crl.issuer, issuer.subject)) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The ${label} names an issuer other than its issuing CA in the collateral; the collateral is inconsistent — fetch fresh collateral`,
      { details },
    );
  }
  const digest = DIGEST_BY_SIGNATURE_OID[crl.signatureAlgorithm];
  if (digest === undefined) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The ${label} uses the unsupported signature algorithm ${crl.signatureAlgorithm}`,
      { details: { ...details, algorithm: crl.signatureAlgorithm } },
    );
  }
  let valid: boolean;
  try {
    valid = createVerify(digest).update(crl.tbs).verify(issuer.x509.publicKey, crl.signature);
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The ${label} signature does not verify with its issuing CA's key; the CRL was altered or does not belong to this collateral`,
      { details },
    );
  }
  if (crl.nextUpdate === undefined) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The ${label} has no nextUpdate, so its freshness is unknown`,
      {
        details,
      },
    );
  }
}

// thisUpdate ≤ now < nextUpdate: the per-verification part of a CRL's check.
function checkCrlDates(crl: ParsedCrl, now: Date, label: string): void {
  const details = { crl: label };
  if (crl.nextUpdate === undefined) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The ${label} has no nextUpdate, so its freshness is unknown`,
      {
        details,
      },
    );
  }
  if (now < crl.thisUpdate || now >= crl.nextUpdate) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The ${label} is valid from ${crl.thisUpdate.toISOString()} until ${crl.nextUpdate.toISOString()}, not at ${now.toISOString()}; fetch fresh collateral (or check the clock)`,
      {
        details: {
          ...details,
          thisUpdate: crl.thisUpdate.toISOString(),
          nextUpdate: crl.nextUpdate.toISOString(),
          now: now.toISOString(),
        },
      },
    );
  }
}

/** True when the certificate `certDer` has its serial number listed in `crl`. */
export function isRevoked(crl: ParsedCrl, certDer: Uint8Array): boolean {
  return crl.revokedSerials.has(readCertificate(certDer, 'certificate').serial);
}

/** The collateral's CRLs, parsed and checked once: signatures, issuer chain, issuer not revoked. */
export interface PreparedCrls {
  /** DER of the trusted root the CRLs were checked against. */
  readonly trustedRootCa: Uint8Array;
  readonly rootCrl: ParsedCrl;
  readonly pckCrl: ParsedCrl;
}

/** What {@link prepareCrls} needs: the collateral side of {@link StrictCrlInput}. */
export type CrlCollateralInput = Pick<
  StrictCrlInput,
  'rootCaCrl' | 'pckCrl' | 'pckCrlIssuerChain' | 'trustedRootCa'
>;

/**
 * The part of the strict CRL check that depends only on the collateral and
 * the root: the PCK CRL issuer chain ends in the trusted root and is signed
 * link by link; both CRLs are signed by their issuing CA and carry a
 * nextUpdate; the PCK CRL's issuer is not revoked by the root CA CRL.
 * Throws CRL_INVALID or PCK_REVOKED. Dates are checked per verification.
 */
export function prepareCrls(input: CrlCollateralInput): PreparedCrls {
  const root = readCertificate(input.trustedRootCa, 'trusted root CA');
  const issuerChain = input.pckCrlIssuerChain.map((der, i) =>
    readCertificate(der, `PCK CRL issuer chain certificate ${i}`),
  );
  const pckCrlIssuer = issuerChain[0];
  const chainRoot = issuerChain[issuerChain.length - 1];
  if (pckCrlIssuer === undefined || chainRoot === undefined || issuerChain.length < 2) {
    throw new RaTlsError(
      'CRL_INVALID',
      'The collateral pck_crl_issuer_chain must hold the PCK CRL issuing CA and the root CA',
      { details: { certificates: issuerChain.length } },
    );
  }
  if (!bytesEqual(chainRoot.der, root.der)) {
    throw new RaTlsError(
      'CRL_INVALID',
      'The collateral pck_crl_issuer_chain ends in a root CA other than the trusted root; the collateral comes from another root of trust',
    );
  }
  for (let i = 0; i + 1 < issuerChain.length; i++) {
    const subject = issuerChain[i]!;
    const issuer = issuerChain[i + 1]!;
    if (!subject.x509.verify(issuer.x509.publicKey)) {
      throw new RaTlsError(
        'CRL_INVALID',
        `The collateral pck_crl_issuer_chain certificate ${i} is not signed by the next certificate`,
      );
    }
  }

  const rootCrl = parseCrl(input.rootCaCrl, 'root CA CRL');
  verifyCrlSignature(rootCrl, root, 'root CA CRL');
  const pckCrl = parseCrl(input.pckCrl, 'PCK CRL');
  verifyCrlSignature(pckCrl, pckCrlIssuer, 'PCK CRL');
  if (rootCrl.revokedSerials.has(pckCrlIssuer.serial)) {
    throw new RaTlsError(
      'PCK_REVOKED',
      'The CA that issued the PCK CRL is revoked by the root CA CRL',
    );
  }

  return { trustedRootCa: root.der, rootCrl, pckCrl };
}

/**
 * The per-quote part of the strict CRL check: both CRLs current at `now`, and
 * every certificate of the quote's PCK chain below the root covered by one of
 * them and not revoked. Returns the earliest nextUpdate of the two CRLs (ms
 * since epoch). Throws CRL_INVALID or PCK_REVOKED.
 */
export function checkPckChain(
  prepared: PreparedCrls,
  chainDer: readonly Uint8Array[],
  now: Date,
): { readonly validUntil: number } {
  const { rootCrl, pckCrl } = prepared;
  checkCrlDates(rootCrl, now, 'root CA CRL');
  checkCrlDates(pckCrl, now, 'PCK CRL');
  const pckChain = chainDer.map((der, i) =>
    readIssuerAndSerial(der, `PCK chain certificate ${i} in the quote`),
  );
  if (pckChain.length === 0) {
    throw new RaTlsError('CRL_INVALID', 'The quote carries no PCK certificate chain to check');
  }
  for (const [i, cert] of pckChain.entries()) {
    if (bytesEqual(cert.der, prepared.trustedRootCa)) continue;
    const crl = bytesEqual(cert.issuer, pckCrl.issuer)
      ? pckCrl
      : bytesEqual(cert.issuer, rootCrl.issuer)
        ? rootCrl
        : undefined;
    const position = i === 0 ? 'PCK leaf certificate' : `PCK chain certificate ${i}`;
    if (crl === undefined) {
      throw new RaTlsError(
        'CRL_INVALID',
        `No CRL in the collateral covers the quote's ${position} (its issuer matches neither the PCK CRL nor the root CA CRL); fetch collateral for this platform's CA`,
        { details: { certificate: i } },
      );
    }
    if (crl.revokedSerials.has(cert.serial)) {
      throw new RaTlsError(
        'PCK_REVOKED',
        `The quote's ${position} (serial ${cert.serial}) is revoked; this platform can no longer be trusted`,
        { details: { certificate: i, serial: cert.serial } },
      );
    }
  }
  return {
    validUntil: Math.min(rootCrl.nextUpdate!.getTime(), pckCrl.nextUpdate!.getTime()),
  };
}

/**
 * The strict CRL check of docs/protocol.md §3 in one call: {@link prepareCrls}
 * then {@link checkPckChain}. Throws CRL_INVALID or PCK_REVOKED.
 */
export function checkCrlsStrictly(input: StrictCrlInput): { readonly validUntil: number } {
  return checkPckChain(prepareCrls(input), input.pckChain, input.now);
}

interface CertificateFacts {
  readonly der: Uint8Array;
  readonly x509: X509Certificate;
  /** DER of the subject and issuer Names (views into `der`: facts live only while checking). */
  readonly subject: Uint8Array;
  readonly issuer: Uint8Array;
  /** Serial number, lowercase hex without leading zero bytes. */
  readonly serial: string;
}

// The Names and serial come from a strict DER read of tbsCertificate
// (x509-der.ts); OpenSSL parses the whole certificate, so a malformed one is
// refused as before, at a fraction of a schema decoder's cost (measured).
function readCertificate(der: Uint8Array, label: string): CertificateFacts {
  try {
    const names = readCertificateNames(der);
    return {
      der,
      x509: new X509Certificate(der),
      subject: names.subject,
      issuer: names.issuer,
      serial: serialHex(names.serial),
    };
  } catch (cause) {
    throw new RaTlsError('CRL_INVALID', `The ${label} is not a DER X.509 certificate`, {
      cause,
      details: { certificate: label },
    });
  }
}

function readIssuerAndSerial(
  der: Uint8Array,
  label: string,
): { readonly der: Uint8Array; readonly issuer: Uint8Array; readonly serial: string } {
  // Per quote only the serial lookup: no crypto X509Certificate, names stay views.
  try {
    const names = readCertificateNames(der);
    return { der, issuer: names.issuer, serial: serialHex(names.serial) };
  } catch (cause) {
    throw new RaTlsError('CRL_INVALID', `The ${label} is not a DER X.509 certificate`, {
      cause,
      details: { certificate: label },
    });
  }
}

// DER INTEGERs carry a leading 0x00 when the high bit is set; CRL entries and
// certificates must compare equal either way.
function serialHex(bytes: Uint8Array): string {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  return toHex(bytes.subarray(start));
}
