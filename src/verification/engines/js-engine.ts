/**
 * The pure-JS dcap-qvl (`@phala/dcap-qvl` 0.3.9). Accepts a custom root CA;
 * checks the QE identity; decodes v5 quotes; throws on Revoked, "No matching
 * TCB level found" and debug TDs; matches CRL serials but checks neither CRL
 * signatures nor dates (docs/protocol.md §3) — see crl.ts for that gap.
 */
import {
  QuoteVerifier,
  type Collateral as QvlCollateral,
  type VerifiedReport,
} from '@phala/dcap-qvl';
import { toHex } from '../../util/bytes.js';
import type { NormalizedCollateral } from '../collateral.js';
import { installParseCache, type ParseCacheState } from './dcap-qvl-parse-cache.js';
import {
  type DcapEngine,
  type EngineVerdict,
  engineFailure,
  notTdx,
  type TdReportFields,
  toTcbStatus,
} from './engine.js';

/** The JS engine behind the {@link DcapEngine} interface. */
export class JsEngine implements DcapEngine {
  readonly name = 'js' as const;
  /** Whether the library's parse results are kept across calls in this thread (dcap-qvl-parse-cache.ts). */
  readonly details: { readonly parseCache: ParseCacheState };
  readonly #verifier: QuoteVerifier;

  /** `rootCaDer` replaces Intel's SGX Root CA: only for test roots of trust (docs/protocol.md §8). */
  constructor(rootCaDer?: Uint8Array) {
    this.details = { parseCache: installParseCache(QuoteVerifier) };
    this.#verifier =
      rootCaDer === undefined
        ? QuoteVerifier.newProd()
        : QuoteVerifier.newWithRootCa(Buffer.from(rootCaDer));
  }

  async verify(
    quote: Uint8Array,
    collateral: NormalizedCollateral,
    nowSeconds: number,
  ): Promise<EngineVerdict> {
    let verified: VerifiedReport;
    try {
      verified = this.#verifier.verify(
        Buffer.from(quote),
        collateral as QvlCollateral,
        Math.floor(nowSeconds),
      );
    } catch (cause) {
      throw engineFailure('js', cause);
    }
    return normalize(verified);
  }
}

function normalize(verified: VerifiedReport): EngineVerdict {
  const report = verified.report;
  const td15 = report.asTd15();
  const td10 = td15?.base ?? report.asTd10();
  if (td10 === null) throw notTdx('js');
  const fields: TdReportFields = {
    teeTcbSvn: toHex(td10.teeTcbSvn),
    mrSeam: toHex(td10.mrSeam),
    mrSignerSeam: toHex(td10.mrSignerSeam),
    seamAttributes: toHex(td10.seamAttributes),
    tdAttributes: toHex(td10.tdAttributes),
    xfam: toHex(td10.xfam),
    mrtd: toHex(td10.mrTd),
    mrConfigId: toHex(td10.mrConfigId),
    mrOwner: toHex(td10.mrOwner),
    mrOwnerConfig: toHex(td10.mrOwnerConfig),
    rtmr0: toHex(td10.rtMr0),
    rtmr1: toHex(td10.rtMr1),
    rtmr2: toHex(td10.rtMr2),
    rtmr3: toHex(td10.rtMr3),
    reportData: toHex(td10.reportData),
    ...(td15 === null
      ? {}
      : { teeTcbSvn2: toHex(td15.teeTcbSvn2), mrServiceTd: toHex(td15.mrServiceTd) }),
  };
  return {
    engine: 'js',
    status: toTcbStatus(verified.status),
    advisoryIds: [...verified.advisory_ids],
    report: fields,
  };
}
