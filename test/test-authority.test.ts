import 'reflect-metadata';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as x509 from '@peculiar/x509';
import { QuoteVerifier, utils, type VerifiedReport } from '@phala/dcap-qvl';
import { initSync, js_verify } from '@phala/dcap-qvl-web';
import { isRaTlsError } from '../src/errors.js';
import {
  createTestAuthority,
  TDX_QUOTE_V4_OFFSETS,
  type TestAuthority,
  type TestCollateral,
  tamperQuote,
} from '../src/testing/authority/index.js';
import { toHex } from '../src/util/bytes.js';
import type { Collateral } from '../src/verification/collateral.js';

// A fixed clock: collateral issued on 2025-01-01, valid 30 days, verified mid-window.
const ISSUED = new Date('2025-01-01T00:00:00Z');
const NEXT_UPDATE = new Date('2025-01-31T00:00:00Z');
const NOW = Date.parse('2025-01-15T00:00:00Z') / 1000;
const window = { issueDate: ISSUED, nextUpdate: NEXT_UPDATE };

function verifyUnder(
  root: Uint8Array,
  quote: Uint8Array,
  collateral: TestCollateral,
  now = NOW,
): VerifiedReport {
  return QuoteVerifier.newWithRootCa(Buffer.from(root)).verify(quote, collateral, now);
}

function td10(report: VerifiedReport) {
  const body = report.report.asTd10();
  assert.ok(body, 'a TD report 1.0');
  return body;
}

const measurement = (label: string) => label.padEnd(96, '0').slice(0, 96);

const FIXTURES = fileURLToPath(new URL('./fixtures/intel-tdx-v4', import.meta.url));

/** The structure of DER: SEQUENCE nesting, OIDs, and the tag and length of every other value. */
function derShape(bytes: Uint8Array, shape: string[] = []): string[] {
  let offset = 0;
  while (offset < bytes.byteLength) {
    const tag = bytes[offset]!;
    let length = bytes[offset + 1]!;
    let header = 2;
    if (length & 0x80) {
      const octets = length & 0x7f;
      length = 0;
      for (let index = 0; index < octets; index++)
        length = length * 256 + bytes[offset + 2 + index]!;
      header += octets;
    }
    const content = bytes.subarray(offset + header, offset + header + length);
    if (tag === 0x30) shape.push('{', ...derShape(content), '}');
    else if (tag === 0x06) shape.push(`oid:${toHex(content)}`);
    else shape.push(`${tag.toString(16)}/${length}`);
    offset += header + length;
  }
  return shape;
}

