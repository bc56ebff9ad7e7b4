/**
 * DCAP collateral (docs/protocol.md §3): its type, in the engines' own shape; its
 * normalised (hex) form; and its validity window. Where it comes from lives in
 * pccs-client.ts, how long it is kept in collateral-cache.ts, which platform
 * it is for in pck-info.ts.
 */
import { type ErrorCode, RaTlsError } from '../errors.js';
import { fromHex, normalizeHex, toHex } from '../util/bytes.js';
import { parseCrl } from './crl.js';

/** Binary collateral fields: lowercase/uppercase hex (as in PCCS answers and fixtures), bytes, or a byte array. */
export type CollateralBytes = string | Uint8Array | readonly number[];

/**
 * DCAP collateral (`QuoteCollateralV3`) in the shape both engines take, so
 * fixtures, `@phala/dcap-qvl`'s `getCollateral` (once its
 * `pck_certificate_chain` is removed) and the test authority plug in as they are.
 */
export interface Collateral {
  /** PEM: the CA that issued the PCK CRL, then the root CA. */
  readonly pck_crl_issuer_chain: string;
  /** DER of the root CA CRL. */
  readonly root_ca_crl: CollateralBytes;
  /** DER of the PCK CRL. */
  readonly pck_crl: CollateralBytes;
  /** PEM: the TCB signing certificate, then the root CA. */
  readonly tcb_info_issuer_chain: string;
  /** The exact signed TCB info JSON text. */
  readonly tcb_info: string;
  /** Raw r‖s ECDSA signature over `tcb_info`. */
  readonly tcb_info_signature: CollateralBytes;
  /** PEM: the QE identity signing certificate, then the root CA. */
  readonly qe_identity_issuer_chain: string;
  /** The exact signed QE identity JSON text. */
  readonly qe_identity: string;
  /** Raw r‖s ECDSA signature over `qe_identity`. */
  readonly qe_identity_signature: CollateralBytes;
}

/** Collateral with every binary field as lowercase hex: the form the WASM engine requires. */
export interface NormalizedCollateral {
  readonly pck_crl_issuer_chain: string;
  readonly root_ca_crl: string;
  readonly pck_crl: string;
  readonly tcb_info_issuer_chain: string;
  readonly tcb_info: string;
  readonly tcb_info_signature: string;
  readonly qe_identity_issuer_chain: string;
  readonly qe_identity: string;
  readonly qe_identity_signature: string;
}

/** When a collateral set is usable: [notBefore, nextUpdate) in ms since epoch. */
export interface CollateralWindow {
  /** Latest issueDate / thisUpdate of TCB info, QE identity and both CRLs. */
  readonly notBefore: number;
  /** Earliest nextUpdate of TCB info, QE identity and both CRLs. */
  readonly nextUpdate: number;
  /**
   * The lower of the TCB info's and QE identity's `tcbEvaluationDataNumber`
   * (Intel raises it with every TCB recovery), when both carry one: a
   * rolled-back collateral set shows a smaller number.
   */
  readonly tcbEvaluationDataNumber?: number;
}

const STRING_FIELDS = [
  'pck_crl_issuer_chain',
  'tcb_info_issuer_chain',
  'tcb_info',
  'qe_identity_issuer_chain',
  'qe_identity',
] as const;
const BYTE_FIELDS = [
  'root_ca_crl',
  'pck_crl',
  'tcb_info_signature',
  'qe_identity_signature',
] as const;

/**
 * Validates `collateral` and returns a frozen copy with binary fields as hex.
 * `code` is the error code for malformed input (BAD_CONFIG for collateral the
 * user passed, COLLATERAL_UNAVAILABLE for a PCCS answer).
 */
export function normalizeCollateral(
  collateral: Collateral,
  code: ErrorCode = 'BAD_CONFIG',
): NormalizedCollateral {
  const fail = (field: string, what: string): never => {
    throw new RaTlsError(code, `Collateral field ${field} ${what}`, { details: { field } });
  };
  if (typeof collateral !== 'object' || collateral === null) fail('(all)', 'is missing');
  const out: Record<string, string> = {};
  for (const field of STRING_FIELDS) {
    const value: unknown = collateral[field];
    if (typeof value !== 'string' || value.length === 0) fail(field, 'must be a non-empty string');
    out[field] = value as string;
  }
  for (const field of BYTE_FIELDS) {
    const hex = bytesToHex(collateral[field] as unknown);
    if (hex === undefined || hex.length === 0) {
      fail(field, 'must be non-empty hex, a Uint8Array or an array of bytes');
    }
    out[field] = hex as string;
  }
  return Object.freeze(out as unknown as NormalizedCollateral);
}

function bytesToHex(value: unknown): string | undefined {
  if (typeof value === 'string') return normalizeHex(value);
  if (value instanceof Uint8Array) return toHex(value);
  if (Array.isArray(value) && value.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
    return toHex(Uint8Array.from(value as number[]));
  }
  return undefined;
}

/**
 * The validity window of a collateral set. Throws `code` (default
 * COLLATERAL_UNAVAILABLE) when its JSON or CRLs cannot be read.
 */
export function collateralWindow(
  collateral: NormalizedCollateral,
  code: ErrorCode = 'COLLATERAL_UNAVAILABLE',
): CollateralWindow {
  const starts: number[] = [];
  const ends: number[] = [];
  const evaluationNumbers: (number | undefined)[] = [];
  for (const [field, label] of [
    ['tcb_info', 'TCB info'],
    ['qe_identity', 'QE identity'],
  ] as const) {
    const dates = readIssueDates(collateral[field]);
    if (dates === undefined) {
      throw new RaTlsError(
        code,
        `The collateral ${label} is not JSON with issueDate and nextUpdate; fetch fresh collateral`,
        { details: { field } },
      );
    }
    starts.push(dates.issueDate);
    ends.push(dates.nextUpdate);
    evaluationNumbers.push(dates.tcbEvaluationDataNumber);
  }
  for (const [field, label] of [
    ['root_ca_crl', 'root CA CRL'],
    ['pck_crl', 'PCK CRL'],
  ] as const) {
    const crl = parseCrl(fromHex(collateral[field]), label);
    starts.push(crl.thisUpdate.getTime());
    if (crl.nextUpdate !== undefined) ends.push(crl.nextUpdate.getTime());
  }
  const window = { notBefore: Math.max(...starts), nextUpdate: Math.min(...ends) };
  if (evaluationNumbers.some((n) => n === undefined)) return window;
  return { ...window, tcbEvaluationDataNumber: Math.min(...(evaluationNumbers as number[])) };
}

function readIssueDates(
  json: string,
):
  | { issueDate: number; nextUpdate: number; tcbEvaluationDataNumber: number | undefined }
  | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (parsed === null) return undefined;
  // Any other JSON value destructures: a string, number or array has none of these fields.
  const { issueDate, nextUpdate, tcbEvaluationDataNumber } = parsed as Record<string, unknown>;
  if (typeof issueDate !== 'string' || typeof nextUpdate !== 'string') return undefined;
  const dates = {
    issueDate: Date.parse(issueDate),
    nextUpdate: Date.parse(nextUpdate),
    tcbEvaluationDataNumber: Number.isSafeInteger(tcbEvaluationDataNumber)
      ? (tcbEvaluationDataNumber as number)
      : undefined,
  };
  return Number.isNaN(dates.issueDate) || Number.isNaN(dates.nextUpdate) ? undefined : dates;
}
