import { RaTlsError } from '../errors.js';
import type { KmsChainFacts } from '../evidence/certificate-chain.js';
import type { AppIdentity, ParsedQuote } from '../evidence/types.js';
import { normalizeHex } from '../util/bytes.js';
import { assertKnownOptions } from '../util/known-options.js';
import { TCB_STATUSES, type TcbStatus } from '../verification/verifier.js';
import { checkKmsChain, normalizeKmsRoots } from './kms-roots.js';
import { checkMeasurements, normalizeMeasurementSets } from './measurements.js';
import type { NormalizedPolicy, Policy } from './types.js';

/** The statuses the existing connectors accept (docs/protocol.md §3). */
export const DEFAULT_ACCEPTABLE_TCB_STATUSES: readonly TcbStatus[] = Object.freeze([
  'UpToDate',
  'SWHardeningNeeded',
]);

const POLICY_KEYS: ReadonlySet<string> = new Set([
  'allowedMrtds',
  'allowedAppIds',
  'allowedComposeHashes',
  'allowedMeasurements',
  'trustedKmsRoots',
  'allowDebugMode',
  'acceptableTcbStatuses',
]);

/**
 * Validates and normalises a user policy: hex values trimmed, lowercased,
 * `0x`-stripped, checked for length and deduplicated; TCB status names checked
 * against {@link TCB_STATUSES}. Unknown options are refused so that a typo
 * cannot silently disable a rule. Throws BAD_CONFIG naming the option.
 * The result and its arrays are frozen.
 */
export function normalizePolicy(policy?: Policy): NormalizedPolicy {
  if (policy === undefined || policy === null) policy = {};
  if (typeof policy !== 'object' || Array.isArray(policy)) {
    throw badConfig('policy', 'must be an object');
  }
  assertKnownOptions(policy, POLICY_KEYS, 'policy', 'policy.');
  const allowDebugMode = policy.allowDebugMode ?? false;
  if (typeof allowDebugMode !== 'boolean') {
    throw badConfig('policy.allowDebugMode', 'must be true or false');
  }
  return Object.freeze({
    allowedMrtds: hexList(policy.allowedMrtds, 'policy.allowedMrtds', 48),
    allowedAppIds: hexList(policy.allowedAppIds, 'policy.allowedAppIds', 20),
    allowedComposeHashes: hexList(policy.allowedComposeHashes, 'policy.allowedComposeHashes', 32),
    allowedMeasurements: normalizeMeasurementSets(policy.allowedMeasurements),
    trustedKmsRoots: normalizeKmsRoots(policy.trustedKmsRoots),
    allowDebugMode,
    acceptableTcbStatuses: statusList(policy.acceptableTcbStatuses),
  });
}

/** Warnings a normalised policy deserves, for logs and the AttestationReport. */
export function policyWarnings(policy: NormalizedPolicy): string[] {
  const warnings: string[] = [];
  const bootOrKmsPinned =
    policy.allowedMeasurements.length > 0 || policy.trustedKmsRoots.length > 0;
  if (policy.allowedMrtds.length === 0 && !bootOrKmsPinned) {
    warnings.push(
      'policy.allowedMrtds is empty: any MRTD (any firmware, any OS) is accepted; pin policy.allowedMeasurements or policy.trustedKmsRoots.',
    );
  }
  // docs/protocol.md §2: MRTD measures only the firmware, and RTMR3 events are written by the
  // booted OS: without the boot chain or a KMS root pinned, a foreign kernel can claim them.
  const weakPins = [
    ...(policy.allowedMrtds.length > 0 ? ['policy.allowedMrtds'] : []),
    ...(policy.allowedAppIds.length > 0 ? ['policy.allowedAppIds'] : []),
    ...(policy.allowedComposeHashes.length > 0 ? ['policy.allowedComposeHashes'] : []),
  ];
  if (weakPins.length > 0 && !bootOrKmsPinned) {
    warnings.push(
      `${weakPins.join(', ')} ${weakPins.length === 1 ? 'is' : 'are'} pinned without policy.allowedMeasurements or policy.trustedKmsRoots: ` +
        'MRTD measures only the firmware, and app-id and compose-hash are written into RTMR3 by the booted OS, which nothing pins, ' +
        'so a foreign kernel on genuine firmware can claim them. Pin the boot chain (MRTD + RTMR0-2) or the KMS root.',
    );
  }
  if (policy.allowDebugMode) {
    warnings.push(
      'policy.allowDebugMode is true: a debug TD, whose memory the host can read, is accepted; never use in production.',
    );
  }
  return warnings;
}

