/**
 * Edges of the DCAP verifier (docs/protocol.md §3) that the fixture tests in
 * dcap-verifier.test.ts do not reach: option bounds and their refusals, input
 * that is not bytes, engine verdicts that disagree or mark a debug TD, and the
 * v5 path where the JS engine's verdict stands alone. Postgres-free.
 */
import assert from 'node:assert/strict';
import { after, describe, it, mock } from 'node:test';
import { RaTlsError } from '../src/errors.js';
import { parseQuote } from '../src/evidence/quote.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { startPccsServer } from '../src/testing/pccs-server.js';
import { toHex } from '../src/util/bytes.js';
import {
  DcapVerifier,
  type DcapVerifierOptions,
  verifyWithCollateral,
} from '../src/verification/dcap-verifier.js';
import type { EngineVerdict } from '../src/verification/engines/engine.js';
import { fixture, V4_NOW } from './support/dcap-fixtures.js';
import { alterEngineVerdicts, settleEngineRefusals } from './support/engine-verdicts.js';
import { refusal, rejection } from './support/refusals.js';

// Inside each fixture's collateral window (fixtures/README.md).
const V5_NOW = new Date('2026-03-01T00:00:00Z');
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

const servers: { close(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(servers.map((server) => server.close()));
});

describe('DcapVerifier options: what is refused, and with which words', () => {
  it('names itself and the option it guesses in an unknown-option refusal', () => {
    const error = refusal(
      () => new DcapVerifier({ collateralMaxAges: '1h' } as unknown as DcapVerifierOptions),
    );
    assert.equal(error.code, 'BAD_CONFIG');
    assert.equal(
      error.message,
      'DcapVerifier has no option "collateralMaxAges": did you mean "collateralMaxAge"?',
    );
  });

  it('takes a collateralMaxAge of exactly 1 minute and exactly 24 hours, nothing outside', () => {
    for (const collateralMaxAge of [MINUTE, DAY]) {
      new DcapVerifier({ pccsUrl: 'http://127.0.0.1:9', collateralMaxAge }).close();
    }
    for (const collateralMaxAge of [MINUTE - 1, DAY + 1]) {
      const error = refusal(
        () => new DcapVerifier({ pccsUrl: 'http://127.0.0.1:9', collateralMaxAge }),
      );
      assert.equal(error.code, 'BAD_CONFIG');
      assert.equal(
        error.message,
        `collateralMaxAge must be between 1 minute and 24 hours (so revocations are seen within a day), got ${collateralMaxAge}`,
      );
      assert.deepEqual(error.details, { option: 'collateralMaxAge' });
    }
  });

  it('reads a test root only from DER bytes or a primitive PEM string', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-edges-root' });
    // A String object holds the right PEM text, but it is not the documented string type.
    for (const rootCa of [new String(authority.rootCaPem), [authority.rootCaPem], 42]) {
      const error = refusal(
        () =>
          new DcapVerifier({
            engine: 'js',
            rootCa: rootCa as unknown as string,
            logger: () => assert.fail('no warning for a refused root'),
          }),
      );
      assert.equal(error.code, 'BAD_CONFIG');
      assert.match(error.message, /^rootCa must be DER bytes or the text of exactly one PEM/);
      assert.deepEqual(error.details, { option: 'rootCa' });
    }
  });

  it('refuses collateral without a tcbEvaluationDataNumber once a minimum is set, saying it is missing', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const tcbInfo = JSON.parse(collateral.tcb_info) as Record<string, unknown>;
    delete tcbInfo['tcbEvaluationDataNumber'];
    const unnumbered = { ...collateral, tcb_info: JSON.stringify(tcbInfo) };

    const error = await rejection(
      verifyWithCollateral(quote, unnumbered, V4_NOW, { minTcbEvaluationDataNumber: 17 }),
    );

    assert.equal(error.code, 'COLLATERAL_EXPIRED');
    assert.match(
      error.message,
      /^The collateral's tcbEvaluationDataNumber is missing, below the required minimum 17: /,
    );
    assert.deepEqual(error.details, {
      tcbEvaluationDataNumber: null,
      minTcbEvaluationDataNumber: 17,
    });
  });

  it('refuses a missing quote as MALFORMED_QUOTE of 0 bytes, not a TypeError', async () => {
    const { collateral } = fixture('intel-tdx-v4');
    const verifier = new DcapVerifier({ collateral });
    try {
      for (const quote of [undefined, null]) {
        const error = await rejection(
          verifier.verify(quote as unknown as Uint8Array, { now: V4_NOW }),
        );
        assert.equal(error.code, 'MALFORMED_QUOTE');
        assert.match(error.message, /^The quote is 0 bytes, shorter than a DCAP quote header/);
      }
    } finally {
      verifier.close();
    }
  });

  it('refuses collateral whose PCK CRL issuer chain is not PEM (engine js: the strict CRL check reads it)', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const chain = collateral.pck_crl_issuer_chain.replace(
      /(-----BEGIN CERTIFICATE-----\s*)..../,
      '$1!!!!',
    );

    const error = await rejection(
      verifyWithCollateral(quote, { ...collateral, pck_crl_issuer_chain: chain }, V4_NOW, {
        engine: 'js',
      }),
    );

    assert.equal(error.code, 'CRL_INVALID');
    assert.equal(
      error.message,
      'The collateral pck_crl_issuer_chain is not valid PEM (PEM CERTIFICATE block 0 is not valid base64); fetch fresh collateral',
    );
    assert.ok(error.cause instanceof Error);
  });
});

