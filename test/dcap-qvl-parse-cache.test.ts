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
  PARSE_CACHE_ENTRIES,
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

describe('what the parse cache serves, and what it passes through to @phala/dcap-qvl', () => {
  // The copy of the library the JS engine patched (this thread's, loaded by js-engine.ts).
  const fromPackage = createRequire(createRequire(import.meta.url).resolve('@phala/dcap-qvl'));
  const compat = fromPackage('./crypto-compat.js') as {
    X509Certificate: new (pem: string) => X509Certificate;
  };
  interface Entity {
    decode(data: unknown, enc?: string, options?: unknown): unknown;
  }
  const utils = fromPackage('./utils.js') as {
    Certificate: Entity;
    CertificateList: Entity;
    findExtension(path: readonly unknown[], raw: Uint8Array): Buffer;
    encodeAsDer(data: unknown): Buffer;
    getIntelExtension(der: Buffer): Buffer;
  };
  const TCB = '1.2.840.113741.1.13.1.2';
  const FMSPC = '1.2.840.113741.1.13.1.4';
  const CPUSVN = '1.2.840.113741.1.13.1.2.18';
  let authority: TestAuthority;
  let pckPem: string;
  let pckDer: Buffer;
  /** The change in the cache's counters while `work` runs. */
  const counted = (work: () => void) => {
    const before = parseCacheStats();
    work();
    const after = parseCacheStats();
    return {
      certificateHits: after.certificateHits - before.certificateHits,
      certificateMisses: after.certificateMisses - before.certificateMisses,
      derHits: after.derHits - before.derHits,
      derMisses: after.derMisses - before.derMisses,
    };
  };
  const none = { certificateHits: 0, certificateMisses: 0, derHits: 0, derMisses: 0 };
  /** 64 bytes (a raw ECDSA signature for encodeAsDer) filled with `n`. */
  const raw = (n: number) => Buffer.alloc(64, n + 1);

  before(async () => {
    authority = await createTestAuthority({ seed: 'pg-ra-tls parse cache tests' });
    new JsEngine(); // installs the cache
    pckPem = authority.pckChainPem.split(/(?<=-----END CERTIFICATE-----\n?)/)[0]!;
    pckDer = new X509Certificate(pckPem).raw;
  });

  it('parses a PEM certificate once: a miss, then the same object for the same text', () => {
    setParseCacheEnabled(true); // starts empty
    let first: X509Certificate | undefined;
    assert.deepEqual(
      counted(() => {
        first = new compat.X509Certificate(pckPem);
      }),
      { ...none, certificateMisses: 1 },
    );
    let second: X509Certificate | undefined;
    assert.deepEqual(
      counted(() => {
        second = new compat.X509Certificate(`${pckPem}`);
      }),
      { ...none, certificateHits: 1 },
    );
    assert.equal(second, first);
    assert.equal(first!.serialNumber.toLowerCase(), authority.pckSerialNumber);
  });

  it('forgets everything when turned off or on, and while off parses every time and counts nothing', () => {
    const cached = new compat.X509Certificate(pckPem);
    const decoded = utils.Certificate.decode(pckDer, 'der');
    const encoded = utils.encodeAsDer(raw(0));
    setParseCacheEnabled(false);
    try {
      assert.deepEqual(
        counted(() => {
          assert.notEqual(new compat.X509Certificate(pckPem), cached);
          assert.notEqual(new compat.X509Certificate(pckPem), new compat.X509Certificate(pckPem));
          assert.notEqual(utils.Certificate.decode(pckDer, 'der'), decoded);
          assert.deepEqual(utils.encodeAsDer(raw(0)), encoded);
        }),
        none,
      );
    } finally {
      setParseCacheEnabled(true);
    }
    assert.deepEqual(
      counted(() => {
        assert.notEqual(new compat.X509Certificate(pckPem), cached);
        assert.notEqual(utils.Certificate.decode(pckDer, 'der'), decoded);
        utils.encodeAsDer(raw(0));
      }),
      { ...none, certificateMisses: 1, derMisses: 2 },
      'nothing from before was kept',
    );
  });

  it("decodes DER once per content with (bytes, 'der'), and passes every other call through", () => {
    setParseCacheEnabled(true);
    let first: unknown;
    assert.deepEqual(
      counted(() => {
        first = utils.Certificate.decode(pckDer, 'der');
      }),
      { ...none, derMisses: 1 },
    );
    assert.deepEqual(
      counted(() => assert.equal(utils.Certificate.decode(Buffer.from(pckDer), 'der'), first)),
      { ...none, derHits: 1 },
      'identical bytes in another buffer',
    );
    assert.deepEqual(
      counted(() => {
        // Another encoding of the same bytes is decoded as that encoding (PEM wants a label).
        assert.throws(() => utils.Certificate.decode(pckDer, 'pem'));
        assert.notEqual(utils.Certificate.decode(pckDer, 'der', {}), first);
      }),
      none,
    );
    // A partial decode (options) of malformed DER never makes a strict decode accept those bytes.
    const truncated = pckDer.subarray(0, pckDer.length - 10);
    const partial = utils.Certificate.decode(truncated, 'der', { partial: true }) as {
      errors: unknown[];
    };
    assert.ok(partial.errors.length > 0);
    assert.throws(() => utils.Certificate.decode(truncated, 'der'));
    assert.throws(() => utils.Certificate.decode(truncated, 'der'), 'a parse error is not kept');
  });

  it('a decoded serial number still converts to every base and padding as bn.js does', () => {
    const crl = Buffer.from(authority.collateral({ revokePck: true }).pck_crl, 'hex');
    setParseCacheEnabled(false);
    const plainCert = utils.Certificate.decode(pckDer, 'der') as CertRecord;
    const plainCrl = utils.CertificateList.decode(crl, 'der') as CrlRecord;
    setParseCacheEnabled(true);
    const cachedCert = utils.Certificate.decode(pckDer, 'der') as CertRecord;
    const cachedCrl = utils.CertificateList.decode(crl, 'der') as CrlRecord;
    assert.equal(utils.Certificate.decode(pckDer, 'der'), cachedCert);
    const serials: [Serial, Serial][] = [
      [cachedCert.tbsCertificate.serialNumber, plainCert.tbsCertificate.serialNumber],
      [
        cachedCrl.tbsCertList.revokedCertificates[0]!.userCertificate,
        plainCrl.tbsCertList.revokedCertificates[0]!.userCertificate,
      ],
    ];
    for (const [cached, plain] of serials) {
      assert.equal(cached.toString(16), authority.pckSerialNumber.replace(/^0+/, ''));
      for (const [base, padding] of [[], [10], [16], [10, 60], [16, 60], [undefined, 60], [2]]) {
        assert.equal(
          cached.toString(base, padding),
          plain.toString(base, padding),
          `${base} ${padding}`,
        );
      }
    }
  });

  it('keeps byte-function results by content (Buffer or any Uint8Array view), handing out copies', () => {
    setParseCacheEnabled(true);
    const signature = raw(7);
    let first: Buffer | undefined;
    assert.deepEqual(
      counted(() => {
        first = utils.encodeAsDer(signature);
      }),
      { ...none, derMisses: 1 },
    );
    const view = new Uint8Array(100).fill(raw(7)[0]!).subarray(10, 74); // the same 64 bytes
    assert.deepEqual(
      counted(() => {
        const again = utils.encodeAsDer(Buffer.from(signature));
        assert.deepEqual(again, first);
        assert.notEqual(again, first, 'a copy');
        assert.deepEqual(utils.encodeAsDer(view), utils.encodeAsDer(raw(7)));
      }),
      { ...none, derHits: 3 },
    );
    // An argument that is neither bytes nor a path of strings is passed through, not keyed.
    assert.deepEqual(
      counted(() =>
        assert.equal(
          utils.encodeAsDer('x'.repeat(64)).length,
          utils.encodeAsDer(Buffer.from('x'.repeat(64))).length,
        ),
      ),
      { ...none, derMisses: 1 },
    );
  });

  it('keys an extension lookup by its OID path, and only a path of strings', () => {
    setParseCacheEnabled(true);
    const extension = utils.getIntelExtension(pckDer);
    const fmspc = utils.findExtension([FMSPC], extension);
    const cpuSvn = utils.findExtension([TCB, CPUSVN], extension);
    assert.equal(fmspc.toString('hex'), authority.fmspc);
    assert.equal(cpuSvn.length, 16);
    assert.deepEqual(
      counted(() => {
        assert.deepEqual(utils.findExtension([FMSPC], extension), fmspc);
        assert.deepEqual(utils.findExtension([TCB, CPUSVN], extension), cpuSvn);
      }),
      { ...none, derHits: 2 },
    );
    // Another path, even one whose OIDs run together into the same text, is looked up anew.
    assert.throws(() => utils.findExtension([`${TCB}${CPUSVN}`], extension), /missing/);
    // Not a path of strings: the library's own answer (an OID it cannot match), never a kept one.
    assert.throws(() => utils.findExtension([TCB, new String(CPUSVN)], extension), /missing/);
  });

  it(`holds ${PARSE_CACHE_ENTRIES} results of a kind, dropping the least recently used first`, () => {
    setParseCacheEnabled(true);
    const call = (n: number) => counted(() => utils.encodeAsDer(raw(n)));
    for (let n = 0; n < PARSE_CACHE_ENTRIES; n++) call(n);
    assert.deepEqual(call(0), { ...none, derHits: 1 }, 'full, nothing dropped yet');
    assert.deepEqual(call(PARSE_CACHE_ENTRIES), { ...none, derMisses: 1 });
    assert.deepEqual(call(0), { ...none, derHits: 1 }, 'recently used: kept');
    assert.deepEqual(call(1), { ...none, derMisses: 1 }, 'least recently used: dropped');
  });
});

type Serial = { toString(base?: unknown, padding?: unknown): string };
type CertRecord = { tbsCertificate: { serialNumber: Serial } };
type CrlRecord = { tbsCertList: { revokedCertificates: { userCertificate: Serial }[] } };
