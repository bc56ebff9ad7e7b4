/**
 * The WASM build of Phala's Rust dcap-qvl (`@phala/dcap-qvl-web` 0.3.3).
 * Intel's root is compiled in (no test roots); CRLs are checked strictly; the
 * QE identity is not checked at all; v5 quotes cannot be decoded; statuses are
 * reported, never rejected (docs/protocol.md §3).
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { initSync, js_verify } from '@phala/dcap-qvl-web';
import { describeCause, RaTlsError } from '../../errors.js';
import type { NormalizedCollateral } from '../collateral.js';
import {
  type DcapEngine,
  type EngineVerdict,
  engineFailure,
  notTdx,
  type TdReportFields,
  toTcbStatus,
} from './engine.js';

let initialised: Promise<void> | undefined;

/**
 * Loads and instantiates the engine's WebAssembly once per process (lazily, on
 * first use). Exposed so callers can warm it up; throws ENGINE_UNAVAILABLE.
 */
export function initWasmEngine(): Promise<void> {
  initialised ??= (async () => {
    const entry = createRequire(import.meta.url).resolve('@phala/dcap-qvl-web');
    const bytes = await readFile(join(dirname(entry), 'dcap-qvl-web_bg.wasm'));
    initSync({ module: compileTieringUpEagerly(bytes) });
  })().catch((cause: unknown) => {
    initialised = undefined;
    throw new RaTlsError(
      'ENGINE_UNAVAILABLE',
      `The WASM DCAP engine (@phala/dcap-qvl-web) could not be loaded: ${describeCause(cause)}; reinstall dependencies or use engine 'js'`,
      { cause, details: { engine: 'wasm' } },
    );
  });
  return initialised;
}

/** The part of the WebAssembly global used here (the project's types have no lib.dom). */
declare const WebAssembly: { readonly Module: new (bytes: Uint8Array) => object };

/** A V8 flag this process was started with, which then stays as the user set it. */
const DYNAMIC_TIERING_FLAG = /wasm[-_]dynamic[-_]tiering/;

/**
 * Compiles the engine so that each of its functions is optimised (TurboFan)
 * in the background right after its first run, instead of V8's default
 * dynamic tiering, which waits for a function to have run ~1.8 MB of code:
 * measured, that took 30–45 verifications on a busy machine and more than 300
 * on a quiet one, at about twice the optimised cost (17 vs 8 ms); this way it
 * is at steady cost after ~6–10 calls, which the thread's warm-up makes
 * (engine-thread.ts), for ~0.35 s of one-time background compile CPU.
 *
 * V8 reads `--wasm-dynamic-tiering` when it creates a compiled module and keeps
 * it with that module, so the flag is turned off for this one synchronous
 * compile and back on right after: other WebAssembly of the process keeps
 * V8's defaults (a module another thread compiles in those few milliseconds
 * would also tier up eagerly: faster code for more background compile work,
 * never a different result). A process started with the flag set either way
 * is left alone.
 */
function compileTieringUpEagerly(bytes: Uint8Array): object {
  if (tieringSetByUser(process.execArgv, process.env['NODE_OPTIONS']))
    return new WebAssembly.Module(bytes);
  setFlagsFromString('--no-wasm-dynamic-tiering');
  try {
    return new WebAssembly.Module(bytes);
  } finally {
    setFlagsFromString('--wasm-dynamic-tiering');
  }
}

/**
 * Whether the process was started with `--(no-)wasm-dynamic-tiering`, on its
 * command line or in `NODE_OPTIONS` (exported for tests).
 * @internal
 */
export function tieringSetByUser(
  execArgv: readonly string[],
  nodeOptions: string | undefined,
): boolean {
  return [...execArgv, nodeOptions ?? ''].some((arg) => DYNAMIC_TIERING_FLAG.test(arg));
}

/** The WASM engine behind the {@link DcapEngine} interface. */
export class WasmEngine implements DcapEngine {
  readonly name = 'wasm' as const;

  async verify(
    quote: Uint8Array,
    collateral: NormalizedCollateral,
    nowSeconds: number,
  ): Promise<EngineVerdict> {
    await initWasmEngine();
    let raw: unknown;
    try {
      // Byte fields must be hex strings: the engine's deserializer rejects byte arrays.
      raw = js_verify(quote, collateral, BigInt(Math.floor(nowSeconds)));
    } catch (cause) {
      throw engineFailure('wasm', cause);
    }
    return normalizeWasmVerdict(raw);
  }
}

/**
 * The engine's verdict object as an {@link EngineVerdict}; any other shape is
 * ENGINE_UNAVAILABLE, an SGX report NOT_TDX (exported for tests: the engine's
 * own output cannot be bent into those shapes here).
 * @internal
 */
export function normalizeWasmVerdict(raw: unknown): EngineVerdict {
  const verdict = asRecord(raw);
  const report = asRecord(verdict?.['report']);
  if (verdict === undefined || report === undefined) throw unexpected('no report');
  if (report['SgxEnclave'] !== undefined) throw notTdx('wasm');
  let td10 = asRecord(report['TD10']);
  let td15: Record<string, unknown> | undefined;
  if (td10 === undefined) {
    td15 = asRecord(report['TD15']);
    td10 = asRecord(td15?.['base']);
  }
  if (td10 === undefined) throw unexpected('a report that is neither TD10 nor TD15');
  const advisoryIds = verdict['advisory_ids'];
  return {
    engine: 'wasm',
    status: toTcbStatus(verdict['status']),
    advisoryIds: Array.isArray(advisoryIds) ? advisoryIds.map(String) : [],
    report: tdFields(td10, td15),
  };
}

function tdFields(
  td: Record<string, unknown>,
  td15: Record<string, unknown> | undefined,
): TdReportFields {
  const hex = (source: Record<string, unknown>, key: string): string => {
    const value = source[key];
    if (typeof value !== 'string') throw unexpected(`no ${key}`);
    return value.toLowerCase();
  };
  return {
    teeTcbSvn: hex(td, 'tee_tcb_svn'),
    mrSeam: hex(td, 'mr_seam'),
    mrSignerSeam: hex(td, 'mr_signer_seam'),
    seamAttributes: hex(td, 'seam_attributes'),
    tdAttributes: hex(td, 'td_attributes'),
    xfam: hex(td, 'xfam'),
    mrtd: hex(td, 'mr_td'),
    mrConfigId: hex(td, 'mr_config_id'),
    mrOwner: hex(td, 'mr_owner'),
    mrOwnerConfig: hex(td, 'mr_owner_config'),
    rtmr0: hex(td, 'rt_mr0'),
    rtmr1: hex(td, 'rt_mr1'),
    rtmr2: hex(td, 'rt_mr2'),
    rtmr3: hex(td, 'rt_mr3'),
    reportData: hex(td, 'report_data'),
    ...(td15 === undefined
      ? {}
      : { teeTcbSvn2: hex(td15, 'tee_tcb_svn2'), mrServiceTd: hex(td15, 'mr_service_td') }),
  };
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null
    ? (value as Record<string, unknown>)
    : undefined;
}

function unexpected(what: string): RaTlsError {
  return new RaTlsError(
    'ENGINE_UNAVAILABLE',
    `The WASM DCAP engine returned an unexpected result (${what}); is @phala/dcap-qvl-web at the supported version 0.3.3?`,
    { details: { engine: 'wasm' } },
  );
}
