import { describeCause, RaTlsError } from '../errors.js';
import { checkBinding } from '../evidence/binding.js';
import { readRaTlsCertificate } from '../evidence/certificate.js';
import {
  inspectKmsChain,
  type KmsChainFacts,
  pemCertificates,
} from '../evidence/certificate-chain.js';
import { parseQuote } from '../evidence/quote.js';
import { verifyAppIdentity } from '../evidence/rtmr3.js';
import type { ParsedQuote, RaTlsCertificate } from '../evidence/types.js';
import { applyPolicy, policyWarnings } from '../policy/policy.js';
import type { NormalizedPolicy } from '../policy/types.js';
import { bytesEqual, toHex } from '../util/bytes.js';
import { abortError } from '../util/deadline.js';
import type { RaTlsVerifier, VerificationResult } from '../verification/verifier.js';
import type { AttestationReport } from './report.js';

/** Options of {@link attestCertificate}. */
export interface AttestCertificateOptions {
  /** Checks the quote's signatures and collateral and reports its TCB status. */
  readonly verifier: RaTlsVerifier;
  /** A policy from `normalizePolicy`. */
  readonly policy: NormalizedPolicy;
  /**
   * DER of the certificates the server presented after its leaf, in the same
   * handshake (the app CA and KMS root under a dstack KMS). Judged only by
   * `policy.trustedKmsRoots`, and reported; absent means none were captured,
   * unless `certificate` is a PEM chain (leaf first), whose later blocks are then used.
   */
  readonly chain?: readonly Uint8Array[];
  /** Verification time; defaults to now. Also the time the chain's validity is checked at. */
  readonly now?: Date;
  /** Aborts verification; the reason is rethrown when it is a RaTlsError. */
  readonly signal?: AbortSignal;
}

const MEASUREMENTS = ['mrtd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3'] as const;

/**
 * Attests an RA-TLS server certificate: reads it, parses its TDX quote, checks
 * that the quote binds the certificate key (before any costly DCAP work),
 * replays RTMR3 when runtime events exist, has `verifier` check the quote,
 * cross-checks that the verifier vouched for this very quote, and applies the
 * policy. Binding, replay and policy run around every verifier, so no custom
 * verifier can skip them. Resolves to a frozen {@link AttestationReport};
 * rejects with a {@link RaTlsError}.
 */