/** The facts a policy judges: a parsed quote, what the verifier vouched for, and the verified app. */
export interface PolicyFacts {
  readonly quote: ParsedQuote;
  readonly tcbStatus: TcbStatus;
  /** Debug as the verifier saw it; the quote's own debug bit is always consulted too. */
  readonly verifierSaysDebug?: boolean;
  /** True when the verifier checks nothing (NoopVerifier): only the TCB-status rule is skipped. */
  readonly unverified?: boolean;
  /** The identity from runtime events whose RTMR3 replay matched; absent without events. */
  readonly app?: AppIdentity;
  /** The certificates presented behind the leaf in the verified handshake, judged; absent when none were captured. */
  readonly kmsChain?: KmsChainFacts;
}

/**
 * Applies `policy` to verified facts (docs/protocol.md §2, §3). Every rule is
 * enforced here, never left to an engine. Throws SEAM_SIGNER_NOT_ZERO,
 * DEBUG_MODE, MRTD_NOT_ALLOWED, MEASUREMENT_NOT_ALLOWED, BAD_TCB_STATUS,
 * KMS_NOT_TRUSTED, APP_ID_MISMATCH, APP_IDENTITY_UNVERIFIED, APP_NOT_ALLOWED
 * or COMPOSE_HASH_NOT_ALLOWED; each message names the offending value and the
 * option to change. The boot chain and KMS rules run before the app rules,
 * because they are what makes the app-id trustworthy (docs/protocol.md §2).
 */
export function applyPolicy(facts: PolicyFacts, policy: NormalizedPolicy): void {
  const { quote } = facts;
  // dstack requires the TDX module to be Intel's (mr_signer_seam zero) and no service TD (docs/protocol.md §2).
  if (/[^0]/.test(quote.mrSignerSeam)) {
    throw new RaTlsError(
      'SEAM_SIGNER_NOT_ZERO',
      `mr_signer_seam is ${quote.mrSignerSeam}, not all zero: the TDX module was not signed by Intel. No policy option allows this.`,
      { details: { mrSignerSeam: quote.mrSignerSeam } },
    );
  }
  if (quote.mrServiceTd !== undefined && /[^0]/.test(quote.mrServiceTd)) {
    throw new RaTlsError(
      'SEAM_SIGNER_NOT_ZERO',
      `mr_service_td is ${quote.mrServiceTd}, not all zero: a service TD is bound to this TD. No policy option allows this.`,
      { details: { mrServiceTd: quote.mrServiceTd } },
    );
  }
  if ((quote.isDebug || facts.verifierSaysDebug === true) && !policy.allowDebugMode) {
    throw new RaTlsError(
      'DEBUG_MODE',
      `The server TD runs in debug mode (td_attributes ${quote.tdAttributes}): the host can read its memory. Set policy.allowDebugMode only for development.`,
      { details: { tdAttributes: quote.tdAttributes } },
    );
  }
  if (policy.allowedMrtds.length > 0 && !policy.allowedMrtds.includes(quote.mrtd)) {
    throw new RaTlsError(
      'MRTD_NOT_ALLOWED',
      `MRTD ${quote.mrtd} is not in policy.allowedMrtds; add it there if this firmware/OS image is one you deploy.`,
      { details: { mrtd: quote.mrtd } },
    );
  }
  checkMeasurements(quote, policy.allowedMeasurements);
  if (facts.unverified !== true && !policy.acceptableTcbStatuses.includes(facts.tcbStatus)) {
    throw new RaTlsError(
      'BAD_TCB_STATUS',
      `TCB status ${facts.tcbStatus} is not in policy.acceptableTcbStatuses (${policy.acceptableTcbStatuses.join(', ')}): the platform needs updates. Add it to policy.acceptableTcbStatuses only if you accept that risk.`,
      { details: { tcbStatus: facts.tcbStatus } },
    );
  }
  checkKmsChain(facts.kmsChain, facts.app, policy.trustedKmsRoots);
  checkAppRule(
    facts.app,
    'appId',
    'app-id',
    policy.allowedAppIds,
    'policy.allowedAppIds',
    'APP_NOT_ALLOWED',
  );
  checkAppRule(
    facts.app,
    'composeHash',
    'compose-hash',
    policy.allowedComposeHashes,
    'policy.allowedComposeHashes',
    'COMPOSE_HASH_NOT_ALLOWED',
  );
}

