/**
 * A verifier that checks nothing: for local development against a simulator
 * whose quotes no DCAP chain can vouch for. It only parses the quote.
 */
import { parseQuote } from '../evidence/quote.js';
import type { WarningLogger } from './dcap-verifier.js';
import type { RaTlsVerifier, VerificationResult } from './verifier.js';

/** Options of {@link NoopVerifier}. */
export interface NoopVerifierOptions {
  /** Where the construction warning goes. Default `console.warn`. */
  readonly logger?: WarningLogger;
}

/**
 * Returns the parsed quote's values WITHOUT checking any signature or
 * collateral, with tcbStatus `Unknown`. Marked `unverified`, so the policy layer
 * skips only the TCB-status rule and still applies the MRTD, app and debug
 * rules; key binding and RTMR3 replay are still checked by pg-ra-tls.
 * Warns loudly when constructed. Never use it in production.
 */
export class NoopVerifier implements RaTlsVerifier {
  readonly name = 'noop';
  readonly unverified = true;

  constructor(options: NoopVerifierOptions = {}) {
    (options.logger ?? console.warn)(
      'pg-ra-tls WARNING: NoopVerifier checks NO quote signature or collateral: any party can forge ' +
        'the attestation. Use it only for local development against a simulator, never in production.',
    );
  }

  /** Parses `quote` (MALFORMED_QUOTE / NOT_TDX on bad input) and reports its values unverified. */
  async verify(quote: Uint8Array): Promise<VerificationResult> {
    const parsed = parseQuote(quote);
    return Object.freeze({
      mrtd: parsed.mrtd,
      rtmr0: parsed.rtmr0,
      rtmr1: parsed.rtmr1,
      rtmr2: parsed.rtmr2,
      rtmr3: parsed.rtmr3,
      tcbStatus: 'Unknown',
      advisoryIds: Object.freeze([]),
      isDebug: parsed.isDebug,
      reportData: parsed.reportData,
      verifier: this.name,
    });
  }
}
