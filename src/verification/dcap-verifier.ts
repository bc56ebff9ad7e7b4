/**
 * The default verifier: Intel DCAP verification of a TDX quote with one or both
 * npm engines (docs/protocol.md §3). Neither engine alone checks everything, so by
 * default both must accept and agree. This module never applies policy
 * (statuses, debug, MRTD): pg-ra-tls does that around every verifier.
 */
import { X509Certificate } from 'node:crypto';
import { describeCause, RaTlsError } from '../errors.js';
import { fromHex } from '../util/bytes.js';
import { abortError, raceSignal } from '../util/deadline.js';
import { parseDuration } from '../util/duration.js';
import { assertKnownOptions } from '../util/known-options.js';
import { pemBlocks } from '../util/pem.js';
import {
  type Collateral,
  type CollateralWindow,
  collateralWindow,
  type NormalizedCollateral,
  normalizeCollateral,
} from './collateral.js';
import { CollateralCache, DEFAULT_COLLATERAL_MAX_AGE_MS } from './collateral-cache.js';
import { checkPckChain, type PreparedCrls, prepareCrls } from './crl.js';
import { dcapQvl } from './dcap-qvl.js';
import type { DcapEngine, EngineVerdict, TdReportFields } from './engines/engine.js';
import { ThreadedEngine, warmUpEngines } from './engines/engine-worker.js';
import { PccsClient } from './pccs-client.js';
import { type PckInfo, readPckInfo } from './pck-info.js';
import type { RaTlsVerifier, VerificationResult, VerifyOptions } from './verifier.js';

/**
 * Which engines decide: both (default), or the pure-JS one alone. The WASM
 * engine never stands alone: it ignores the QE identity (docs/protocol.md §3), so
 * on its own it would accept a quote whose quoting enclave Intel never vouched for.
 */
export type EngineChoice = 'both' | 'js';

/** Receives loud warnings (e.g. a test root of trust is in use). */
export type WarningLogger = (message: string) => void;

/** Options of {@link verifyWithCollateral}. */
export interface OfflineVerifyOptions {
  /** Default `'both'`. */
  readonly engine?: EngineChoice;
  /**
   * A test root CA replacing Intel's SGX Root CA (docs/protocol.md §8), as DER or as
   * the text of one PEM certificate. Only with engine `'js'`; anything else is
   * BAD_CONFIG. Logs a loud warning.
   */
  readonly rootCa?: Uint8Array | string;
  /** Where warnings go. Default `console.warn`. */
  readonly logger?: WarningLogger;
  /**
   * Refuse collateral whose TCB info or QE identity has a
   * `tcbEvaluationDataNumber` below this (COLLATERAL_EXPIRED): a PCCS cannot
   * roll you back to TCB info from before a TCB recovery you know about.
   * Collateral without the number is refused too when this is set.
   */
  readonly minTcbEvaluationDataNumber?: number;
}

const DCAP_VERIFIER_OPTION_KEYS = [
  'engine',
  'rootCa',
  'logger',
  'minTcbEvaluationDataNumber',
  'pccsUrl',
  'collateral',
  'requestTimeout',
  'fetch',
  'collateralMaxAge',
] as const satisfies readonly (keyof DcapVerifierOptions)[];

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
  /**
   * Longest time fetched collateral is used before it is fetched again, ms or
   * `"12h"`; also caps how long a verdict based on it is reused. Between 1
   * minute and the default 24 h, so that a revocation is seen within a day
   * (collateral's own nextUpdate is ~30 days away).
   */
  readonly collateralMaxAge?: number | string;
}

const TDX_TEE_TYPE = 0x81;

