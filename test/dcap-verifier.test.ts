import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, it, type TestContext } from 'node:test';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { collateralWindow, normalizeCollateral } from '../src/verification/collateral.js';
import {
  DcapVerifier,
  type EngineChoice,
  verifyWithCollateral,
} from '../src/verification/dcap-verifier.js';
import { WasmEngine } from '../src/verification/engines/wasm-engine.js';
import { fixture, V4_NOW } from './support/dcap-fixtures.js';
import { alterEngineVerdicts } from './support/engine-verdicts.js';

// Inside each fixture's collateral window (fixtures/README.md).
const V4B_NOW = new Date('2025-09-15T00:00:00Z');
const V5_NOW = new Date('2026-03-01T00:00:00Z');
const ENGINES: readonly EngineChoice[] = ['both', 'js'];

function rejectsWith(code: string, pattern?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };
}

describe('DCAP verification of the real Intel fixtures', () => {
  for (const engine of ENGINES) {
    it(`intel-tdx-v4 is UpToDate with the listed measurements (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-tdx-v4');

      const result = await verifyWithCollateral(quote, collateral, V4_NOW, { engine });

      assert.equal(result.tcbStatus, 'UpToDate');
      assert.equal(result.isDebug, false);
      assert.equal(
        result.mrtd,
        '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
      );
      assert.equal(
        result.rtmr0,
        '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0',
      );
      assert.equal(result.rtmr3, '00'.repeat(48));
      assert.deepEqual(Buffer.from(result.reportData), Buffer.from(quote.subarray(568, 632)));
      assert.equal(result.verifier, `dcap:${engine}`);
      // The earliest nextUpdate is the PCK CRL's (fixtures/README.md window end).
      assert.equal(result.validUntil, Date.parse('2025-07-19T10:00:35Z'));
    });

    it(`intel-tdx-v4-b is UpToDate and not debug (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-tdx-v4-b');

      const result = await verifyWithCollateral(quote, collateral, V4B_NOW, { engine });

      assert.equal(result.tcbStatus, 'UpToDate');
      assert.equal(result.isDebug, false);
      assert.equal(result.validUntil, Date.parse('2025-10-02T07:03:51Z'));
    });

    it(`intel-sgx-v3 is rejected as not a TDX quote (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-sgx-v3');

      await assert.rejects(
        verifyWithCollateral(quote, collateral, V4_NOW, { engine }),
        rejectsWith('NOT_TDX', /SGX/),
      );
    });
  }

  it('intel-tdx-v5 with both engines: the JS verdict "No matching TCB level" is a BAD_TCB_STATUS', async () => {
    const { quote, collateral } = fixture('intel-tdx-v5');

    await assert.rejects(
      verifyWithCollateral(quote, collateral, V5_NOW, { engine: 'both' }),
      rejectsWith('BAD_TCB_STATUS', /No matching TCB level found/),
    );
  });

  it('intel-tdx-v5 with the JS engine alone is a BAD_TCB_STATUS naming the engine', async () => {
    const { quote, collateral } = fixture('intel-tdx-v5');

    await assert.rejects(
      verifyWithCollateral(quote, collateral, V5_NOW, { engine: 'js' }),
      rejectsWith('BAD_TCB_STATUS', /@phala\/dcap-qvl \(JS\)/),
    );
  });

  for (const engine of ENGINES) {
    it(`collateral past its nextUpdate is COLLATERAL_EXPIRED (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-tdx-v4');

      await assert.rejects(
        verifyWithCollateral(quote, collateral, new Date('2025-07-19T10:00:35Z'), { engine }),
        rejectsWith('COLLATERAL_EXPIRED', /2025-07-19T10:00:35/),
      );
    });

    it(`collateral not yet issued is COLLATERAL_EXPIRED (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-tdx-v4');

      await assert.rejects(
        verifyWithCollateral(quote, collateral, new Date('2025-06-01T00:00:00Z'), { engine }),
        rejectsWith('COLLATERAL_EXPIRED'),
      );
    });

    it(`the collateral window is closed at its start: accepted at exactly notBefore (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-tdx-v4');
      const { notBefore } = collateralWindow(normalizeCollateral(collateral));
      const result = await verifyWithCollateral(quote, collateral, new Date(notBefore), { engine });
      assert.equal(result.tcbStatus, 'UpToDate');
      await assert.rejects(
        verifyWithCollateral(quote, collateral, new Date(notBefore - 1000), { engine }),
        (error: unknown) => {
          rejectsWith('COLLATERAL_EXPIRED', /^The collateral is valid from /)(error);
          assert.deepEqual(Object.keys((error as RaTlsError).details ?? {}), [
            'notBefore',
            'nextUpdate',
            'now',
          ]);
          return true;
        },
      );
    });

    it(`a flipped MRTD byte breaks the quote signature (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-tdx-v4');
      const tampered = quote.slice();
      tampered[200]! ^= 0x01;

      await assert.rejects(
        verifyWithCollateral(tampered, collateral, V4_NOW, { engine }),
        rejectsWith('QUOTE_INVALID', /signature is invalid/i),
      );
    });

    it(`a truncated quote is MALFORMED_QUOTE, not a crash (engine ${engine})`, async () => {
      const { quote, collateral } = fixture('intel-tdx-v4');

      await assert.rejects(
        verifyWithCollateral(quote.subarray(0, 700), collateral, V4_NOW, { engine }),
        rejectsWith('MALFORMED_QUOTE'),
      );
    });
  }

  it('a tampered QE identity passes the WASM engine (it ignores QE identity) but fails JS, so both rejects', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const qeIdentity = collateral.qe_identity.replace('"isvprodid":2', '"isvprodid":3');
    assert.notEqual(qeIdentity, collateral.qe_identity);
    const tampered = normalizeCollateral({ ...collateral, qe_identity: qeIdentity });

    const wasm = await new WasmEngine().verify(quote, tampered, V4_NOW.getTime() / 1000);
    assert.equal(wasm.status, 'UpToDate');
    await assert.rejects(
      verifyWithCollateral(quote, tampered, V4_NOW, { engine: 'both' }),
      rejectsWith('QUOTE_INVALID', /qe_identity.*WASM engine accepted it/),
    );
  });

  it('a forged QE identity (another MRSIGNER, a bogus signature) is refused by every configuration', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const identity = JSON.parse(collateral.qe_identity) as { mrsigner: string };
    const forgedSigner = identity.mrsigner.replace(
      /^../,
      identity.mrsigner.startsWith('00') ? 'ff' : '00',
    );
    const forged = normalizeCollateral({
      ...collateral,
      qe_identity: collateral.qe_identity.replace(identity.mrsigner, forgedSigner),
      qe_identity_signature: 'ab'.repeat(64),
    });
    assert.notEqual(forged.qe_identity, collateral.qe_identity);

    // The WASM build alone would take it: that is why it may never decide alone.
    const wasm = await new WasmEngine().verify(quote, forged, V4_NOW.getTime() / 1000);
    assert.equal(wasm.status, 'UpToDate');
    for (const engine of ENGINES) {
      await assert.rejects(
        verifyWithCollateral(quote, forged, V4_NOW, { engine }),
        rejectsWith('QUOTE_INVALID'),
        `engine ${engine}`,
      );
    }
    await assert.rejects(
      verifyWithCollateral(quote, forged, V4_NOW, { engine: 'wasm' as EngineChoice }),
      rejectsWith('BAD_CONFIG', /engine 'wasm' cannot be used alone.*QE identity/),
    );
    assert.throws(
      () => new DcapVerifier({ engine: 'wasm' as EngineChoice, collateral }),
      rejectsWith('BAD_CONFIG', /engine 'wasm' cannot be used alone/),
    );
  });

  it('a PCK CRL with a broken signature passes the JS engine alone but not our strict CRL check', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const crl = collateral.pck_crl as string;
    const tampered = { ...collateral, pck_crl: `${crl.slice(0, -4)}0000` };

    await assert.rejects(
      verifyWithCollateral(quote, tampered, V4_NOW, { engine: 'js' }),
      rejectsWith('CRL_INVALID', /signature/),
    );
    await assert.rejects(
      verifyWithCollateral(quote, tampered, V4_NOW, { engine: 'both' }),
      rejectsWith('QUOTE_INVALID', /WASM.*certificate chain.*JS engine accepted it/),
    );
  });
});

describe('strict CRL check prepared once per collateral set', () => {
  it('refuses a broken PCK CRL signature on every verification, not just the first', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const crl = collateral.pck_crl as string;
    const verifier = new DcapVerifier({
      engine: 'js',
      collateral: { ...collateral, pck_crl: `${crl.slice(0, -4)}0000` },
    });

    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        verifier.verify(quote, { now: V4_NOW }),
        rejectsWith('CRL_INVALID', /signature/),
      );
    }
  });

  it('accepts a good set repeatedly and still reports the CRLs in validUntil', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const verifier = new DcapVerifier({ engine: 'js', collateral });

    for (let i = 0; i < 3; i++) {
      const result = await verifier.verify(quote, { now: V4_NOW });
      assert.equal(result.validUntil, Date.parse('2025-07-19T10:00:35Z'));
    }
  });
});

describe('minTcbEvaluationDataNumber', () => {
  it('refuses collateral older than the TCB evaluation the caller knows (rolled back)', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4'); // tcbEvaluationDataNumber 17

    for (const engine of ENGINES) {
      await assert.rejects(
        verifyWithCollateral(quote, collateral, V4_NOW, { engine, minTcbEvaluationDataNumber: 18 }),
        (error: unknown) => {
          rejectsWith(
            'COLLATERAL_EXPIRED',
            /tcbEvaluationDataNumber is 17, below the required minimum 18/,
          )(error);
          assert.deepEqual((error as RaTlsError).details, {
            tcbEvaluationDataNumber: 17,
            minTcbEvaluationDataNumber: 18,
          });
          return true;
        },
      );
      const result = await verifyWithCollateral(quote, collateral, V4_NOW, {
        engine,
        minTcbEvaluationDataNumber: 17,
      });
      assert.equal(result.tcbStatus, 'UpToDate');
    }
  });

  it('is BAD_CONFIG unless a non-negative integer', () => {
    for (const value of [-1, 1.5, Number.NaN, 2 ** 53]) {
      assert.throws(
        () => new DcapVerifier({ minTcbEvaluationDataNumber: value }),
        (error: unknown) => {
          assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
          assert.match(error.message, /minTcbEvaluationDataNumber must be a non-negative integer/);
          assert.deepEqual(error.details, { option: 'minTcbEvaluationDataNumber' });
          return true;
        },
      );
    }
    // 0 is a number like any other (no TCB evaluation data is older).
    new DcapVerifier({ minTcbEvaluationDataNumber: 0 });
  });
});

describe('DcapVerifier configuration', () => {
  it('rejects a test root with the WASM engine or both, before any I/O', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-config' });

    for (const engine of ['both'] as const) {
      assert.throws(
        () => new DcapVerifier({ engine, rootCa: authority.rootCaDer, logger: () => {} }),
        rejectsWith('BAD_CONFIG', /rootCa/),
      );
    }
    assert.throws(
      () => new DcapVerifier({ engine: 'js', rootCa: new Uint8Array([1, 2, 3]), logger: () => {} }),
      rejectsWith('BAD_CONFIG', /X\.509/),
    );
  });

  it('names the option in every engine and rootCa refusal, and what to use instead', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-config-details' });
    const refusals: [() => unknown, RegExp, string][] = [
      [
        () => new DcapVerifier({ engine: 'wasm' as EngineChoice }),
        /^engine 'wasm' cannot be used alone: .* Use engine 'both' \(the default\) or 'js'$/,
        'engine',
      ],
      [
        () => new DcapVerifier({ engine: 'fast' as EngineChoice }),
        /^engine must be 'both' or 'js', got "fast"$/,
        'engine',
      ],
      [
        () => new DcapVerifier({ rootCa: authority.rootCaDer, logger: () => {} }),
        /^rootCa \(a test root of trust\) works only with engine 'js': .*Got engine 'both'$/,
        'rootCa',
      ],
      [
        () =>
          new DcapVerifier({ engine: 'js', rootCa: new Uint8Array([1, 2, 3]), logger: () => {} }),
        /^rootCa must be an X\.509 CA certificate \(DER bytes or the text of one PEM certificate\)$/,
        'rootCa',
      ],
    ];
    for (const [make, message, option] of refusals) {
      assert.throws(make, (error: unknown) => {
        assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
        assert.match(error.message, message);
        assert.deepEqual(error.details, { option });
        return true;
      });
    }
  });

  it('warns loudly through the injected logger when a test root is used', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-warn' });
    const warnings: string[] = [];

    const verifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      collateral: authority.collateral(),
      logger: (message) => warnings.push(message),
    });

    assert.equal(verifier.name, 'dcap:js');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /NOT checked against Intel/);
    const result = await verifier.verify(authority.issueQuote());
    assert.equal(result.testRoot, true);
  });

  it("marks no result made under Intel's root as a test-root result", async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    for (const engine of ENGINES) {
      const result = await verifyWithCollateral(quote, collateral, V4_NOW, { engine });
      assert.equal(result.testRoot, undefined);
    }
  });

  it('rejects an unknown engine name and malformed fixed collateral', () => {
    assert.throws(
      () => new DcapVerifier({ engine: 'fast' as EngineChoice }),
      rejectsWith('BAD_CONFIG', /engine/),
    );
    const { collateral } = fixture('intel-tdx-v4');
    assert.throws(
      () => new DcapVerifier({ collateral: { ...collateral, pck_crl: 'not hex' } }),
      rejectsWith('BAD_CONFIG', /pck_crl/),
    );
  });
});

describe('DcapVerifier with a test root of trust (JS engine)', () => {
  it('accepts a good quote and reports the chosen measurements; an Intel-root verifier rejects it', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-good' });
    const reportData = 'ab'.repeat(64);
    const quote = authority.issueQuote({ reportData });
    const collateral = authority.collateral();

    const verifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      collateral,
      logger: () => {},
    });
    const result = await verifier.verify(quote);

    assert.equal(result.tcbStatus, 'UpToDate');
    assert.equal(result.mrtd, authority.describe().quoteDefaults.mrtd);
    assert.equal(Buffer.from(result.reportData).toString('hex'), reportData);
    assert.equal(result.verifier, 'dcap:js');
    await assert.rejects(new DcapVerifier({ collateral }).verify(quote), (error: unknown) =>
      isRaTlsError(error),
    );
  });

  it('reports a non-UpToDate status without judging it (policy is applied elsewhere)', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-status' });
    const collateral = authority.collateral({
      tcbStatus: 'OutOfDate',
      advisoryIds: ['INTEL-SA-00001'],
    });

    const result = await verifyWithCollateral(authority.issueQuote(), collateral, new Date(), {
      engine: 'js',
      rootCa: authority.rootCaDer,
      logger: () => {},
    });

    assert.equal(result.tcbStatus, 'OutOfDate');
    assert.deepEqual(result.advisoryIds, ['INTEL-SA-00001']);
  });

  it('maps a revoked PCK certificate to PCK_REVOKED', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-revoked' });
    const collateral = authority.collateral({ revokePck: true });

    await assert.rejects(
      verifyWithCollateral(authority.issueQuote(), collateral, new Date(), {
        engine: 'js',
        rootCa: authority.rootCaDer,
        logger: () => {},
      }),
      rejectsWith('PCK_REVOKED'),
    );
  });

  it("maps the JS engine's own debug refusal to DEBUG_MODE", async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-debug' });

    await assert.rejects(
      verifyWithCollateral(
        authority.issueQuote({ debug: true }),
        authority.collateral(),
        new Date(),
        {
          engine: 'js',
          rootCa: authority.rootCaDer,
          logger: () => {},
        },
      ),
      rejectsWith('DEBUG_MODE', /Debug mode is enabled/),
    );
  });

  it('maps the Revoked TCB status (which the JS engine throws on) to BAD_TCB_STATUS', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-tcb-revoked' });

    await assert.rejects(
      verifyWithCollateral(
        authority.issueQuote(),
        authority.collateral({ tcbStatus: 'Revoked' }),
        new Date(),
        { engine: 'js', rootCa: authority.rootCaDer, logger: () => {} },
      ),
      rejectsWith('BAD_TCB_STATUS', /Revoked/),
    );
  });

  it("rejects another authority's collateral", async () => {
    const a = await createTestAuthority({ seed: 'dcap-verifier-a' });
    const b = await createTestAuthority({ seed: 'dcap-verifier-b' });

    await assert.rejects(
      verifyWithCollateral(a.issueQuote(), b.collateral(), new Date(), {
        engine: 'js',
        rootCa: a.rootCaDer,
        logger: () => {},
      }),
      (error: unknown) => isRaTlsError(error),
    );
  });
});

describe('DcapVerifier: the quote header, a PEM root and one-sided engine verdicts', () => {
  const { quote, collateral } = fixture('intel-tdx-v4');
  const edited = (edit: (view: DataView) => void) => {
    const copy = quote.slice();
    edit(new DataView(copy.buffer));
    return copy;
  };
  const verifyJs = (bytes: Uint8Array) =>
    verifyWithCollateral(bytes, collateral, V4_NOW, { engine: 'js' });
  const refusedWith =
    (code: string, message: RegExp, details?: Record<string, unknown>) =>
    (error: unknown): boolean => {
      rejectsWith(code, message)(error);
      if (details !== undefined)
        assert.deepEqual((error as { details?: unknown }).details, details);
      return true;
    };

  it('refuses a quote shorter than the 48-byte header before any engine runs', async () => {
    await assert.rejects(
      verifyJs(quote.subarray(0, 47)),
      refusedWith(
        'MALFORMED_QUOTE',
        /The quote is 47 bytes, shorter than a DCAP quote header \(48\)/,
      ),
    );
    await assert.rejects(
      verifyJs('not bytes' as unknown as Uint8Array),
      refusedWith('MALFORMED_QUOTE', /The quote is 0 bytes, shorter than a DCAP quote header/),
    );
    // A whole header is enough for the header check: what fails then is the body.
    await assert.rejects(verifyJs(quote.subarray(0, 48)), (error: unknown) => {
      rejectsWith('MALFORMED_QUOTE')(error);
      assert.doesNotMatch((error as Error).message, /shorter than a DCAP quote header/);
      return true;
    });
  });

  it('refuses other TEE types as NOT_TDX, naming SGX, and TDX versions other than 4 and 5', async () => {
    await assert.rejects(
      verifyJs(edited((view) => view.setUint32(4, 0, true))),
      refusedWith('NOT_TDX', /TEE type is 0x0 \(an SGX enclave\), not 0x81/, {
        teeType: 0,
        version: 4,
      }),
    );
    await assert.rejects(
      verifyJs(edited((view) => view.setUint32(4, 0x12, true))),
      (error: unknown) => {
        refusedWith('NOT_TDX', /TEE type is 0x12, not 0x81/, { teeType: 0x12, version: 4 })(error);
        assert.doesNotMatch((error as Error).message, /SGX/);
        return true;
      },
    );
    for (const version of [3, 6]) {
      await assert.rejects(
        verifyJs(edited((view) => view.setUint16(0, version, true))),
        refusedWith(
          'MALFORMED_QUOTE',
          new RegExp(`TDX quotes have version 4 or 5, this one says ${version}`),
          {
            version,
          },
        ),
      );
    }
  });

  it('takes a test root as the text of one PEM certificate, and warns with its fingerprint', async () => {
    const authority = await createTestAuthority({ seed: 'dcap-verifier-pem-root' });
    const warnings: string[] = [];
    const verifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaPem,
      collateral: authority.collateral(),
      logger: (message) => warnings.push(message),
    });
    try {
      const result = await verifier.verify(authority.issueQuote());
      assert.equal(result.testRoot, true);
      const fingerprint = new X509Certificate(authority.rootCaDer).fingerprint256;
      assert.equal(warnings.length, 1);
      assert.ok(warnings[0]!.includes(fingerprint), warnings[0]);
    } finally {
      verifier.close();
    }
    for (const rootCa of [
      authority.rootCaPem + authority.rootCaPem,
      '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n',
      'no certificate here',
    ]) {
      assert.throws(
        () => new DcapVerifier({ engine: 'js', rootCa, logger: () => {} }),
        refusedWith('BAD_CONFIG', /exactly one PEM certificate/, { option: 'rootCa' }),
      );
    }
  });

  describe('one engine accepts, the other rejects: the rejection stands', () => {
    const refusal = new RaTlsError('QUOTE_INVALID', 'the engine refused the TCB');
    const oneSided = (
      t: TestContext,
      rejecting: 'wasm' | 'js' | 'both',
      reason: unknown = refusal,
    ) => {
      alterEngineVerdicts(t, (engine, verdict) => {
        if (rejecting === 'both' || engine === rejecting) throw reason;
        return verdict;
      });
    };
    const both = () => verifyWithCollateral(quote, collateral, V4_NOW, { engine: 'both' });

    it('WASM rejects, JS accepts', async (t) => {
      oneSided(t, 'wasm');
      await assert.rejects(both(), (error: unknown) => {
        rejectsWith(
          'QUOTE_INVALID',
          /^the engine refused the TCB; the JS engine accepted it, but both engines must accept$/,
        )(error);
        assert.deepEqual((error as RaTlsError).details, { otherEngine: 'accepted' });
        assert.equal((error as RaTlsError).cause, refusal);
        return true;
      });
    });

    it('JS rejects, WASM accepts', async (t) => {
      oneSided(t, 'js');
      await assert.rejects(both(), (error: unknown) => {
        rejectsWith(
          'QUOTE_INVALID',
          /^the engine refused the TCB; the WASM engine accepted it, but both engines must accept$/,
        )(error);
        assert.deepEqual((error as RaTlsError).details, { otherEngine: 'accepted' });
        assert.equal((error as RaTlsError).cause, refusal);
        return true;
      });
    });

    it('WASM calls a v4 quote malformed: that stands (only v5, which WASM cannot decode, is left to JS)', async (t) => {
      const malformed = new RaTlsError('MALFORMED_QUOTE', 'the engine could not decode the quote');
      oneSided(t, 'wasm', malformed);
      await assert.rejects(both(), (error: unknown) => {
        rejectsWith(
          'MALFORMED_QUOTE',
          /could not decode the quote; the JS engine accepted it/,
        )(error);
        return true;
      });
    });

    it('both reject: the JS reason, without a note', async (t) => {
      oneSided(t, 'both');
      await assert.rejects(both(), (error: unknown) => error === refusal);
    });

    it('an error that is no RaTlsError is passed on as it is', async (t) => {
      const crash = new TypeError('engine crashed');
      oneSided(t, 'wasm', crash);
      await assert.rejects(both(), (error: unknown) => error === crash);
    });
  });
});
