/**
 * The WASM engine wrapper's handling of the engine's verdict object, on the real
 * verdict of the v4 fixture bent into the shapes the engine may return (a TD 1.5
 * report, an SGX report, a missing field), and its reading of the user's V8 flag.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { js_verify } from '@phala/dcap-qvl-web';
import { isRaTlsError } from '../src/errors.js';
import { normalizeCollateral } from '../src/verification/collateral.js';
import {
  initWasmEngine,
  normalizeWasmVerdict,
  tieringSetByUser,
} from '../src/verification/engines/wasm-engine.js';
import { fixture, V4_NOW } from './support/dcap-fixtures.js';

type Raw = Record<string, unknown> & { report: Record<string, unknown> };

/** The WASM engine's own verdict object for the real v4 fixture (a fresh copy each call). */
async function realVerdict(): Promise<Raw> {
  await initWasmEngine();
  const { quote, collateral } = fixture('intel-tdx-v4');
  const raw = js_verify(
    quote,
    normalizeCollateral(collateral),
    BigInt(Math.floor(V4_NOW.getTime() / 1000)),
  );
  return structuredClone(raw) as Raw;
}

function refusedAs(code: string, pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    assert.deepEqual(error.details, { engine: 'wasm' });
    return true;
  };
}

describe('normalizeWasmVerdict', () => {
  it('maps the real TD 1.0 verdict field by field, in lower-case hex, with no TD 1.5 fields', async () => {
    const raw = await realVerdict();
    const td = raw.report['TD10'] as Record<string, string>;
    const verdict = normalizeWasmVerdict(raw);
    assert.equal(verdict.engine, 'wasm');
    assert.equal(verdict.status, 'UpToDate');
    assert.deepEqual(verdict.advisoryIds, []);
    assert.equal(
      verdict.report.mrtd,
      '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
    );
    const pairs: [keyof typeof verdict.report, string][] = [
      ['teeTcbSvn', 'tee_tcb_svn'],
      ['mrSeam', 'mr_seam'],
      ['mrSignerSeam', 'mr_signer_seam'],
      ['seamAttributes', 'seam_attributes'],
      ['tdAttributes', 'td_attributes'],
      ['xfam', 'xfam'],
      ['mrtd', 'mr_td'],
      ['mrConfigId', 'mr_config_id'],
      ['mrOwner', 'mr_owner'],
      ['mrOwnerConfig', 'mr_owner_config'],
      ['rtmr0', 'rt_mr0'],
      ['rtmr1', 'rt_mr1'],
      ['rtmr2', 'rt_mr2'],
      ['rtmr3', 'rt_mr3'],
      ['reportData', 'report_data'],
    ];
    for (const [field, key] of pairs) assert.equal(verdict.report[field], td[key]?.toLowerCase());
    assert.deepEqual(Object.keys(verdict.report).sort(), pairs.map(([field]) => field).sort());
  });

  it('lower-cases upper-case hex and keeps advisory ids as strings', async () => {
    const raw = await realVerdict();
    const td = raw.report['TD10'] as Record<string, string>;
    td['mr_td'] = td['mr_td']!.toUpperCase();
    raw['advisory_ids'] = ['INTEL-SA-00837', 615];
    raw['status'] = 'OutOfDate';
    const verdict = normalizeWasmVerdict(raw);
    assert.equal(verdict.report.mrtd, td['mr_td']!.toLowerCase());
    assert.deepEqual(verdict.advisoryIds, ['INTEL-SA-00837', '615']);
    assert.equal(verdict.status, 'OutOfDate');
  });

  it('an unknown status becomes Unknown and a non-list of advisories none', async () => {
    const raw = await realVerdict();
    raw['status'] = 'Shiny';
    raw['advisory_ids'] = 'INTEL-SA-00837';
    const verdict = normalizeWasmVerdict(raw);
    assert.equal(verdict.status, 'Unknown');
    assert.deepEqual(verdict.advisoryIds, []);
  });

  it('reads a TD 1.5 report from its base and adds tee_tcb_svn2 and mr_service_td', async () => {
    const raw = await realVerdict();
    const base = raw.report['TD10'] as Record<string, string>;
    raw.report = {
      TD15: { base, tee_tcb_svn2: 'AB'.repeat(16), mr_service_td: 'CD'.repeat(48) },
    };
    const verdict = normalizeWasmVerdict(raw);
    assert.equal(verdict.report.mrtd, base['mr_td']!.toLowerCase());
    assert.equal(verdict.report.teeTcbSvn2, 'ab'.repeat(16));
    assert.equal(verdict.report.mrServiceTd, 'cd'.repeat(48));
  });

  it('refuses an SGX enclave report as NOT_TDX', async () => {
    const raw = await realVerdict();
    raw.report = { SgxEnclave: raw.report['TD10'] };
    assert.throws(
      () => normalizeWasmVerdict(raw),
      (error: unknown) => {
        assert.ok(isRaTlsError(error));
        assert.equal(error.code, 'NOT_TDX');
        assert.deepEqual(error.details, { engine: 'wasm' });
        return true;
      },
    );
  });

  it('refuses every other shape as ENGINE_UNAVAILABLE, naming what is missing', async () => {
    const raw = await realVerdict();
    for (const bad of [undefined, null, 'verdict', {}, { report: null }, { report: 'TD10' }]) {
      assert.throws(
        () => normalizeWasmVerdict(bad),
        refusedAs('ENGINE_UNAVAILABLE', /unexpected result \(no report\).*0\.3\.3/),
      );
    }
    assert.throws(
      () => normalizeWasmVerdict({ ...raw, report: { TD20: {} } }),
      refusedAs('ENGINE_UNAVAILABLE', /\(a report that is neither TD10 nor TD15\)/),
    );
    assert.throws(
      () => normalizeWasmVerdict({ ...raw, report: { TD15: { base: null } } }),
      refusedAs('ENGINE_UNAVAILABLE', /neither TD10 nor TD15/),
    );
    const td = { ...(raw.report['TD10'] as Record<string, unknown>) };
    td['rt_mr2'] = 7;
    assert.throws(
      () => normalizeWasmVerdict({ ...raw, report: { TD10: td } }),
      refusedAs('ENGINE_UNAVAILABLE', /\(no rt_mr2\)/),
    );
    const base = raw.report['TD10'];
    assert.throws(
      () => normalizeWasmVerdict({ ...raw, report: { TD15: { base, tee_tcb_svn2: '00' } } }),
      refusedAs('ENGINE_UNAVAILABLE', /\(no mr_service_td\)/),
    );
  });
});

describe('tieringSetByUser', () => {
  it('sees the flag in either spelling and sign, on the command line or in NODE_OPTIONS', () => {
    for (const flag of [
      '--wasm-dynamic-tiering',
      '--no-wasm-dynamic-tiering',
      '--wasm_dynamic_tiering',
      '--no-wasm_dynamic-tiering',
    ]) {
      assert.equal(tieringSetByUser(['--import', 'tsx', flag], undefined), true, flag);
      assert.equal(tieringSetByUser([], `--max-old-space-size=512 ${flag}`), true, flag);
    }
  });

  it('is false without the flag, whatever else is set', () => {
    assert.equal(tieringSetByUser([], undefined), false);
    assert.equal(tieringSetByUser(['--import', 'tsx', '--enable-source-maps'], ''), false);
    assert.equal(tieringSetByUser(['--wasm-tiering'], '--wasm-dynamic'), false);
    assert.equal(tieringSetByUser(['--wasm.dynamic.tiering'], undefined), false);
  });
});
