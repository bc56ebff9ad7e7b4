/**
 * The default verifier: Intel DCAP verification of a TDX quote with one or both
 * npm engines (PROTOCOL.md §3). Neither engine alone checks everything, so by
 * default both must accept and agree. This module never applies policy
 * (statuses, debug, MRTD): pg-ra-tls does that around every verifier.
 */
import { X509Certificate } from 'node:crypto';
import { constants as qvlConstants } from '@phala/dcap-qvl';
import { RaTlsError } from '../errors.js';
import { fromHex } from '../util/bytes.js';
import {
  type Collateral,
  CollateralCache,
  type CollateralWindow,
  collateralWindow,
  INTEL_PCS_URL,
  type NormalizedCollateral,
  normalizeCollateral,
  PccsClient,
  readPckInfo,
} from './collateral.js';
import { checkCrlsStrictly, pemCertificates } from './crl.js';
import type { DcapEngine, EngineVerdict, TdReportFields } from './engines/engine.js';
import { ThreadedEngine, warmUpEngines } from './engines/engine-worker.js';
import type { RaTlsVerifier, VerificationResult, VerifyOptions } from './verifier.js';

/** Which engines decide: both (default), or one alone. */
export type EngineChoice = 'both' | 'wasm' | 'js';

/** Receives loud warnings (e.g. a test root of trust is in use). */
export type WarningLogger = (message: string) => void;

/** Options of {@link verifyWithCollateral}. */
export interface OfflineVerifyOptions {
  /** Default `'both'`. */
  readonly engine?: EngineChoice;
  /**
   * DER of a test root CA replacing Intel's SGX Root CA (PROTOCOL.md §8). Only
   * with engine `'js'`; anything else is BAD_CONFIG. Logs a loud warning.
   */
  readonly rootCa?: Uint8Array;
  /** Where warnings go. Default `console.warn`. */
  readonly logger?: WarningLogger;
}

/** Options of {@link DcapVerifier}. */
export interface DcapVerifierOptions extends OfflineVerifyOptions {
  /** PCCS v4 base URL. Default Intel PCS `https://api.trustedservices.intel.com`. */
  readonly pccsUrl?: string;
  /** Fixed collateral for offline use: no PCCS request is ever made. */
  readonly collateral?: Collateral;
  /** Timeout of every PCCS request, ms or `"10s"`. Default 10 s. */
  readonly requestTimeout?: number | string;
  /** fetch implementation for PCCS requests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

const TDX_TEE_TYPE = 0x81;

/**
 * Verifies TDX quotes against Intel's DCAP collateral, fetched from a PCCS and
 * cached per FMSPC until its earliest nextUpdate (or fixed, for offline use).
 *
 * With engine `'both'` a quote passes only when the WASM and JS engines both
 * accept it and agree on status, advisories and every TD report field; a
 * rejection by either is that engine's error, a disagreement is
 * ENGINE_DISAGREEMENT. For v5 quotes (which the WASM engine cannot decode) and
 * for engine `'js'`, the JS verdict stands only after pg-ra-tls's own strict
 * CRL check (crl.ts), and the result names verifier `dcap:js`.
 */
export class DcapVerifier implements RaTlsVerifier {
  /** `dcap:<engine>`. */
  readonly name: string;
  readonly #setup: EngineSetup;
  readonly #fixed: { collateral: NormalizedCollateral; window: CollateralWindow } | undefined;
  readonly #cache: CollateralCache | undefined;

  constructor(options: DcapVerifierOptions = {}) {
    this.#setup = engineSetup(options);
    this.name = `dcap:${this.#setup.choice}`;
    if (options.collateral !== undefined) {
      const collateral = normalizeCollateral(options.collateral, 'BAD_CONFIG');
      this.#fixed = { collateral, window: collateralWindow(collateral, 'BAD_CONFIG') };
    } else {
      const client = new PccsClient({
        url: options.pccsUrl ?? INTEL_PCS_URL,
        ...(options.requestTimeout === undefined ? {} : { requestTimeout: options.requestTimeout }),
        ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
      });
      this.#cache = new CollateralCache((pck) => client.fetchCollateral(pck));
    }
  }

