import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { normalizeCollateral } from '../src/verification/collateral.js';
import { engineFailure } from '../src/verification/engines/engine.js';
import { JsEngine } from '../src/verification/engines/js-engine.js';
import { initWasmEngine, WasmEngine } from '../src/verification/engines/wasm-engine.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);
const V4_NOW_SECONDS = 1751328000;

function fixture(name: string) {
  return {
    quote: new Uint8Array(readFileSync(new URL(`${name}/quote.bin`, FIXTURES))),
    collateral: normalizeCollateral(
      JSON.parse(readFileSync(new URL(`${name}/collateral.json`, FIXTURES), 'utf8')),
    ),
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

describe('DCAP engine wrappers', () => {
  it('measures engine init, first and steady verify time on the v4 fixture', async (t) => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const initStart = performance.now();
    await initWasmEngine();
    const initMs = performance.now() - initStart;

    for (const engine of [new WasmEngine(), new JsEngine()]) {
      const times: number[] = [];
      for (let i = 0; i < 20; i++) {
        const start = performance.now();
        const verdict = await engine.verify(quote, collateral, V4_NOW_SECONDS);
        times.push(performance.now() - start);
        assert.equal(verdict.status, 'UpToDate');
      }
      t.diagnostic(
        `${engine.name}: first ${times[0]!.toFixed(1)} ms, steady median ${median(times.slice(1)).toFixed(1)} ms`,
      );
    }
    t.diagnostic(`wasm init (read + initSync) ${initMs.toFixed(1)} ms`);
  });

  it('both engines return the same normalised verdict for the v4 fixture', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');

    const wasm = await new WasmEngine().verify(quote, collateral, V4_NOW_SECONDS);
    const js = await new JsEngine().verify(quote, collateral, V4_NOW_SECONDS);

    assert.equal(wasm.engine, 'wasm');
    assert.equal(js.engine, 'js');
    assert.deepEqual({ ...wasm, engine: 'js' }, js);
    assert.equal(js.status, 'UpToDate');
    assert.equal(js.report.tdAttributes, '0000001000000000');
    assert.equal(js.report.reportData, Buffer.from(quote.subarray(568, 632)).toString('hex'));
    assert.equal(js.report.teeTcbSvn2, undefined);
  });

  it("wraps the WASM engine's thrown strings in RaTlsErrors that name the engine", async () => {
    const { collateral } = fixture('intel-tdx-v4');

    await assert.rejects(
      new WasmEngine().verify(new Uint8Array(10), collateral, V4_NOW_SECONDS),
      (error: unknown) => {
        assert.ok(isRaTlsError(error, 'MALFORMED_QUOTE'));
        assert.match(error.message, /dcap-qvl-web \(WASM\).*"Failed to decode quote"/);
        assert.equal(error.details['engine'], 'wasm');
        return true;
      },
    );
  });

  it('each engine calls an SGX enclave quote NOT_TDX, naming itself', async () => {
    const { quote, collateral } = fixture('intel-sgx-v3');
    for (const engine of [new WasmEngine(), new JsEngine()]) {
      await assert.rejects(engine.verify(quote, collateral, V4_NOW_SECONDS), (error: unknown) => {
        assert.ok(isRaTlsError(error, 'NOT_TDX'), String(error));
        assert.deepEqual(error.details, { engine: engine.name });
        return true;
      });
    }
  });

  it("wraps the JS engine's Errors the same way", async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');

    await assert.rejects(
      new JsEngine().verify(quote, collateral, Date.parse('2025-08-01T00:00:00Z') / 1000),
      (error: unknown) => {
        assert.ok(isRaTlsError(error, 'COLLATERAL_EXPIRED'));
        assert.match(error.message, /@phala\/dcap-qvl \(JS\).*TCBInfo expired/);
        return true;
      },
    );
  });

  it('each engine refuses a genuine SGX enclave quote as NOT_TDX, naming itself', async () => {
    // The verifier's header check stops SGX quotes first; this is the engines' own refusal.
    const { quote, collateral } = fixture('intel-sgx-v3');
    const inWindow = Date.parse('2025-07-01T00:00:00Z') / 1000;

    for (const [engine, label] of [
      [new WasmEngine(), '@phala/dcap-qvl-web (WASM)'],
      [new JsEngine(), '@phala/dcap-qvl (JS)'],
    ] as const) {
      await assert.rejects(engine.verify(quote, collateral, inWindow), (error: unknown) => {
        assert.ok(isRaTlsError(error, 'NOT_TDX'));
        assert.equal(
          error.message,
          `DCAP engine ${label} verified an SGX enclave quote, not an Intel TDX trust domain; pg-ra-tls accepts only TDX quotes`,
        );
        assert.deepEqual(error.details, { engine: engine.name });
        return true;
      });
    }
  });

  it("passes on the JS engine's advisory ids and TCB status as the collateral states them", async () => {
    const authority = await createTestAuthority({ seed: 'dcap-engines-advisories' });
    const collateral = authority.collateral({
      tcbStatus: 'OutOfDate',
      advisoryIds: ['INTEL-SA-00615', 'INTEL-SA-00837'],
    });

    const verdict = await new JsEngine(authority.rootCaDer).verify(
      authority.issueQuote(),
      collateral,
      Date.now() / 1000,
    );

    assert.equal(verdict.status, 'OutOfDate');
    assert.deepEqual(verdict.advisoryIds, ['INTEL-SA-00615', 'INTEL-SA-00837']);
  });

  it('maps engine texts to codes that say what failed', () => {
    const cases: [unknown, string][] = [
      ['Failed to decode quote', 'MALFORMED_QUOTE'],
      [new Error('No matching TCB level found'), 'BAD_TCB_STATUS'],
      [new Error('TCB status is invalid: Revoked'), 'BAD_TCB_STATUS'],
      [new Error('Certificate is revoked'), 'PCK_REVOKED'],
      ['TCBInfo expired', 'COLLATERAL_EXPIRED'],
      [new Error('Debug mode is enabled'), 'DEBUG_MODE'],
      ['Isv enclave report signature is invalid', 'QUOTE_INVALID'],
      [{ unexpected: true }, 'QUOTE_INVALID'],
    ];
    for (const [cause, expected] of cases) {
      assert.equal(engineFailure('js', cause).code, expected, String(cause));
    }
  });

  it('says in every message which engine refused, what it said, and what that means', () => {
    const advice: [string, RegExp][] = [
      [
        'Failed to decode quote',
        /\(the quote bytes are truncated or not a DCAP quote this engine can decode\)$/,
      ],
      [
        'No matching TCB level found',
        /\(the platform's TCB is not acceptable under the collateral's TCB info; update the platform firmware\/microcode\)$/,
      ],
      ['Certificate is revoked', /\(a certificate of the platform is revoked\)$/],
      [
        'TCBInfo expired',
        /\(the collateral or a certificate is outside its validity window; fetch fresh collateral or check the clock\)$/,
      ],
      ['Debug mode is enabled', /\(the quote comes from a debug enclave or TD\)$/],
      [
        'Isv enclave report signature is invalid',
        /\(the quote or its collateral failed DCAP verification\)$/,
      ],
    ];
    for (const [text, ending] of advice) {
      const error = engineFailure('wasm', text);
      assert.match(
        error.message,
        new RegExp(`^DCAP engine @phala/dcap-qvl-web \\(WASM\\) rejected the quote: "${text}"`),
      );
      assert.match(error.message, ending);
      assert.deepEqual(error.details, { engine: 'wasm', engineMessage: text });
      assert.equal(error.cause, text);
    }
    const typed = new RaTlsError('NOT_TDX', 'already typed');
    assert.equal(engineFailure('js', typed), typed, 'a typed error passes as it is');
  });
});