/**
 * Verifies TDX quotes against Intel's DCAP collateral, fetched from a PCCS and
 * cached per FMSPC until its earliest nextUpdate or collateralMaxAge (or fixed, for offline use).
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
  readonly #fixed:
    | { collateral: NormalizedCollateral; window: CollateralWindow; usableUntil: number }
    | undefined;
  readonly #cache: CollateralCache | undefined;

  constructor(options: DcapVerifierOptions = {}) {
    assertKnownOptions(options, DCAP_VERIFIER_OPTION_KEYS, 'DcapVerifier');
    this.#setup = engineSetup(options);
    this.name = `dcap:${this.#setup.choice}`;
    if (options.collateral !== undefined) {
      const collateral = normalizeCollateral(options.collateral, 'BAD_CONFIG');
      const window = collateralWindow(collateral, 'BAD_CONFIG');
      // Fixed collateral cannot be refreshed: it is good until its own nextUpdate.
      this.#fixed = { collateral, window, usableUntil: window.nextUpdate };
    } else {
      // PccsClient defaults each option left undefined (Intel PCS, 10 s, the global fetch).
      const client = new PccsClient({
        url: options.pccsUrl,
        requestTimeout: options.requestTimeout,
        fetch: options.fetch,
      });
      this.#cache = new CollateralCache((pck, signal) => client.fetchCollateral(pck, signal), {
        maxAgeMs: collateralMaxAge(options.collateralMaxAge),
      });
    }
  }

  /**
   * Verifies `quote` at `options.now` (default: the current time). When
   * `options.signal` aborts, rejects at once with its reason if that is a
   * RaTlsError (e.g. POOL_ENDED from a pool's end()), VERIFY_TIMEOUT otherwise.
   */
  verify(quote: Uint8Array, options: VerifyOptions = {}): Promise<VerificationResult> {
    return raceSignal(this.#verify(quote, options), options.signal, verificationAborted);
  }

  async #verify(quote: Uint8Array, options: VerifyOptions): Promise<VerificationResult> {
    const now = options.now ?? new Date();
    checkTdxHeader(quote);
    let source = this.#fixed;
    let pck: PckInfo | undefined;
    if (source === undefined) {
      pck = readPckInfo(quote);
      try {
        source = await this.#cache!.get(pck, now.getTime(), options.signal);
      } catch (error) {
        if (options.signal?.aborted) throw abortError(options.signal.reason, verificationAborted);
        throw error;
      }
    }
    return verifyNormalized(quote, source, now, this.#setup, pck);
  }

  /**
   * Starts this verifier's engines in the background (their threads, module
   * loading, offline verifications of a bundled quote) so that the first
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
   * Forgets cached collateral and aborts collateral fetches in flight (their
   * verifications fail with COLLATERAL_UNAVAILABLE), so no socket outlives it.
   * The verifier holds no timers; the engine threads it uses are shared by the
   * process and never keep it alive.
   */
  close(): void {
    this.#cache?.close();
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
  const window = collateralWindow(normalized, 'BAD_CONFIG');
  return verifyNormalized(
    quote,
    { collateral: normalized, window, usableUntil: window.nextUpdate },
    now,
    setup,
  );
}

interface EngineSetup {
  readonly choice: EngineChoice;
  readonly wasm: DcapEngine | undefined;
  /** Always present: the JS engine is the one that checks the QE identity. */
  readonly js: DcapEngine;
  /**
   * DER of the test root every chain must end in, when one was passed;
   * undefined: Intel's SGX Root CA (read from dcap-qvl at first use).
   */
  readonly trustedRootCa: Uint8Array | undefined;
  /**
   * The strict CRL check's collateral half, done once per collateral set (a
   * fetch or the fixed set): its result, or the error it failed with.
   */
  readonly preparedCrls: WeakMap<NormalizedCollateral, PreparedCrls | RaTlsError>;
  /** True when `trustedRootCa` is a test root passed by the caller, not Intel's. */
  readonly testRoot: boolean;
  readonly minTcbEvaluationDataNumber: number | undefined;
}

function engineSetup(options: OfflineVerifyOptions): EngineSetup {
  const choice = options.engine ?? 'both';
  if ((choice as string) === 'wasm') {
    throw new RaTlsError(
      'BAD_CONFIG',
      "engine 'wasm' cannot be used alone: the WASM build does not check the QE identity, so it would accept a forged quoting enclave. Use engine 'both' (the default) or 'js'",
      { details: { option: 'engine' } },
    );
  }
  if (choice !== 'both' && choice !== 'js') {
    throw new RaTlsError(
      'BAD_CONFIG',
      `engine must be 'both' or 'js', got ${JSON.stringify(choice)}`,
      { details: { option: 'engine' } },
    );
  }
  let trustedRootCa: Uint8Array | undefined;
  let rootCaDer: Uint8Array | undefined;
  if (options.rootCa !== undefined) {
    // docs/protocol.md §8: a test root is accepted only when passed explicitly, and only by the JS engine.
    if (choice !== 'js') {
      throw new RaTlsError(
        'BAD_CONFIG',
        `rootCa (a test root of trust) works only with engine 'js': the WASM engine has Intel's root compiled in. Got engine '${choice}'`,
        { details: { option: 'rootCa' } },
      );
    }
    rootCaDer = rootCaBytes(options.rootCa);
    let fingerprint: string;
    try {
      fingerprint = new X509Certificate(rootCaDer).fingerprint256;
    } catch (cause) {
      throw new RaTlsError(
        'BAD_CONFIG',
        'rootCa must be an X.509 CA certificate (DER bytes or the text of one PEM certificate)',
        { cause, details: { option: 'rootCa' } },
      );
    }
    trustedRootCa = new Uint8Array(rootCaDer);
    (options.logger ?? console.warn)(
      `pg-ra-tls WARNING: DCAP verification uses a custom root CA (SHA-256 ${fingerprint}) instead of Intel's SGX Root CA. ` +
        'Quotes are NOT checked against Intel: use this only with a test root of trust, never in production.',
    );
  }
  return {
    choice,
    // Each engine runs in its process-wide worker thread (engines/engine-worker.ts).
    wasm: choice === 'both' ? new ThreadedEngine('wasm') : undefined,
    js: new ThreadedEngine('js', rootCaDer),
    trustedRootCa,
    preparedCrls: new WeakMap(),
    testRoot: options.rootCa !== undefined,
    minTcbEvaluationDataNumber: minEvaluationNumber(options.minTcbEvaluationDataNumber),
  };
}

/** DER of `rootCa`: bytes as given, or the one certificate of a PEM text (BAD_CONFIG otherwise). */
function rootCaBytes(rootCa: Uint8Array | string): Uint8Array {
  if (rootCa instanceof Uint8Array) return rootCa;
  let blocks: Uint8Array[] = [];
  try {
    blocks = typeof rootCa === 'string' ? pemBlocks(rootCa) : [];
  } catch {
    // Not valid base64: reported below like any other non-certificate.
  }
  if (blocks.length !== 1) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'rootCa must be DER bytes or the text of exactly one PEM certificate (-----BEGIN CERTIFICATE-----)',
      { details: { option: 'rootCa' } },
    );
  }
  return blocks[0]!;
}

