import { type KeyObject, X509Certificate } from 'node:crypto';
import { sha256, toHex } from '../util/bytes.js';
import { pemBlocks } from '../util/pem.js';
import { readCertificateDer } from '../util/x509-der.js';
import { RA_TLS_OIDS, unwrapOctetString } from './certificate.js';

/** What the issuing CAs behind an RA-TLS leaf prove (docs/protocol.md §1, §2). */
export type KmsChainFacts =
  | {
      /** `[leaf, app CA, KMS root]`: every signature and validity window checked at `now`. */
      readonly verified: true;
      /** SHA-256 of the KMS root's DER SubjectPublicKeyInfo, lowercase hex: what a KMS pin names. */
      readonly rootSpkiSha256: string;
      /** The app CA's app-id claim (OID 1.3.6.1.4.1.62397.1.3), 20 bytes as lowercase hex. */
      readonly appId: string;
    }
  | {
      readonly verified: false;
      /** Why the chain proves nothing, for the KMS_NOT_TRUSTED message. */
      readonly reason: string;
      /** SPKI SHA-256 of the last certificate presented, when it parses: helps an operator see which root it was. */
      readonly lastSpkiSha256?: string;
    };

/** Length of the app-id claim: dstack app-ids are 20 bytes (docs/protocol.md §1). */
const APP_ID_BYTES = 20;

/**
 * Checks the certificates a server presented after its leaf as a dstack KMS
 * chain: exactly `[leaf, app CA, KMS root]`, each certificate signed by the
 * next (the root by itself), both CAs marked as CAs, every certificate inside
 * its validity window at `now`, and the app CA carrying a 20-byte app-id claim.
 * A dstack KMS issues an app CA only to CVMs whose boot measurements it
 * authorised, so a verified chain ending in a pinned root proves the OS that
 * wrote RTMR3 was one the KMS trusts (docs/protocol.md §2).
 *
 * Pure and total: a malformed, missing or foreign chain yields
 * `{ verified: false, reason }`, never an exception. Whether the root is
 * trusted is the policy's call (`policy.trustedKmsRoots`).
 */
export function inspectKmsChain(
  leafDer: Uint8Array,
  issuersDer: readonly Uint8Array[],
  now: Date,
): KmsChainFacts {
  const refuse = (reason: string): KmsChainFacts => {
    // Only a refusal names the last certificate's key (a verified chain names its root's).
    const last = issuersDer.at(-1);
    const parsedLast = last === undefined ? undefined : parseIssuer(last);
    const lastSpkiSha256 = parsedLast === undefined ? undefined : pinOf(parsedLast);
    return Object.freeze({
      verified: false,
      reason,
      ...(lastSpkiSha256 === undefined ? {} : { lastSpkiSha256 }),
    });
  };
  if (issuersDer.length === 0) {
    return refuse(
      'the server presented its leaf certificate alone, without the [app CA, KMS root] that issued it',
    );
  }
  if (issuersDer.length === 1) {
    return refuse(
      'the server presented [leaf, one CA]: the shape of dstack local-key-provider mode, which no KMS vouches for',
    );
  }
  if (issuersDer.length > 2) {
    return refuse(
      `the server presented ${issuersDer.length + 1} certificates; a dstack KMS chain is exactly [leaf, app CA, KMS root]`,
    );
  }
  const parsed: Parsed[] = [];
  const names = ['leaf', 'app CA', 'KMS root'] as const;
  for (const [index, der] of [leafDer, ...issuersDer].entries()) {
    const certificate = index === 0 ? parse(der) : parseIssuer(der);
    if (certificate === undefined)
      return refuse(`the ${names[index]} is not a DER X.509 certificate`);
    parsed.push(certificate);
  }
  const [leaf, appCa, root] = parsed as [Parsed, Parsed, Parsed];

  if (!signedBy(leaf, appCa)) {
    return refuse('the leaf is not signed by the app CA that follows it (missing or reordered CA)');
  }
  if (!appCa.x509.ca) return refuse('the app CA is not a CA certificate (basicConstraints cA)');
  if (!signedBy(appCa, root)) {
    return refuse(
      'the app CA is not signed by the KMS root that follows it (another KMS, or reordered)',
    );
  }
  if (!root.x509.ca || !signedBy(root, root)) {
    return refuse('the last certificate is not a self-signed CA, so it is no KMS root');
  }
  for (const [index, certificate] of parsed.entries()) {
    const { notBefore, notAfter } = certificate;
    if (now < notBefore || now > notAfter) {
      return refuse(
        `the ${names[index]} is valid from ${notBefore.toISOString()} to ${notAfter.toISOString()}, not at ${now.toISOString()}`,
      );
    }
  }
  const claim = appCa.extensions.get(RA_TLS_OIDS.appId);
  let appId: Uint8Array | undefined;
  try {
    appId = claim === undefined ? undefined : unwrapOctetString(claim, RA_TLS_OIDS.appId);
  } catch {
    appId = undefined;
  }
  if (appId?.byteLength !== APP_ID_BYTES) {
    return refuse(
      `the app CA carries no ${APP_ID_BYTES}-byte app-id claim (extension ${RA_TLS_OIDS.appId})`,
    );
  }
  const rootSpkiSha256 = pinOf(root);
  if (rootSpkiSha256 === undefined) return refuse('the KMS root has no exportable public key');
  return Object.freeze({
    verified: true,
    rootSpkiSha256,
    appId: toHex(appId),
  });
}

