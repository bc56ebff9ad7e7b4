// @peculiar/x509 needs the Reflect metadata polyfill loaded before it.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/** A P-256 key and its certificate, as PEM for node:tls and DER for inspection. */
export interface PlainCertificate {
  /** PKCS#8 PEM private key. */
  readonly key: string;
  /** PEM certificate (this certificate only, no chain). */
  readonly cert: string;
  readonly der: Uint8Array;
  /** Subject common name. */
  readonly commonName: string;
  /** The WebCrypto key pair, to sign further certificates with. */
  readonly keys: webcrypto.CryptoKeyPair;
}

/** Options of {@link createPlainCertificate}. */
export interface PlainCertificateOptions {
  /** Subject CN. Default `pg-ra-tls test`. */
  readonly commonName?: string;
  /** DNS names for subjectAltName. */
  readonly altNames?: readonly string[];
  /** Signing certificate; self-signed when absent. */
  readonly issuer?: PlainCertificate;
  /** Make a CA certificate (basicConstraints cA, keyCertSign). */
  readonly isCa?: boolean;
  /** Extended key usages. Default both serverAuth and clientAuth for leaves, none for CAs. */
  readonly serverAuth?: boolean;
  readonly clientAuth?: boolean;
  /** Default: one hour ago. */
  readonly notBefore?: Date;
  /** Default: one day from now. */
  readonly notAfter?: Date;
  /** Reuse a key pair instead of generating one. */
  readonly keys?: webcrypto.CryptoKeyPair;
}

const P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;

/**
 * Creates a plain P-256 certificate (ecdsa-with-SHA256) without any RA-TLS
 * extension: a test CA, a server or client leaf, or the "no attestation"
 * credentials a misbehaving sidecar presents. Test-only.
 */
export async function createPlainCertificate(
  options: PlainCertificateOptions = {},
): Promise<PlainCertificate> {
  const commonName = options.commonName ?? 'pg-ra-tls test';
  const keys = options.keys ?? (await webcrypto.subtle.generateKey(P256, true, ['sign', 'verify']));
  const isCa = options.isCa ?? false;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(isCa, undefined, true),
    new x509.KeyUsagesExtension(
      isCa
        ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign
        : x509.KeyUsageFlags.digitalSignature,
      true,
    ),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  const usages: string[] = [];
  if (options.serverAuth ?? !isCa) usages.push(x509.ExtendedKeyUsage.serverAuth);
  if (options.clientAuth ?? !isCa) usages.push(x509.ExtendedKeyUsage.clientAuth);
  if (usages.length > 0) extensions.push(new x509.ExtendedKeyUsageExtension(usages));
  if (options.altNames !== undefined && options.altNames.length > 0) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        options.altNames.map((value) => ({ type: 'dns' as const, value })),
      ),
    );
  }
  const issuer = options.issuer;
  if (issuer !== undefined) {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey));
  }
  const now = Date.now();
  const serial = webcrypto.getRandomValues(new Uint8Array(8));
  // Positive and minimally encoded as a DER INTEGER (see ra-tls-certificate.ts).
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(serial).toString('hex'),
    subject: [{ CN: [commonName] }],
    issuer: [{ CN: [issuer?.commonName ?? commonName] }],
    notBefore: options.notBefore ?? new Date(now - 3_600_000),
    notAfter: options.notAfter ?? new Date(now + 86_400_000),
    signingAlgorithm: ECDSA_SHA256,
    publicKey: keys.publicKey,
    signingKey: issuer?.keys.privateKey ?? keys.privateKey,
    extensions,
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return Object.freeze({
    key: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'),
    cert: certificate.toString('pem'),
    der: new Uint8Array(certificate.rawData),
    commonName,
    keys,
  });
}