function minEvaluationNumber(value: number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `minTcbEvaluationDataNumber must be a non-negative integer (Intel's TCB evaluation data number, e.g. 17), got ${JSON.stringify(value)}`,
      { details: { option: 'minTcbEvaluationDataNumber' } },
    );
  }
  return value;
}

const MIN_COLLATERAL_MAX_AGE_MS = 60_000;

function collateralMaxAge(value: number | string | undefined): number {
  if (value === undefined) return DEFAULT_COLLATERAL_MAX_AGE_MS;
  const ms = parseDuration(value, 'collateralMaxAge');
  // Longer would only delay seeing revocations; shorter than a minute would refetch per verification.
  if (ms < MIN_COLLATERAL_MAX_AGE_MS || ms > DEFAULT_COLLATERAL_MAX_AGE_MS) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `collateralMaxAge must be between 1 minute and 24 hours (so revocations are seen within a day), got ${JSON.stringify(value)}`,
      { details: { option: 'collateralMaxAge' } },
    );
  }
  return ms;
}

// A PCCS (or a stale mirror) could serve TCB info from before a TCB recovery: refuse it.
function checkEvaluationNumber(window: CollateralWindow, minimum: number | undefined): void {
  if (minimum === undefined) return;
  const found = window.tcbEvaluationDataNumber;
  if (found === undefined || found < minimum) {
    throw new RaTlsError(
      'COLLATERAL_EXPIRED',
      `The collateral's tcbEvaluationDataNumber is ${found ?? 'missing'}, below the required minimum ${minimum}: it predates a TCB recovery (rolled back or stale); fetch current collateral`,
      { details: { tcbEvaluationDataNumber: found ?? null, minTcbEvaluationDataNumber: minimum } },
    );
  }
}