  /** Verifies `quote` at `options.now` (default: the current time). */
  async verify(quote: Uint8Array, options: VerifyOptions = {}): Promise<VerificationResult> {
    const now = options.now ?? new Date();
    if (options.signal?.aborted) throw aborted(options.signal);
    checkTdxHeader(quote);
    let source = this.#fixed;
    if (source === undefined) {
      const pck = readPckInfo(quote);
      source = await abortable(this.#cache!.get(pck, now.getTime()), options.signal);
    }
    return verifyNormalized(quote, source.collateral, source.window, now, this.#setup);
  }

  /**
   * Starts this verifier's engines in the background (their threads, module
   * loading, one offline verification of a bundled quote) so that the first
   * real verification runs at steady-state cost. Never rejects: an engine that
   * cannot start fails the verifications that need it with ENGINE_UNAVAILABLE.
   */
  warmUp(): Promise<void> {
    return warmUpEngines(
      [this.#setup.wasm, this.#setup.js].flatMap((engine) =>
        engine === undefined ? [] : [engine.name],
      ),
    );
  }

  /**
   * Forgets cached collateral. The verifier holds no timers or sockets; the
   * engine threads it uses are shared by the process and never keep it alive.
   */
  close(): void {
    this.#cache?.clear();
  }
}

/**
 * Verifies `quote` against the given collateral at `now`, fully offline: the
 * same checks as {@link DcapVerifier} without any PCCS.
 */
export async function verifyWithCollateral(
  quote: Uint8Array,
  collateral: Collateral,
  now: Date,
  options: OfflineVerifyOptions = {},
): Promise<VerificationResult> {
  const setup = engineSetup(options);
  checkTdxHeader(quote);
  const normalized = normalizeCollateral(collateral, 'BAD_CONFIG');
  return verifyNormalized(
    quote,
    normalized,
    collateralWindow(normalized, 'BAD_CONFIG'),
    now,
    setup,
  );
}

interface EngineSetup {
  readonly choice: EngineChoice;
  readonly wasm: DcapEngine | undefined;
  readonly js: DcapEngine | undefined;
  /** DER of the root every chain must end in (Intel's unless a test root was passed). */
  readonly trustedRootCa: Uint8Array;
}

function engineSetup(options: OfflineVerifyOptions): EngineSetup {
  const choice = options.engine ?? 'both';
  if (choice !== 'both' && choice !== 'wasm' && choice !== 'js') {
    throw new RaTlsError(
      'BAD_CONFIG',
      `engine must be 'both', 'wasm' or 'js', got ${JSON.stringify(choice)}`,
      {
        details: { option: 'engine' },
      },
    );
  }
  let trustedRootCa = new Uint8Array(qvlConstants.TRUSTED_ROOT_CA_DER);
  if (options.rootCa !== undefined) {
    // PROTOCOL.md §8: a test root is accepted only when passed explicitly, and only by the JS engine.
    if (choice !== 'js') {
      throw new RaTlsError(
        'BAD_CONFIG',
        `rootCa (a test root of trust) works only with engine 'js': the WASM engine has Intel's root compiled in. Got engine '${choice}'`,
        { details: { option: 'rootCa' } },
      );
    }
    let fingerprint: string;
    try {
      fingerprint = new X509Certificate(options.rootCa).fingerprint256;
    } catch (cause) {
      throw new RaTlsError('BAD_CONFIG', 'rootCa must be the DER of an X.509 CA certificate', {
        cause,
        details: { option: 'rootCa' },
      });
    }
    trustedRootCa = new Uint8Array(options.rootCa);
    (options.logger ?? console.warn)(
      `pg-ra-tls WARNING: DCAP verification uses a custom root CA (SHA-256 ${fingerprint}) instead of Intel's SGX Root CA. ` +
        'Quotes are NOT checked against Intel: use this only with a test root of trust, never in production.',
    );
  }
  return {
    choice,
    // Each engine runs in its process-wide worker thread (engines/engine-worker.ts).
    wasm: choice === 'js' ? undefined : new ThreadedEngine('wasm'),
    js: choice === 'wasm' ? undefined : new ThreadedEngine('js', options.rootCa),
    trustedRootCa,
  };
}

// PROTOCOL.md §2: the header says what the quote is before any engine runs.
function checkTdxHeader(quote: Uint8Array): 4 | 5 {
  if (!(quote instanceof Uint8Array) || quote.byteLength < 48) {
    throw new RaTlsError(
      'MALFORMED_QUOTE',
      `The quote is ${quote?.byteLength ?? 0} bytes, shorter than a DCAP quote header (48)`,
    );
  }
  const view = new DataView(quote.buffer, quote.byteOffset, quote.byteLength);
  const version = view.getUint16(0, true);
  const teeType = view.getUint32(4, true);
  if (teeType !== TDX_TEE_TYPE) {
    throw new RaTlsError(
      'NOT_TDX',
      `The quote's TEE type is 0x${teeType.toString(16)}${teeType === 0 ? ' (an SGX enclave)' : ''}, not 0x81 (an Intel TDX trust domain)`,
      { details: { teeType, version } },
    );
  }
  if (version !== 4 && version !== 5) {
    throw new RaTlsError(
      'MALFORMED_QUOTE',
      `TDX quotes have version 4 or 5, this one says ${version}`,
      {
        details: { version },
      },
    );
  }
  return version;
}

async function verifyNormalized(
  quote: Uint8Array,
  collateral: NormalizedCollateral,
  window: CollateralWindow,
  now: Date,
  setup: EngineSetup,
): Promise<VerificationResult> {
  const version = checkTdxHeader(quote);
  const at = now.getTime();
  if (at < window.notBefore || at >= window.nextUpdate) {
    // Checked here too because the WASM engine ignores TCB info issueDate and the QE identity.
    throw new RaTlsError(
      'COLLATERAL_EXPIRED',
      `The collateral is valid from ${iso(window.notBefore)} until ${iso(window.nextUpdate)}, not at ${now.toISOString()}; fetch fresh collateral (or check the clock)`,
      {
        details: {
          notBefore: iso(window.notBefore),
          nextUpdate: iso(window.nextUpdate),
          now: now.toISOString(),
        },
      },
    );
  }
  const seconds = Math.floor(at / 1000);
  let verdict: EngineVerdict;
  let verifier = `dcap:${setup.choice}`;
  let validUntil = window.nextUpdate;

  if (setup.wasm !== undefined && setup.js !== undefined) {
    const [wasm, js] = await Promise.allSettled([
      setup.wasm.verify(quote, collateral, seconds),
      setup.js.verify(quote, collateral, seconds),
    ]);
    if (
      wasm.status === 'rejected' &&
      isRaTlsCode(wasm.reason, 'MALFORMED_QUOTE') &&
      version === 5
    ) {
      // The WASM engine (0.3.3) cannot decode v5 quotes: the JS answer stands after the strict CRL check.
      if (js.status === 'rejected') throw js.reason;
      validUntil = Math.min(validUntil, strictCrlCheck(quote, collateral, now, setup));
      verdict = js.value;
      verifier = 'dcap:js';
    } else if (wasm.status === 'rejected' || js.status === 'rejected') {
      throw oneRejected(wasm, js);
    } else {
      assertAgreement(wasm.value, js.value);
      verdict = js.value;
    }
  } else if (setup.js !== undefined) {
    verdict = await setup.js.verify(quote, collateral, seconds);
    validUntil = Math.min(validUntil, strictCrlCheck(quote, collateral, now, setup));
  } else {
    verdict = await setup.wasm!.verify(quote, collateral, seconds).catch((error: unknown) => {
      if (version === 5 && isRaTlsCode(error, 'MALFORMED_QUOTE')) {
        throw withNote(error, "the WASM engine cannot decode v5 quotes: use engine 'both' or 'js'");
      }
      throw error;
    });
  }
  return toResult(verdict, verifier, validUntil);
}

function strictCrlCheck(
  quote: Uint8Array,
  collateral: NormalizedCollateral,
  now: Date,
  setup: EngineSetup,
): number {
  return checkCrlsStrictly({
    rootCaCrl: fromHex(collateral.root_ca_crl),
    pckCrl: fromHex(collateral.pck_crl),
    pckCrlIssuerChain: pemCertificates(collateral.pck_crl_issuer_chain),
    pckChain: readPckInfo(quote).chain,
    trustedRootCa: setup.trustedRootCa,
    now,
  }).validUntil;
}

// When one engine accepts and the other rejects, the rejection stands: its
// code says what failed, and the message records that the engines disagreed.
function oneRejected(
  wasm: PromiseSettledResult<EngineVerdict>,
  js: PromiseSettledResult<EngineVerdict>,
): unknown {
  if (js.status === 'rejected') {
    return wasm.status === 'fulfilled'
      ? withNote(js.reason, BOTH_MUST_ACCEPT('WASM'), { otherEngine: 'accepted' })
      : js.reason;
  }
  return wasm.status === 'rejected'
    ? withNote(wasm.reason, BOTH_MUST_ACCEPT('JS'), { otherEngine: 'accepted' })
    : undefined;
}

const BOTH_MUST_ACCEPT = (other: string): string =>
  `the ${other} engine accepted it, but both engines must accept`;

function withNote(error: unknown, note: string, details: Record<string, unknown> = {}): unknown {
  if (!(error instanceof RaTlsError)) return error;
  return new RaTlsError(error.code, `${error.message}; ${note}`, {
    cause: error,
    details: { ...error.details, ...details },
  });
}

function assertAgreement(wasm: EngineVerdict, js: EngineVerdict): void {
  const differences: string[] = [];
  if (wasm.status !== js.status) differences.push('status');
  if ([...wasm.advisoryIds].sort().join() !== [...js.advisoryIds].sort().join()) {
    differences.push('advisoryIds');
  }
  const keys = new Set([...Object.keys(wasm.report), ...Object.keys(js.report)]);
  for (const key of keys) {
    const field = key as keyof TdReportFields;
    if (wasm.report[field] !== js.report[field]) differences.push(`report.${key}`);
  }
  if (differences.length > 0) {
    throw new RaTlsError(
      'ENGINE_DISAGREEMENT',
      `The WASM and JS DCAP engines both accepted the quote but disagree on ${differences.join(', ')} (WASM status ${wasm.status}, JS status ${js.status}); the quote is rejected`,
      { details: { differences, wasmStatus: wasm.status, jsStatus: js.status } },
    );
  }
}

function toResult(
  verdict: EngineVerdict,
  verifier: string,
  validUntil: number,
): VerificationResult {
  const report = verdict.report;
  const firstAttributeByte = Number.parseInt(report.tdAttributes.slice(0, 2), 16);
  return Object.freeze({
    mrtd: report.mrtd,
    rtmr0: report.rtmr0,
    rtmr1: report.rtmr1,
    rtmr2: report.rtmr2,
    rtmr3: report.rtmr3,
    tcbStatus: verdict.status,
    advisoryIds: Object.freeze([...verdict.advisoryIds]),
    // PROTOCOL.md §2: debug TD is td_attributes[0] & 0x01.
    isDebug: (firstAttributeByte & 0x01) === 1,
    reportData: fromHex(report.reportData),
    verifier,
    validUntil,
  });
}

function isRaTlsCode(error: unknown, code: RaTlsError['code']): boolean {
  return error instanceof RaTlsError && error.code === code;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(aborted(signal));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function aborted(signal: AbortSignal): RaTlsError {
  return new RaTlsError(
    'VERIFY_TIMEOUT',
    'Attestation verification was aborted (verifyTimeout or caller signal)',
    {
      cause: signal.reason,
    },
  );
}