describe('test authority: quotes the pure-JS engine accepts under the test root', () => {
  test('a good quote verifies UpToDate and carries the chosen MRTD, RTMRs and report_data', async () => {
    // Given an authority and a quote with chosen measurements
    const authority = await createTestAuthority({ seed: 'good quote' });
    const chosen = {
      mrtd: measurement('a1'),
      rtmr0: measurement('b0'),
      rtmr1: measurement('b1'),
      rtmr2: measurement('b2'),
      rtmr3: measurement('b3'),
    };
    const reportData = new Uint8Array(64).fill(0x5a);
    const quote = authority.issueQuote({ ...chosen, reportData });

    // When the JS engine verifies it under the test root
    const report = verifyUnder(authority.rootCaDer, quote, authority.collateral(window));

    // Then it is UpToDate, with no advisories, and reports exactly what was chosen
    assert.equal(report.status, 'UpToDate');
    assert.deepEqual(report.advisory_ids, []);
    const body = td10(report);
    assert.equal(toHex(body.mrTd), chosen.mrtd);
    assert.equal(toHex(body.rtMr0), chosen.rtmr0);
    assert.equal(toHex(body.rtMr1), chosen.rtmr1);
    assert.equal(toHex(body.rtMr2), chosen.rtmr2);
    assert.equal(toHex(body.rtMr3), chosen.rtmr3);
    assert.deepEqual(new Uint8Array(body.reportData), reportData);
    assert.equal(toHex(body.mrSignerSeam), '00'.repeat(48));
    // SEPT_VE_DISABLE set, debug clear, as real TDs have
    assert.equal(toHex(body.tdAttributes), '0000001000000000');
    // And report_data sits where docs/protocol.md §2 says (bytes 568..632)
    const offset = TDX_QUOTE_V4_OFFSETS.reportData;
    assert.equal(offset, 568);
    assert.deepEqual(quote.subarray(offset, offset + 64), reportData);
  });

  test('default quotes carry the values describe() announces', async () => {
    const authority = await createTestAuthority({ seed: 'describe' });
    const described = authority.describe();

    const body = td10(
      verifyUnder(authority.rootCaDer, authority.issueQuote(), authority.collateral(window)),
    );

    assert.equal(toHex(body.mrTd), described.quoteDefaults.mrtd);
    assert.equal(toHex(body.rtMr0), described.quoteDefaults.rtmr0);
    assert.equal(toHex(body.rtMr3), described.quoteDefaults.rtmr3);
    assert.equal(toHex(body.mrSeam), described.quoteDefaults.mrSeam);
    assert.equal(toHex(body.teeTcbSvn), described.teeTcbSvn);
    assert.equal(toHex(body.xfam), described.quoteDefaults.xfam);
    assert.equal(described.fmspc, authority.fmspc);
  });

  test('the collateral has the engines’ shape and plugs into the verifier’s Collateral type', async () => {
    const authority = await createTestAuthority({ seed: 'shape' });

    const collateral: Collateral = authority.collateral(window);

    assert.deepEqual(Object.keys(collateral).sort(), [
      'pck_crl',
      'pck_crl_issuer_chain',
      'qe_identity',
      'qe_identity_issuer_chain',
      'qe_identity_signature',
      'root_ca_crl',
      'tcb_info',
      'tcb_info_issuer_chain',
      'tcb_info_signature',
    ]);
    const tcbInfo = JSON.parse(collateral.tcb_info);
    assert.equal(tcbInfo.id, 'TDX');
    assert.equal(tcbInfo.version, 3);
    assert.equal(tcbInfo.issueDate, '2025-01-01T00:00:00Z');
    assert.equal(tcbInfo.nextUpdate, '2025-01-31T00:00:00Z');
    assert.equal(tcbInfo.fmspc.toLowerCase(), authority.fmspc);
    const qeIdentity = JSON.parse(collateral.qe_identity);
    assert.equal(qeIdentity.id, 'TD_QE');
    assert.equal(qeIdentity.version, 2);
    assert.match(String(collateral.tcb_info_signature), /^[0-9a-f]{128}$/);
  });

  test('the PCK certificate carries the Intel SGX extension with the chosen FMSPC', async () => {
    // Given an authority with a chosen FMSPC and PCESVN
    const authority = await createTestAuthority({
      seed: 'sgx extension',
      fmspc: '00a06f000000',
      pceSvn: 13,
    });
    const [leaf, platformCa, root] = x509.PemConverter.decode(authority.pckChainPem);
    assert.ok(leaf && platformCa && root);

    // When the engine's own extension readers and an independent X.509 parser read the chain
    const extension = utils.getIntelExtension(Buffer.from(leaf));
    const pck = new x509.X509Certificate(leaf);
    const ca = new x509.X509Certificate(platformCa);
    const rootCa = new x509.X509Certificate(root);

    // Then FMSPC, PCESVN and CPUSVN are what was chosen, and the chain is well-formed
    assert.equal(toHex(utils.getFmspc(extension)), '00a06f000000');
    assert.equal(utils.getPceSvn(extension), 13);
    assert.equal(toHex(utils.getCpuSvn(extension)), authority.describe().cpuSvn);
    assert.equal(pck.serialNumber.toLowerCase(), authority.pckSerialNumber);
    assert.equal(pck.getExtension(x509.BasicConstraintsExtension)?.ca, false);
    assert.equal(ca.getExtension(x509.BasicConstraintsExtension)?.ca, true);
    assert.ok(await pck.verify({ publicKey: ca.publicKey, signatureOnly: true }));
    assert.ok(await ca.verify({ publicKey: rootCa.publicKey, signatureOnly: true }));
    assert.ok(await rootCa.isSelfSigned());
    assert.deepEqual(new Uint8Array(rootCa.rawData), authority.rootCaDer);
  });
});

test('the SGX extension has the structure of a real Intel PCK certificate’s', async () => {
  // Given the PCK leaf of a real Intel TDX quote and one of the authority (same CPUSVN and PCESVN)
  const realChain = readFileSync(`${FIXTURES}/quote.bin`).toString('latin1');
  const [realLeaf] = x509.PemConverter.decode(realChain);
  assert.ok(realLeaf);
  const authority = await createTestAuthority({ seed: 'layout' });
  const [testLeaf] = x509.PemConverter.decode(authority.pckChainPem);
  assert.ok(testLeaf);

  // When both Intel SGX extensions are reduced to their DER structure
  const real = derShape(utils.getIntelExtension(Buffer.from(realLeaf)));
  const ours = derShape(utils.getIntelExtension(Buffer.from(testLeaf)));

  // Then they are identical: same OIDs, order, nesting, types and sizes
  assert.ok(real.length > 100);
  assert.deepEqual(ours, real);
});