// docs/protocol.md §2: the header says what the quote is before any engine runs.
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
  source: {
    readonly collateral: NormalizedCollateral;
    readonly window: CollateralWindow;
    readonly usableUntil: number;
  },
  now: Date,
  setup: EngineSetup,
  pck?: PckInfo,
): Promise<VerificationResult> {
  const { collateral, window } = source;
  const version = checkTdxHeader(quote);
  const at = now.getTime();
  checkEvaluationNumber(window, setup.minTcbEvaluationDataNumber);
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
  let validUntil = Math.min(window.nextUpdate, source.usableUntil);

  if (setup.wasm !== undefined) {
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
      validUntil = Math.min(validUntil, strictCrlCheck(quote, collateral, now, setup, pck));
      verdict = js.value;
      verifier = 'dcap:js';
    } else if (wasm.status === 'rejected' || js.status === 'rejected') {
      throw oneRejected(wasm, js);
    } else {
      assertAgreement(wasm.value, js.value);
      verdict = js.value;
    }
  } else {
    verdict = await setup.js.verify(quote, collateral, seconds);
    validUntil = Math.min(validUntil, strictCrlCheck(quote, collateral, now, setup, pck));
  }
  return toResult(verdict, verifier, validUntil, setup.testRoot);
}

function strictCrlCheck(
  quote: Uint8Array,
  collateral: NormalizedCollateral,
  now: Date,
  setup: EngineSetup,
  pck: PckInfo | undefined,
): number {
  let prepared = setup.preparedCrls.get(collateral);
  if (prepared === undefined) {
    try {
      prepared = prepareCrls({
        rootCaCrl: fromHex(collateral.root_ca_crl),
        pckCrl: fromHex(collateral.pck_crl),
        pckCrlIssuerChain: issuerChain(collateral.pck_crl_issuer_chain),
        trustedRootCa:
          setup.trustedRootCa ?? new Uint8Array(dcapQvl().constants.TRUSTED_ROOT_CA_DER),
      });
    } catch (error) {
      if (!(error instanceof RaTlsError)) throw error;
      // Deterministic for this collateral and root: every later quote fails the same way.
      prepared = error;
    }
    setup.preparedCrls.set(collateral, prepared);
  }
  if (prepared instanceof RaTlsError) throw prepared;
  return checkPckChain(prepared, (pck ?? readPckInfo(quote)).chain, now).validUntil;
}

function issuerChain(pem: string): Uint8Array[] {
  try {
    return pemBlocks(pem, 'CERTIFICATE');
  } catch (cause) {
    throw new RaTlsError(
      'CRL_INVALID',
      `The collateral pck_crl_issuer_chain is not valid PEM (${describeCause(cause)}); fetch fresh collateral`,
      { cause },
    );
  }
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
  testRoot: boolean,
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
    // docs/protocol.md §2: debug TD is td_attributes[0] & 0x01.
    isDebug: (firstAttributeByte & 0x01) === 1,
    reportData: fromHex(report.reportData),
    verifier,
    validUntil,
    ...(testRoot ? { testRoot: true } : {}),
  });
}

function isRaTlsCode(error: unknown, code: RaTlsError['code']): boolean {
  return error instanceof RaTlsError && error.code === code;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

// The caller stopped waiting; a RaTlsError reason (a pool's end(), a
// connection closing) is kept by the one abort mapping (util/deadline.ts).
function verificationAborted(reason: unknown): RaTlsError {
  return new RaTlsError(
    'VERIFY_TIMEOUT',
    'Attestation verification was aborted (verifyTimeout or caller signal)',
    { cause: reason },
  );
}