describe('what both engines report is compared and read field by field', () => {
  // Both real engines agree on every real quote we have: their real verdicts are
  // altered where the verifier receives them, modelling an engine bug.
  const { quote, collateral } = fixture('intel-tdx-v4');
  const both = () => verifyWithCollateral(quote, collateral, V4_NOW, { engine: 'both' });

  it('a status disagreement names the field and both statuses in message and details', async (t) => {
    alterEngineVerdicts(t, (engine, verdict) =>
      engine === 'wasm' ? { ...verdict, status: 'OutOfDate' } : verdict,
    );

    const error = await rejection(both());

    assert.equal(error.code, 'ENGINE_DISAGREEMENT');
    assert.equal(
      error.message,
      'The WASM and JS DCAP engines both accepted the quote but disagree on status (WASM status OutOfDate, JS status UpToDate); the quote is rejected',
    );
    assert.deepEqual(error.details, {
      differences: ['status'],
      wasmStatus: 'OutOfDate',
      jsStatus: 'UpToDate',
    });
  });

  it('advisory ids are compared as sets: another order agrees, another id does not', async (t) => {
    // Neither list is in sorted order, and the orders differ.
    const jsIds = ['INTEL-SA-00837', 'INTEL-SA-00615', 'INTEL-SA-00828'];
    let wasmIds = ['INTEL-SA-00828', 'INTEL-SA-00837', 'INTEL-SA-00615'];
    alterEngineVerdicts(t, (engine, verdict) => ({
      ...verdict,
      advisoryIds: engine === 'wasm' ? wasmIds : jsIds,
    }));

    const result = await both();
    assert.deepEqual(result.advisoryIds, jsIds, "the JS engine's list, as it gave it");

    wasmIds = ['INTEL-SA-00828', 'INTEL-SA-00837', 'INTEL-SA-00999'];
    const error = await rejection(both());
    assert.equal(error.code, 'ENGINE_DISAGREEMENT');
    assert.deepEqual(error.details?.['differences'], ['advisoryIds']);
  });

  it('isDebug is bit 0 of the first TD attribute byte (docs/protocol.md §2), whatever the other bytes say', async (t) => {
    // The engines refuse real debug quotes themselves; this is the defence behind them.
    let tdAttributes = '0100000000000000';
    alterEngineVerdicts(t, (_engine, verdict) => ({
      ...verdict,
      report: { ...verdict.report, tdAttributes },
    }));

    assert.equal((await both()).isDebug, true);
    tdAttributes = 'fe00000000000001';
    assert.equal((await both()).isDebug, false);
  });
});

describe('a v5 quote, which the WASM engine cannot decode: the JS verdict stands after the strict CRL check', () => {
  const { quote, collateral } = fixture('intel-tdx-v5');

  // The real v5 fixture is at no TCB level of its TCB info, so the JS engine
  // refuses it; an up-to-date v5 platform is modelled by turning that real
  // refusal into the acceptance the engine would return. Both engines still run.
  function jsAccepts(): EngineVerdict {
    const { version, attestationKeyType, teeType, bodyType, isDebug, reportData, ...fields } =
      parseQuote(quote);
    return {
      engine: 'js',
      status: 'UpToDate',
      advisoryIds: [],
      report: { ...fields, reportData: toHex(reportData) },
    };
  }
  it('WASM says malformed, JS accepts: verifier dcap:js, valid no longer than the collateral may be used', async (t) => {
    settleEngineRefusals(t, (engine, error) => {
      if (engine === 'js') return jsAccepts();
      assert.ok(error instanceof RaTlsError && error.code === 'MALFORMED_QUOTE', String(error));
      throw error;
    });
    const pccs = await startPccsServer({ collateral });
    servers.push(pccs);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url, collateralMaxAge: '1m' });
    try {
      const result = await verifier.verify(quote, { now: V5_NOW });

      assert.equal(result.verifier, 'dcap:js');
      assert.equal(result.tcbStatus, 'UpToDate');
      // The fetched collateral is used for a minute: the CRLs, good for weeks, do not extend that.
      assert.equal(result.validUntil, V5_NOW.getTime() + MINUTE);
    } finally {
      verifier.close();
    }
  });

  it('a WASM refusal that is not "malformed" stands even for v5 (a WASM build that decodes v5)', async (t) => {
    const refusals = [
      new RaTlsError('QUOTE_INVALID', 'the engine refused the quote signature'),
      Object.assign(new Error('engine thread crashed'), { code: 'MALFORMED_QUOTE' }),
    ];
    for (const wasmRefusal of refusals) {
      settleEngineRefusals(t, (engine) => {
        if (engine === 'js') return jsAccepts();
        throw wasmRefusal;
      });

      await assert.rejects(
        verifyWithCollateral(quote, collateral, V5_NOW, { engine: 'both' }),
        (error: unknown) => {
          if (wasmRefusal instanceof RaTlsError) {
            assert.ok(error instanceof RaTlsError && error.code === 'QUOTE_INVALID');
            assert.match(
              error.message,
              /; the JS engine accepted it, but both engines must accept$/,
            );
            assert.equal(error.cause, wasmRefusal);
          } else {
            assert.equal(error, wasmRefusal);
          }
          return true;
        },
      );
      mock.restoreAll();
    }
  });
});