describe('test authority: TCB statuses', () => {
  const statuses = [
    'SWHardeningNeeded',
    'ConfigurationNeeded',
    'ConfigurationAndSWHardeningNeeded',
    'OutOfDate',
    'OutOfDateConfigurationNeeded',
  ] as const;

  for (const status of statuses) {
    test(`collateral made for ${status} makes the quote come out ${status} with its advisories`, async () => {
      const authority = await createTestAuthority({ seed: 'statuses' });
      const advisoryIds = ['INTEL-SA-00837', `TEST-SA-${status}`];

      const report = verifyUnder(
        authority.rootCaDer,
        authority.issueQuote(),
        authority.collateral({ ...window, tcbStatus: status, advisoryIds }),
      );

      assert.equal(report.status, status);
      assert.deepEqual(report.advisory_ids, advisoryIds);
    });
  }

  test('Revoked: the JS engine throws rather than returning the status', async () => {
    const authority = await createTestAuthority({ seed: 'statuses' });

    assert.throws(
      () =>
        verifyUnder(
          authority.rootCaDer,
          authority.issueQuote(),
          authority.collateral({ ...window, tcbStatus: 'Revoked' }),
        ),
      /TCB status is invalid: Revoked/,
    );
  });

  test('a TCB level list the platform reaches nowhere gives "No matching TCB level found"', async () => {
    const authority = await createTestAuthority({ seed: 'statuses' });
    // Every level demands a TDX module SVN above the platform's (6).
    const tdxSvns = [7, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    assert.throws(
      () =>
        verifyUnder(
          authority.rootCaDer,
          authority.issueQuote(),
          authority.collateral({ ...window, tcbLevels: [{ status: 'UpToDate', tdxSvns }] }),
        ),
      /No matching TCB level found/,
    );
  });

  test('a quote with an older tee_tcb_svn falls to the older level', async () => {
    // Given UpToDate collateral whose second level (OutOfDate) asks only for PCESVN 0
    const authority = await createTestAuthority({ seed: 'statuses' });
    const collateral = authority.collateral({
      ...window,
      tcbLevels: [
        { status: 'UpToDate' },
        { status: 'OutOfDate', tdxSvns: new Array(16).fill(0), advisoryIds: ['INTEL-SA-00001'] },
      ],
    });

    // When the quote reports a TDX module SVN below the UpToDate level's
    const quote = authority.issueQuote({ teeTcbSvn: '05010300000000000000000000000000' });

    // Then the engine matches the OutOfDate level
    const report = verifyUnder(authority.rootCaDer, quote, collateral);
    assert.equal(report.status, 'OutOfDate');
    assert.deepEqual(report.advisory_ids, ['INTEL-SA-00001']);
  });
});

describe('test authority: what the engine rejects', () => {
  test('debug bit: the JS engine refuses a debug TD itself', async () => {
    const authority = await createTestAuthority({ seed: 'rejections' });
    const quote = authority.issueQuote({ debug: true });

    assert.equal(quote[TDX_QUOTE_V4_OFFSETS.tdAttributes]! & 0x01, 0x01);
    assert.throws(
      () => verifyUnder(authority.rootCaDer, quote, authority.collateral(window)),
      /Debug mode is enabled/,
    );
  });

  test('td_attributes without SEPT_VE_DISABLE are refused', async () => {
    const authority = await createTestAuthority({ seed: 'rejections' });

    assert.throws(
      () =>
        verifyUnder(
          authority.rootCaDer,
          authority.issueQuote({ tdAttributes: '0000000000000000' }),
          authority.collateral(window),
        ),
      /SEPT_VE_DISABLE is not enabled/,
    );
  });

  test('revoked PCK: once its serial is in the PCK CRL the quote is rejected', async () => {
    // Given a quote that verifies with the current collateral
    const authority = await createTestAuthority({ seed: 'revocation' });
    const quote = authority.issueQuote();
    assert.equal(
      verifyUnder(authority.rootCaDer, quote, authority.collateral(window)).status,
      'UpToDate',
    );

    // When the PCK certificate is revoked
    authority.revokePck();
    const collateral = authority.collateral(window);

    // Then the PCK CRL lists its serial and the engine rejects the quote
    const crl = new x509.X509Crl(Buffer.from(collateral.pck_crl, 'hex'));
    assert.deepEqual(
      crl.entries.map((entry) => entry.serialNumber.toLowerCase()),
      [authority.pckSerialNumber],
    );
    assert.equal(authority.describe().pckRevoked, true);
    assert.throws(
      () => verifyUnder(authority.rootCaDer, quote, collateral),
      /Certificate is revoked/,
    );
  });

  test('revokePck as a collateral option only affects that collateral', async () => {
    const authority = await createTestAuthority({ seed: 'revocation option' });
    const quote = authority.issueQuote();

    assert.throws(
      () =>
        verifyUnder(
          authority.rootCaDer,
          quote,
          authority.collateral({ ...window, revokePck: true }),
        ),
      /Certificate is revoked/,
    );
    assert.equal(
      verifyUnder(authority.rootCaDer, quote, authority.collateral(window)).status,
      'UpToDate',
    );
  });

  test('the CRLs are signed by their issuers and carry the collateral window', async () => {
    const authority = await createTestAuthority({ seed: 'crls' });
    const collateral = authority.collateral({
      ...window,
      crlNextUpdate: new Date('2025-01-20T00:00:00Z'),
    });
    const [platformCaPem, rootPem] = x509.PemConverter.decode(collateral.pck_crl_issuer_chain);
    assert.ok(platformCaPem && rootPem);

    const pckCrl = new x509.X509Crl(Buffer.from(collateral.pck_crl, 'hex'));
    const rootCrl = new x509.X509Crl(Buffer.from(collateral.root_ca_crl, 'hex'));

    assert.ok(
      await pckCrl.verify({ publicKey: new x509.X509Certificate(platformCaPem).publicKey }),
    );
    assert.ok(await rootCrl.verify({ publicKey: new x509.X509Certificate(rootPem).publicKey }));
    assert.ok(!(await pckCrl.verify({ publicKey: new x509.X509Certificate(rootPem).publicKey })));
    assert.equal(pckCrl.thisUpdate.toISOString(), ISSUED.toISOString());
    assert.equal(pckCrl.nextUpdate?.toISOString(), '2025-01-20T00:00:00.000Z');
    assert.equal(rootCrl.entries.length, 0);
  });

  test('collateral past its nextUpdate (or not yet issued) is rejected', async () => {
    const authority = await createTestAuthority({ seed: 'dates' });
    const quote = authority.issueQuote();
    const collateral = authority.collateral(window);

    assert.throws(
      () => verifyUnder(authority.rootCaDer, quote, collateral, NEXT_UPDATE.getTime() / 1000 + 1),
      /TCBInfo expired/,
    );
    assert.throws(
      () => verifyUnder(authority.rootCaDer, quote, collateral, ISSUED.getTime() / 1000 - 1),
      /TCBInfo issue date is in the future/,
    );
  });

  test('a tampered body byte breaks the attestation-key signature', async () => {
    const authority = await createTestAuthority({ seed: 'tamper' });
    const quote = authority.issueQuote();
    const collateral = authority.collateral(window);

    for (const offset of [TDX_QUOTE_V4_OFFSETS.mrTd, TDX_QUOTE_V4_OFFSETS.reportData + 63]) {
      assert.throws(
        () => verifyUnder(authority.rootCaDer, tamperQuote(quote, offset), collateral),
        /ISV enclave report signature is invalid/,
      );
    }
    // A tampered QE report breaks the PCK signature over it
    assert.throws(
      () =>
        verifyUnder(
          authority.rootCaDer,
          tamperQuote(quote, TDX_QUOTE_V4_OFFSETS.qeReport + 320),
          collateral,
        ),
      /Signature is invalid for qe_report/,
    );
  });

  test('a quote from authority A with collateral from authority B is rejected under either root', async () => {
    const a = await createTestAuthority({ seed: 'authority A' });
    const b = await createTestAuthority({ seed: 'authority B' });
    const quote = a.issueQuote();
    const collateralB = b.collateral(window);

    assert.throws(() => verifyUnder(a.rootCaDer, quote, collateralB), /certificate chain/i);
    assert.throws(() => verifyUnder(b.rootCaDer, quote, collateralB), /certificate chain/i);
  });

  test('the same quote under Intel’s production root is rejected by the JS engine', async () => {
    const authority = await createTestAuthority({ seed: 'production root' });
    const quote = authority.issueQuote();
    const collateral = authority.collateral(window);

    assert.throws(
      () => QuoteVerifier.newProd().verify(quote, collateral, NOW),
      /certificate chain/i,
    );
  });

  test('the WASM engine (Intel root compiled in) rejects test-root quotes but accepts a real one', async () => {
    // Given the WASM engine, loaded the way the library loads it
    const require = createRequire(import.meta.url);
    initSync({ module: readFileSync(require.resolve('@phala/dcap-qvl-web/dcap-qvl-web_bg.wasm')) });
    const realQuote = readFileSync(`${FIXTURES}/quote.bin`);
    const realCollateral = JSON.parse(readFileSync(`${FIXTURES}/collateral.json`, 'utf8'));
    const authority = await createTestAuthority({ seed: 'wasm' });

    // Then a real quote passes (the engine works) and a test-root quote never does: not with
    // the authority's collateral (its CRLs do not chain to Intel) nor with Intel's genuine one
    assert.equal(js_verify(realQuote, realCollateral, 1751328000n).status, 'UpToDate');
    const quote = authority.issueQuote();
    assert.throws(
      () => js_verify(quote, authority.collateral(window), BigInt(NOW)),
      (error: unknown) => typeof error === 'string' && /Revocation|certificate chain/i.test(error),
    );
    assert.throws(
      () => js_verify(quote, realCollateral, 1751328000n),
      (error: unknown) => typeof error === 'string' && /certificate chain/i.test(error),
    );
  });
});

describe('test authority: determinism, options, cost', () => {
  test('one seed gives one authority; another seed another', async () => {
    const first = await createTestAuthority({ seed: 'same seed' });
    const second = await createTestAuthority({ seed: 'same seed' });
    const other = await createTestAuthority({ seed: 'other seed' });

    assert.deepEqual(second.rootCaDer, first.rootCaDer);
    assert.equal(second.pckSerialNumber, first.pckSerialNumber);
    assert.notDeepEqual(other.rootCaDer, first.rootCaDer);
    assert.notEqual(other.pckSerialNumber, first.pckSerialNumber);
    // A quote of the first verifies with collateral of the second: they are one authority
    assert.equal(
      verifyUnder(first.rootCaDer, first.issueQuote(), second.collateral(window)).status,
      'UpToDate',
    );
    // But state such as revocation belongs to each instance
    first.revokePck();
    assert.equal(second.describe().pckRevoked, false);
  });

  test('malformed options are refused with BAD_CONFIG naming the option', async () => {
    await assert.rejects(
      createTestAuthority({ fmspc: 'not hex' }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /fmspc/.test(error.message),
    );
    await assert.rejects(
      createTestAuthority({ pceSvn: -1 }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /pceSvn/.test(error.message),
    );
    const authority = await createTestAuthority({ seed: 'options' });
    assert.throws(
      () => authority.issueQuote({ mrtd: 'abcd' }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /mrtd/.test(error.message),
    );
    assert.throws(
      () => authority.issueQuote({ reportData: new Uint8Array(65) }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /reportData/.test(error.message),
    );
    assert.throws(
      () => tamperQuote(authority.issueQuote(), 1 << 20),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
    );
  });

  test('measure: creating an authority, issuing a quote, making collateral, verifying', async (t) => {
    const timings: Record<string, number[]> = { create: [], quote: [], collateral: [], verify: [] };
    for (let round = 0; round < 20; round++) {
      let start = performance.now();
      const authority: TestAuthority = await createTestAuthority();
      timings.create!.push(performance.now() - start);
      start = performance.now();
      const quote = authority.issueQuote();
      timings.quote!.push(performance.now() - start);
      start = performance.now();
      const collateral = authority.collateral(window);
      timings.collateral!.push(performance.now() - start);
      start = performance.now();
      assert.equal(verifyUnder(authority.rootCaDer, quote, collateral).status, 'UpToDate');
      timings.verify!.push(performance.now() - start);
    }
    const median = (values: number[]) => [...values].sort((x, y) => x - y)[values.length >> 1]!;
    for (const [name, values] of Object.entries(timings)) {
      t.diagnostic(
        `${name}: first ${values[0]!.toFixed(2)} ms, median ${median(values).toFixed(2)} ms`,
      );
    }
  });
});
