import { RaTlsError } from '../errors.js';
import type { KmsChainFacts } from '../evidence/certificate-chain.js';
import { pemCertificates, spkiSha256Of } from '../evidence/certificate-chain.js';
import type { AppIdentity } from '../evidence/types.js';
import { normalizeHex } from '../util/bytes.js';

const OPTION = 'policy.trustedKmsRoots';

/**
 * Validates `policy.trustedKmsRoots` into SPKI SHA-256 pins (lowercase hex):
 * each entry is a root certificate as PEM text or DER bytes, or the 64-hex
 * SHA-256 of its DER SubjectPublicKeyInfo. Pinning the key rather than the
 * certificate keeps a pin valid across a KMS root re-issued with the same key.
 * Undefined means "not pinned"; an empty array is BAD_CONFIG (a pin that
 * pins nothing must not look like one). The result is frozen.
 */
export function normalizeKmsRoots(value: unknown): readonly string[] {
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value) || value.length === 0) {
    throw badConfig(
      OPTION,
      'must be a non-empty array of KMS root certificates (PEM or DER) or their SPKI SHA-256 (64 hex); omit the option to leave the KMS unpinned',
    );
  }
  const pins = new Set<string>();
  value.forEach((item: unknown, i) => {
    const pin = pinOf(item);
    if (pin === undefined) {
      throw badConfig(
        `${OPTION}[${i}]`,
        `must be one certificate (PEM text or DER bytes) or a 64-hex SPKI SHA-256, got ${describe(item)}`,
      );
    }
    pins.add(pin);
  });
  return Object.freeze([...pins]);
}

function pinOf(item: unknown): string | undefined {
  if (item instanceof Uint8Array) return spkiSha256Of(item);
  if (typeof item !== 'string') return undefined;
  if (item.includes('-----BEGIN CERTIFICATE-----')) {
    const blocks = pemCertificates(item);
    // One root per entry: a pasted chain would silently pin its first certificate.
    return blocks.length === 1 ? spkiSha256Of(blocks[0]!) : undefined;
  }
  const hex = normalizeHex(item);
  return hex?.length === 64 ? hex : undefined;
}

/**
 * The KMS rule (docs/protocol.md §1, §2): with `trustedKmsRoots` set, the chain the
 * server presented in the verified handshake must be a verified
 * `[leaf, app CA, KMS root]` ending in a pinned root (KMS_NOT_TRUSTED), and the
 * app-id the KMS put in the app CA must be the app-id the RTMR3 replay proved
 * (APP_ID_MISMATCH; APP_IDENTITY_UNVERIFIED when there is none to compare).
 */
export function checkKmsChain(
  chain: KmsChainFacts | undefined,
  app: AppIdentity | undefined,
  trustedKmsRoots: readonly string[],
): void {
  if (trustedKmsRoots.length === 0) return;
  if (chain === undefined || !chain.verified) {
    const reason = chain === undefined ? 'no certificate chain was captured' : chain.reason;
    throw new RaTlsError(
      'KMS_NOT_TRUSTED',
      `${OPTION} is set, but the server's certificate chain proves no KMS: ${reason}. ` +
        'Only a CVM a pinned dstack KMS authorised can present [leaf, app CA, KMS root]; do not connect.',
      {
        details:
          chain === undefined || chain.lastSpkiSha256 === undefined
            ? {}
            : { lastSpkiSha256: chain.lastSpkiSha256 },
      },
    );
  }
  if (!trustedKmsRoots.includes(chain.rootSpkiSha256)) {
    throw new RaTlsError(
      'KMS_NOT_TRUSTED',
      `The server's certificate chain ends in the KMS root with SPKI SHA-256 ${chain.rootSpkiSha256}, which is not in ${OPTION}: ` +
        'another KMS issued its keys. Add that root only if it is your KMS.',
      { details: { kmsRoot: chain.rootSpkiSha256 } },
    );
  }
  const attested = app?.appId;
  if (attested === undefined) {
    throw new RaTlsError(
      'APP_IDENTITY_UNVERIFIED',
      `${OPTION} is set, but the server's attestation has no verified app-id runtime event to compare with the app CA's claim ${chain.appId}. Connect to a dstack server that records its app-id.`,
      { details: { option: OPTION, kmsAppId: chain.appId } },
    );
  }
  if (attested !== chain.appId) {
    throw new RaTlsError(
      'APP_ID_MISMATCH',
      `The KMS issued this server's app CA for app-id ${chain.appId}, but its verified RTMR3 events say app-id ${attested}: ` +
        'the OS claims an app the KMS did not give it keys for. Do not connect.',
      { details: { kmsAppId: chain.appId, appId: attested } },
    );
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  return value === null ? 'null' : typeof value;
}

function badConfig(option: string, reason: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', `${option} ${reason}.`, { details: { option } });
}