function checkAppRule(
  app: AppIdentity | undefined,
  field: 'appId' | 'composeHash',
  eventName: string,
  allowed: readonly string[],
  option: string,
  code: 'APP_NOT_ALLOWED' | 'COMPOSE_HASH_NOT_ALLOWED',
): void {
  if (allowed.length === 0) return;
  const value = app?.[field];
  if (value === undefined) {
    throw new RaTlsError(
      'APP_IDENTITY_UNVERIFIED',
      `${option} is set, but the server's attestation has no verified ${eventName} runtime event (${app === undefined ? 'no runtime events' : `no ${eventName} event`}). Remove ${option} to rely on MRTD alone, or connect to a dstack server that records ${eventName}.`,
      { details: { option } },
    );
  }
  if (!allowed.includes(value)) {
    throw new RaTlsError(
      code,
      `${eventName} ${value} is not in ${option}; add it there if this application is yours.`,
      {
        details: { [field]: value },
      },
    );
  }
}

function hexList(value: unknown, option: string, byteLength: number): readonly string[] {
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value)) {
    throw badConfig(option, `must be an array of ${byteLength}-byte hex strings`);
  }
  const out = new Set<string>();
  value.forEach((item: unknown, i) => {
    const hex = typeof item === 'string' ? normalizeHex(item) : undefined;
    if (hex === undefined || hex.length !== byteLength * 2) {
      throw badConfig(
        `${option}[${i}]`,
        `must be ${byteLength} bytes of hex (${byteLength * 2} hex digits, 0x optional), got ${describeValue(item)}`,
      );
    }
    out.add(hex);
  });
  return Object.freeze([...out]);
}

function statusList(value: unknown): readonly TcbStatus[] {
  const option = 'policy.acceptableTcbStatuses';
  if (value === undefined) return DEFAULT_ACCEPTABLE_TCB_STATUSES;
  if (!Array.isArray(value) || value.length === 0) {
    throw badConfig(
      option,
      `must be a non-empty array of TCB statuses (${TCB_STATUSES.join(', ')})`,
    );
  }
  const out = new Set<TcbStatus>();
  value.forEach((item: unknown, i) => {
    const status = typeof item === 'string' ? item.trim() : item;
    if (!TCB_STATUSES.includes(status as TcbStatus)) {
      throw badConfig(
        `${option}[${i}]`,
        `${describeValue(item)} is not a TCB status (expected one of ${TCB_STATUSES.join(', ')})`,
      );
    }
    out.add(status as TcbStatus);
  });
  return Object.freeze([...out]);
}

function describeValue(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 120 ? `${value.slice(0, 120)}…` : value);
  return typeof value;
}

function badConfig(option: string, reason: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', `${option} ${reason}.`, { details: { option } });
}
