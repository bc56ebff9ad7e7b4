import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { before, describe, it } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { createTestAuthority, type TestAuthority } from '../src/testing/authority/index.js';
import { normalizeCollateral } from '../src/verification/collateral.js';
import {
  type DcapQvlModules,
  PINNED_VERSION,
  parseCacheStats,
  setParseCacheEnabled,
  shapeMismatch,
} from '../src/verification/engines/dcap-qvl-parse-cache.js';
import { JsEngine } from '../src/verification/engines/js-engine.js';

const FIXTURE = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
const V4_NOW_SECONDS = 1751328000;
const intelQuote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE)));
const intelCollateral = normalizeCollateral(
  JSON.parse(readFileSync(new URL('collateral.json', FIXTURE), 'utf8')),
);
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** The first certificate of a PEM chain with one byte of its signature changed. */
function withForgedLeafSignature(chainPem: string): string {
  const [first, ...rest] = chainPem.split(/(?<=-----END CERTIFICATE-----\n?)/);
  const der = new X509Certificate(first!).raw;
  der[der.length - 1]! ^= 0x01;
  const body = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return [`-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`, ...rest].join('');
}

function rejectsWith(code: string) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error, code as never), String(error));
    return true;
  };
}

describe('the JS engine keeps parse results of @phala/dcap-qvl across calls', () => {
  let authority: TestAuthority;
  let engine: JsEngine;
  before(async () => {
    authority = await createTestAuthority({ seed: 'pg-ra-tls parse cache tests' });
    engine = new JsEngine(authority.rootCaDer);
  });

  it('is active on the pinned version of the library, and is hit from the second verification on', async () => {
    const installed = createRequire(import.meta.url)('@phala/dcap-qvl/package.json') as {
      version: string;
    };
    assert.equal(installed.version, PINNED_VERSION, 'the installed library is the pinned one');
    assert.deepEqual(new JsEngine().details.parseCache, { active: true, version: PINNED_VERSION });

    await new JsEngine().verify(intelQuote, intelCollateral, V4_NOW_SECONDS);
    const before = parseCacheStats();
    await new JsEngine().verify(intelQuote, intelCollateral, V4_NOW_SECONDS);
    const after = parseCacheStats();
    assert.ok(after.certificateHits > before.certificateHits, 'certificates came from the cache');
    assert.equal(after.certificateMisses, before.certificateMisses, 'no certificate parsed again');
    assert.ok(after.derHits > before.derHits, 'CRLs and extensions came from the cache');
    assert.equal(after.derMisses, before.derMisses, 'nothing decoded again');
  });

  it('gives the same verdict with the cache on and off', async () => {
    const cached = await new JsEngine().verify(intelQuote, intelCollateral, V4_NOW_SECONDS);
    setParseCacheEnabled(false);
    try {
      const uncached = await new JsEngine().verify(intelQuote, intelCollateral, V4_NOW_SECONDS);
      assert.deepEqual(cached, uncached);
    } finally {
      setParseCacheEnabled(true);
    }
  });

  it('still refuses a revoked PCK after the same certificates were verified with a CRL that did not list it', async () => {
    const quote = authority.issueQuote();
    assert.equal(
      (await engine.verify(quote, authority.collateral(), nowSeconds())).status,
      'UpToDate',
    );
    await assert.rejects(
      engine.verify(quote, authority.collateral({ revokePck: true }), nowSeconds()),
      rejectsWith('PCK_REVOKED'),
    );
  });

  it('still refuses a certificate whose signature was changed after the genuine one was cached', async () => {
    const quote = authority.issueQuote();
    const collateral = authority.collateral();
    await engine.verify(quote, collateral, nowSeconds());
    for (const field of ['tcb_info_issuer_chain', 'qe_identity_issuer_chain'] as const) {
      await assert.rejects(
        engine.verify(
          quote,
          { ...collateral, [field]: withForgedLeafSignature(collateral[field]) },
          nowSeconds(),
        ),
        rejectsWith('QUOTE_INVALID'),
        field,
      );
    }
  });

  it('still refuses changed signed documents and a changed quote signed by cached certificates', async () => {
    const quote = authority.issueQuote();
    const collateral = authority.collateral();
    await engine.verify(quote, collateral, nowSeconds());
    const tcbInfo = collateral.tcb_info.replace('"UpToDate"', '"OutOfDate"');
    assert.notEqual(tcbInfo, collateral.tcb_info);
    await assert.rejects(
      engine.verify(quote, { ...collateral, tcb_info: tcbInfo }, nowSeconds()),
      rejectsWith('QUOTE_INVALID'),
    );
    const flipped = `${collateral.qe_identity_signature.slice(0, -2)}00`;
    await assert.rejects(
      engine.verify(quote, { ...collateral, qe_identity_signature: flipped }, nowSeconds()),
      rejectsWith('QUOTE_INVALID'),
    );
    const changedQuote = new Uint8Array(quote);
    changedQuote[600]! ^= 0x01; // report_data, covered by the quote signature
    await assert.rejects(
      engine.verify(changedQuote, collateral, nowSeconds()),
      rejectsWith('QUOTE_INVALID'),
    );
  });

  it("still refuses collateral of another root after this root's certificates were cached, and the other way round", async () => {
    const other = await createTestAuthority({ seed: 'pg-ra-tls parse cache tests, impostor' });
    const quote = authority.issueQuote();
    await engine.verify(quote, authority.collateral(), nowSeconds());
    await assert.rejects(
      engine.verify(other.issueQuote(), other.collateral(), nowSeconds()),
      rejectsWith('QUOTE_INVALID'),
    );
    await new JsEngine(other.rootCaDer).verify(
      other.issueQuote(),
      other.collateral(),
      nowSeconds(),
    );
    await assert.rejects(
      new JsEngine(other.rootCaDer).verify(quote, authority.collateral(), nowSeconds()),
      rejectsWith('QUOTE_INVALID'),
    );
  });

  it('still decides validity by the time of each call', async () => {
    const quote = authority.issueQuote();
    const collateral = authority.collateral();
    await engine.verify(quote, collateral, nowSeconds());
    await assert.rejects(
      engine.verify(quote, collateral, nowSeconds() + 60 * 86_400),
      rejectsWith('COLLATERAL_EXPIRED'),
    );
  });
});