/**
 * The DER of every PEM certificate block in `text`, in order (a PEM chain,
 * leaf first, as GetTlsKey returns it); an empty list when a block is not
 * valid base64, so such a chain is refused rather than trusted.
 */
export function pemCertificates(text: string): Uint8Array[] {
  try {
    return pemBlocks(text);
  } catch {
    return [];
  }
}

/** SHA-256 (lowercase hex) of a certificate's DER SubjectPublicKeyInfo, or undefined when it does not parse. */
export function spkiSha256Of(der: Uint8Array): string | undefined {
  const parsed = parse(der);
  return parsed === undefined ? undefined : spkiSha256(parsed.publicKey);
}

// The key as OpenSSL re-encodes it: what a KMS pin names (docs/protocol.md §2).
function spkiSha256(publicKey: KeyObject): string | undefined {
  try {
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    return toHex(sha256(new Uint8Array(spki)));
  } catch {
    return undefined;
  }
}

interface Parsed {
  readonly x509: X509Certificate;
  /** Its key, parsed once for every signature it checks. */
  readonly publicKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly extensions: ReadonlyMap<string, Uint8Array>;
  /** Whether it is issued and signed by each certificate it was checked against. */
  readonly signedBy: WeakMap<Parsed, boolean>;
}

/**
 * The app CA and KMS root are the same for every server of a cluster and
 * every re-attestation. Their parse, the signatures between them and the
 * root's pin are facts of their DER alone, so the last few issuers are kept
 * by DER (validity windows are still checked at every call, at its `now`).
 * Measured per issuer: OpenSSL's parse ~0.2 ms, a signature check ~0.1 ms,
 * the root's key export ~0.15 ms, on the event loop of every attestation.
 */
const ISSUERS_KEPT = 16;
const issuers = new Map<string, Parsed | undefined>();
const pins = new WeakMap<Parsed, string>();

/** The SPKI SHA-256 of a kept issuer, exported once. */
function pinOf(issuer: Parsed): string | undefined {
  let pin = pins.get(issuer);
  if (pin === undefined) {
    pin = spkiSha256(issuer.publicKey);
    if (pin !== undefined) pins.set(issuer, pin);
  }
  return pin;
}

/** How many issuers are kept now (never more than 16: a server sending new ones each time cannot grow it). @internal */
export function keptIssuerCount(): number {
  return issuers.size;
}

function parseIssuer(der: Uint8Array): Parsed | undefined {
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  if (issuers.has(key)) {
    const kept = issuers.get(key);
    // Most recently used last: the first key is the one to forget.
    issuers.delete(key);
    issuers.set(key, kept);
    return kept;
  }
  const parsed = parse(der);
  issuers.set(key, parsed);
  if (issuers.size > ISSUERS_KEPT) issuers.delete(issuers.keys().next().value!);
  return parsed;
}

// OpenSSL parses the whole certificate and checks signatures; validity and
// extensions come from the strict DER reader (util/x509-der.ts), which also
// refuses an extension present twice (RFC 5280 §4.2: two app-id claims would
// be ambiguous). Measured: a schema decode of the 10 KiB leaf took ~0.5 ms.
function parse(der: Uint8Array): Parsed | undefined {
  try {
    const x509 = x509FromDer(der);
    if (x509 === undefined) return undefined;
    const fields = readCertificateDer(der);
    return {
      x509,
      publicKey: x509.publicKey,
      notBefore: fields.notBefore,
      notAfter: fields.notAfter,
      extensions: fields.extensions,
      signedBy: new WeakMap(),
    };
  } catch {
    return undefined;
  }
}

/**
 * Node's X509Certificate tries PEM before DER and skips to the first BEGIN
 * line anywhere in its input (measured: an RA-TLS leaf parsed as the PCK CA
 * whose PEM its quote embeds). So the DER is wrapped as PEM here, and the
 * result must be byte-identical to the input.
 */
function x509FromDer(der: Uint8Array): X509Certificate | undefined {
  const base64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const x509 = new X509Certificate(
    `-----BEGIN CERTIFICATE-----\n${base64}\n-----END CERTIFICATE-----\n`,
  );
  return Buffer.compare(x509.raw, Buffer.from(der.buffer, der.byteOffset, der.byteLength)) === 0
    ? x509
    : undefined;
}

/** `subject` names `issuer` as its issuer and carries a valid signature by its key. */
function signedBy(subject: Parsed, issuer: Parsed): boolean {
  let valid = subject.signedBy.get(issuer);
  if (valid === undefined) {
    try {
      valid = subject.x509.checkIssued(issuer.x509) && subject.x509.verify(issuer.publicKey);
    } catch {
      valid = false;
    }
    subject.signedBy.set(issuer, valid);
  }
  return valid;
}