export async function attestCertificate(
  certificate: Uint8Array | string | RaTlsCertificate,
  options: AttestCertificateOptions,
): Promise<AttestationReport> {
  const { verifier, policy, signal } = options;
  throwIfAborted(signal);
  // A connect reaches here in the turn of its TLS handshake, which already
  // parsed and linked the server's certificates: the attestation's own work
  // (parsing, RTMR3, the KMS chain, the verifier's) starts in a turn of its
  // own, so that neither holds the event loop for both (issue 11).
  await new Promise<void>((resolve) => setImmediate(resolve));
  throwIfAborted(signal);
  const cert =
    typeof certificate === 'string' || certificate instanceof Uint8Array
      ? readRaTlsCertificate(certificate)
      : certificate;
  const quote = parseQuote(cert.attestation.quote);
  checkBinding(cert, quote);
  const app =
    cert.attestation.runtimeEvents.length > 0
      ? verifyAppIdentity(cert.attestation.runtimeEvents, quote.rtmr3)
      : undefined;

  const now = options.now ?? new Date();
  // A few signature checks, once per certificate per reattestEvery (the result is cached with the report).
  const chain =
    options.chain ??
    (typeof certificate === 'string' ? pemCertificates(certificate).slice(1) : undefined);
  const kmsChain = chain === undefined ? undefined : inspectKmsChain(cert.der, chain, now);
  let verification: VerificationResult;
  try {
    verification = await verifier.verify(cert.attestation.quote, { now, signal });
  } catch (cause) {
    if (cause instanceof RaTlsError) throw cause;
    throwIfAborted(signal);
    throw new RaTlsError(
      'QUOTE_INVALID',
      `Verifier ${verifier.name} rejected the quote: ${describeCause(cause)}`,
      { cause, details: { verifier: verifier.name } },
    );
  }
  throwIfAborted(signal);
  crossCheck(verification, quote, verifier.name);
  applyPolicy(
    {
      quote,
      tcbStatus: verification.tcbStatus,
      verifierSaysDebug: verification.isDebug,
      unverified: verifier.unverified === true,
      app,
      ...(kmsChain === undefined ? {} : { kmsChain }),
    },
    policy,
  );

  const warnings = policyWarnings(policy);
  if (verifier.unverified === true) {
    warnings.push(
      `Verifier ${verifier.name} checks nothing: the quote's signatures and TCB status were not verified.`,
    );
  }
  if (verification.testRoot === true) {
    warnings.push(
      `Verifier ${verifier.name} checked the quote against a TEST root of trust, not Intel's: this proves nothing about real TDX hardware.`,
    );
  }
  return freezeReport({
    fingerprint: cert.fingerprint,
    verifiedAt: now.getTime(),
    certificate: {
      subject: cert.subject,
      notBefore: new Date(cert.notBefore),
      notAfter: new Date(cert.notAfter),
    },
    attestationFormat: cert.attestation.format,
    quoteVersion: quote.version,
    mrtd: quote.mrtd,
    rtmr0: quote.rtmr0,
    rtmr1: quote.rtmr1,
    rtmr2: quote.rtmr2,
    rtmr3: quote.rtmr3,
    tdAttributes: quote.tdAttributes,
    mrSeam: quote.mrSeam,
    isDebug: quote.isDebug || verification.isDebug === true,
    tcbStatus: verification.tcbStatus,
    advisoryIds: [...(verification.advisoryIds ?? [])],
    reportData: toHex(quote.reportData),
    app,
    kms: kmsReport(kmsChain, policy),
    verifier: verification.verifier ?? verifier.name,
    warnings,
    ...(verification.validUntil === undefined ? {} : { validUntil: verification.validUntil }),
    ...(verification.testRoot === true ? { testRoot: true } : {}),
  });
}

/** The KMS part of the report: present only when the chain verified as [leaf, app CA, KMS root]. */
function kmsReport(
  chain: KmsChainFacts | undefined,
  policy: NormalizedPolicy,
): AttestationReport['kms'] {
  if (chain === undefined || !chain.verified) return undefined;
  return Object.freeze({
    rootSpkiSha256: chain.rootSpkiSha256,
    appId: chain.appId,
    pinned: policy.trustedKmsRoots.includes(chain.rootSpkiSha256),
  });
}

/**
 * A verifier that vouches for measurements other than the parsed quote's is a
 * bug or an attack (docs/protocol.md §3): its verdict cannot be applied to this quote.
 */
function crossCheck(verification: VerificationResult, quote: ParsedQuote, name: string): void {
  if (typeof verification !== 'object' || verification === null) {
    throw mismatch(name, 'it returned no result');
  }
  for (const field of MEASUREMENTS) {
    const vouched = verification[field];
    if (typeof vouched !== 'string' || vouched.toLowerCase() !== quote[field]) {
      throw mismatch(
        name,
        `its ${field} ${String(vouched)} differs from the quote's ${quote[field]}`,
      );
    }
  }
  if (
    !(verification.reportData instanceof Uint8Array) ||
    !bytesEqual(verification.reportData, quote.reportData)
  ) {
    throw mismatch(name, "its report_data differs from the quote's");
  }
}

function mismatch(name: string, reason: string): RaTlsError {
  return new RaTlsError(
    'VERIFIER_MISMATCH',
    `Verifier ${name} reported on a different quote than the server presented: ${reason}. This is a verifier bug or an attack; do not connect.`,
    { details: { verifier: name } },
  );
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted !== true) return;
  throw abortError(
    signal.reason,
    (reason) =>
      new RaTlsError('VERIFY_TIMEOUT', 'Attestation verification was aborted before it finished.', {
        cause: reason,
      }),
  );
}

function freezeReport(report: AttestationReport): AttestationReport {
  Object.freeze(report.certificate);
  Object.freeze(report.advisoryIds);
  Object.freeze(report.warnings);
  return Object.freeze(report);
}