describe('the parse cache is pinned to the shape of the installed library', () => {
  const library = () => {
    const fromPackage = createRequire(createRequire(import.meta.url).resolve('@phala/dcap-qvl'));
    return {
      version: PINNED_VERSION,
      index: fromPackage('./index.js') as Record<string, unknown>,
      compat: { X509Certificate },
      utils: fromPackage('./utils.js') as Record<string, unknown>,
    } satisfies DcapQvlModules;
  };
  const verifier = () => library().index['QuoteVerifier'];
  const withUtils = (changes: Record<string, unknown>): DcapQvlModules => {
    const modules = library();
    const utils = { ...modules.utils, ...changes };
    return { ...modules, utils, index: { ...modules.index, utils } };
  };

  it('accepts the installed library', () => {
    assert.equal(shapeMismatch(library(), verifier()), undefined);
  });

  it('runs unpatched on another version, another copy or a changed module, and says why', () => {
    const cases: [DcapQvlModules, unknown, RegExp][] = [
      [{ ...library(), version: '0.3.10' }, verifier(), /0\.3\.10.*pinned to 0\.3\.9/],
      [library(), class OtherCopy {}, /another copy/],
      [{ ...library(), compat: { X509Certificate: class {} } }, verifier(), /X509Certificate/],
      [{ ...library(), utils: { ...library().utils } }, verifier(), /its own utils/],
      [withUtils({ CertificateList: {} }), verifier(), /CertificateList/],
      [withUtils({ getFmspc: undefined }), verifier(), /getFmspc/],
    ];
    for (const [modules, engineVerifier, reason] of cases) {
      assert.match(shapeMismatch(modules, engineVerifier) ?? 'accepted', reason);
    }
  });
});
