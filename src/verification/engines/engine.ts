/**
 * What the two DCAP engines (docs/protocol.md §3) have in common once wrapped: one
 * normalised verdict shape and one mapping of their error texts to stable
 * {@link RaTlsError} codes.
 */
import { describeCause, type ErrorCode, RaTlsError } from '../../errors.js';
import type { ParsedQuote } from '../../evidence/types.js';
import type { NormalizedCollateral } from '../collateral.js';
import { TCB_STATUSES, type TcbStatus } from '../verifier.js';

/** The engines pg-ra-tls can run. */
export type EngineName = 'wasm' | 'js';

/**
 * TD report fields as the engine read them from the verified quote: the
 * parser's fields (lowercase hex), but report_data as hex too so the two
 * engines' reports compare as plain strings.
 */
export type TdReportFields = Omit<
  ParsedQuote,
  'version' | 'attestationKeyType' | 'teeType' | 'bodyType' | 'isDebug' | 'reportData'
> & { readonly reportData: string };

/** One engine's acceptance of a quote. */
export interface EngineVerdict {
  readonly engine: EngineName;
  readonly status: TcbStatus;
  readonly advisoryIds: readonly string[];
  readonly report: TdReportFields;
}

/** A DCAP engine: checks signatures and collateral, reports the TCB status. Never applies policy. */
export interface DcapEngine {
  readonly name: EngineName;
  /** Throws {@link RaTlsError} (see {@link engineFailure}) when the engine rejects the quote. */
  verify(
    quote: Uint8Array,
    collateral: NormalizedCollateral,
    nowSeconds: number,
  ): Promise<EngineVerdict>;
}

const ENGINE_LABEL: Record<EngineName, string> = {
  wasm: '@phala/dcap-qvl-web (WASM)',
  js: '@phala/dcap-qvl (JS)',
};

// Ordered: the first matching rule wins. Texts measured on both engines.
const FAILURE_RULES: readonly (readonly [RegExp, ErrorCode, string])[] = [
  [
    /decode (raw_)?quote|not enough data/i,
    'MALFORMED_QUOTE',
    'the quote bytes are truncated or not a DCAP quote this engine can decode',
  ],
  [
    /no matching tcb level|tcb status is invalid/i,
    'BAD_TCB_STATUS',
    "the platform's TCB is not acceptable under the collateral's TCB info; update the platform firmware/microcode",
  ],
  [/revoked/i, 'PCK_REVOKED', 'a certificate of the platform is revoked'],
  [
    /expired|not yet valid|in the future/i,
    'COLLATERAL_EXPIRED',
    'the collateral or a certificate is outside its validity window; fetch fresh collateral or check the clock',
  ],
  [/debug mode/i, 'DEBUG_MODE', 'the quote comes from a debug enclave or TD'],
];

/** Turns an engine's thrown value (a string from WASM, an Error from JS) into a typed error. */
export function engineFailure(engine: EngineName, cause: unknown): RaTlsError {
  if (cause instanceof RaTlsError) return cause;
  const text = describeCause(cause);
  const rule = FAILURE_RULES.find(([pattern]) => pattern.test(text));
  const [code, advice] = rule
    ? [rule[1], rule[2]]
    : (['QUOTE_INVALID', 'the quote or its collateral failed DCAP verification'] as const);
  return new RaTlsError(
    code,
    `DCAP engine ${ENGINE_LABEL[engine]} rejected the quote: "${text}" (${advice})`,
    {
      cause,
      details: { engine, engineMessage: text },
    },
  );
}

/** The engine's status string as a {@link TcbStatus}; anything unknown becomes `Unknown`. */
export function toTcbStatus(status: unknown): TcbStatus {
  return TCB_STATUSES.find((s) => s === status) ?? 'Unknown';
}

/** The error for an engine that verified an SGX enclave report instead of a TD report. */
export function notTdx(engine: EngineName): RaTlsError {
  return new RaTlsError(
    'NOT_TDX',
    `DCAP engine ${ENGINE_LABEL[engine]} verified an SGX enclave quote, not an Intel TDX trust domain; pg-ra-tls accepts only TDX quotes`,
    { details: { engine } },
  );
}
