/**
 * Tests that catch the security bugs a mutation spot-check found surviving the
 * whole suite (issue 10, "tests that catch the bug, not just run the code").
 * Each test names the mutant it kills; each was checked by applying that
 * mutant, watching the test fail, and reverting.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { prepareSocketForPg } from '../src/connection/socket-hand-off.js';
import { isRaTlsError } from '../src/errors.js';
import { checkBinding, expectedReportData } from '../src/evidence/binding.js';
import { readRaTlsCertificate } from '../src/evidence/certificate.js';
import { parseQuote } from '../src/evidence/quote.js';
import { decodeVersionedAttestation } from '../src/evidence/versioned-attestation.js';
import { normalizePolicy } from '../src/policy/policy.js';
import { encodeCrl } from '../src/testing/authority/crl.js';
import { deriveP256Key } from '../src/testing/authority/keys.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import {
  createRaTlsCertificate,
  generateRaTlsKeyPair,
  withReportData,
} from '../src/testing/ra-tls-certificate.js';
import {
  startTrustAuthorityServer,
  type TrustAuthorityServer,
} from '../src/testing/trust-authority-server.js';
import { fromHex } from '../src/util/bytes.js';
import { pemBlocks as pemCertificates } from '../src/util/pem.js';
import { checkCrlsStrictly, type StrictCrlInput } from '../src/verification/crl.js';
import { verifyWithCollateral } from '../src/verification/dcap-verifier.js';
import type { EngineVerdict } from '../src/verification/engines/engine.js';
import { IntelApiVerifier } from '../src/verification/intel-api-verifier.js';
import { readPckInfo } from '../src/verification/pck-info.js';
import type { RaTlsVerifier, VerificationResult } from '../src/verification/verifier.js';
import { alterEngineVerdicts } from './support/engine-verdicts.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);
const fixture = (path: string) => new Uint8Array(readFileSync(new URL(path, FIXTURES)));
const sample = decodeVersionedAttestation(fixture('dstack-attestation-v0/attestation.bin'));
const NOW = new Date('2025-07-01T00:00:00Z');

function rejectsWith(code: string, pattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern !== undefined) assert.match(error.message, pattern);
    return true;
  };
}

/** `bytes` with one byte of its second half (offset 32..63) changed. */
function secondHalfChanged(bytes: Uint8Array, offset = 63): Uint8Array {
  assert.ok(offset >= 32 && offset < 64);
  const out = new Uint8Array(bytes);
  out[offset]! ^= 0x01;
  return out;
}

/** A certificate whose key the sample quote (patched) binds, with `reportData` forced. */
function certificateWithReportData(reportData: (expected: Uint8Array) => Uint8Array) {
  const keyPair = generateRaTlsKeyPair();
  const expected = expectedReportData(keyPair.spki);
  const quote = withReportData(sample.quote, reportData(expected));
  return createRaTlsCertificate({
    privateKey: keyPair.privateKey,
    attestation: { quote, runtimeEvents: sample.runtimeEvents },
  });
}

/** A verifier that reports the quote's own values, with `edit` applied on top. */
function verifierReporting(
  edit: (honest: VerificationResult) => VerificationResult,
): RaTlsVerifier {
  return {
    name: 'test-editing',
    async verify(quote: Uint8Array): Promise<VerificationResult> {
      const parsed = parseQuote(quote);
      return edit({
        mrtd: parsed.mrtd,
        rtmr0: parsed.rtmr0,
        rtmr1: parsed.rtmr1,
        rtmr2: parsed.rtmr2,
        rtmr3: parsed.rtmr3,
        tcbStatus: 'UpToDate',
        advisoryIds: [],
        isDebug: false,
        reportData: parsed.reportData,
        verifier: 'test-editing',
      });
    },
  };
}

const attest = (certificate: Uint8Array, verifier: RaTlsVerifier) =>
  attestCertificate(certificate, { verifier, policy: normalizePolicy({}), now: NOW });

describe('mutant: report_data compared only in its first 32 bytes', () => {
  for (const offset of [32, 47, 63]) {
    test(`a quote whose report_data differs from the key hash only at byte ${offset} is PUBKEY_MISMATCH`, async () => {
      const built = certificateWithReportData((expected) => secondHalfChanged(expected, offset));
      let verifierCalls = 0;
      const verifier = verifierReporting((honest) => {
        verifierCalls++;
        return honest;
      });
      await assert.rejects(attest(built.certificateDer, verifier), rejectsWith('PUBKEY_MISMATCH'));
      assert.equal(verifierCalls, 0, 'binding must fail before the verifier runs');
    });
  }

  test('an envelope report_data differing from the quote only in its last byte is PUBKEY_MISMATCH', () => {
    const keyPair = generateRaTlsKeyPair();
    const expected = expectedReportData(keyPair.spki);
    const built = createRaTlsCertificate({
      privateKey: keyPair.privateKey,
      attestation: {
        quote: withReportData(sample.quote, expected),
        runtimeEvents: sample.runtimeEvents,
        reportData: secondHalfChanged(expected),
      },
    });
    const certificate = readRaTlsCertificate(built.certificateDer);
    assert.throws(
      () => checkBinding(certificate, parseQuote(certificate.attestation.quote)),
      rejectsWith('PUBKEY_MISMATCH', /envelope/),
    );
  });

  test('a verifier vouching for report_data that differs only in its last byte is VERIFIER_MISMATCH', async () => {
    const built = certificateWithReportData((expected) => expected);
    const verifier = verifierReporting((honest) => ({
      ...honest,
      reportData: secondHalfChanged(honest.reportData),
    }));
    await assert.rejects(
      attest(built.certificateDer, verifier),
      rejectsWith('VERIFIER_MISMATCH', /report_data/),
    );
  });

  test('the control: the exact report_data passes', async () => {
    const built = certificateWithReportData((expected) => expected);
    const report = await attest(
      built.certificateDer,
      verifierReporting((honest) => honest),
    );
    assert.equal(report.reportData, Buffer.from(expectedReportData(built.spki)).toString('hex'));
  });
});

describe('mutant: verifier cross-check reduced to MRTD', () => {
  for (const field of ['mrtd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3'] as const) {
    test(`a verifier vouching for another ${field} (all else equal) is VERIFIER_MISMATCH`, async () => {
      const built = certificateWithReportData((expected) => expected);
      const verifier = verifierReporting((honest) => ({
        ...honest,
        [field]: `${honest[field].slice(0, -2)}${honest[field].endsWith('00') ? '01' : '00'}`,
      }));
      await assert.rejects(
        attest(built.certificateDer, verifier),
        rejectsWith('VERIFIER_MISMATCH', new RegExp(`its ${field} `)),
      );
    });
  }
});

describe('mutant: engine agreement (ENGINE_DISAGREEMENT) removed', () => {
  // Both real engines agree on every real quote we have, and only the JS engine
  // takes a test root; so the WASM engine's real verdict is altered after the
  // fact, modelling an engine bug. The JS engine runs unchanged.
  const quote = fixture('intel-tdx-v4/quote.bin');
  const collateral = JSON.parse(
    readFileSync(new URL('intel-tdx-v4/collateral.json', FIXTURES), 'utf8'),
  );
  const V4_NOW = new Date(1751328000 * 1000);

  const edits: [string, (verdict: EngineVerdict) => EngineVerdict, RegExp][] = [
    ['status', (v) => ({ ...v, status: 'SWHardeningNeeded' }), /status/],
    [
      'advisory ids',
      (v) => ({ ...v, advisoryIds: [...v.advisoryIds, 'INTEL-SA-99999'] }),
      /advisoryIds/,
    ],
    ['rtmr1', (v) => ({ ...v, report: { ...v.report, rtmr1: '00'.repeat(48) } }), /report\.rtmr1/],
    [
      'report_data',
      (v) => ({ ...v, report: { ...v.report, reportData: 'ff'.repeat(64) } }),
      /report\.reportData/,
    ],
  ];
  for (const [what, edit, pattern] of edits) {
    test(`engines that both accept but disagree on ${what} are ENGINE_DISAGREEMENT`, async (t) => {
      // Each engine runs in its own thread; the WASM one's answer is altered
      // where the verifier receives it.
      alterEngineVerdicts(t, (engine, verdict) => (engine === 'wasm' ? edit(verdict) : verdict));
      await assert.rejects(
        verifyWithCollateral(quote, collateral, V4_NOW, { engine: 'both' }),
        rejectsWith('ENGINE_DISAGREEMENT', pattern),
      );
    });
  }

  test('the same advisory ids in another order are agreement, and the JS engine’s list is reported', async (t) => {
    alterEngineVerdicts(t, (engine, verdict) => ({
      ...verdict,
      advisoryIds:
        engine === 'wasm'
          ? ['INTEL-SA-00002', 'INTEL-SA-00001']
          : ['INTEL-SA-00001', 'INTEL-SA-00002'],
    }));
    const result = await verifyWithCollateral(quote, collateral, V4_NOW, { engine: 'both' });
    assert.deepEqual(result.advisoryIds, ['INTEL-SA-00001', 'INTEL-SA-00002']);
    assert.ok(Object.isFrozen(result.advisoryIds));
  });

  test('the control: unaltered engines agree and the quote passes', async () => {
    const result = await verifyWithCollateral(quote, collateral, V4_NOW, { engine: 'both' });
    assert.equal(result.verifier, 'dcap:both');
    assert.equal(result.tcbStatus, 'UpToDate');
  });
});

describe('mutants in the strict CRL check', () => {
  const SEED = 'security-mutants-crl';

  async function inputFor(seed: string) {
    const authority = await createTestAuthority({ seed });
    const collateral = authority.collateral();
    const input: StrictCrlInput = {
      rootCaCrl: fromHex(collateral.root_ca_crl),
      pckCrl: fromHex(collateral.pck_crl),
      pckCrlIssuerChain: pemCertificates(collateral.pck_crl_issuer_chain),
      pckChain: readPckInfo(authority.issueQuote()).chain,
      trustedRootCa: authority.rootCaDer,
      now: new Date(),
    };
    return { authority, input };
  }

  test('the control: the authority’s own CRLs pass', async () => {
    const { input } = await inputFor(SEED);
    const { validUntil } = checkCrlsStrictly(input);
    assert.ok(validUntil > Date.now());
  });

  test('mutant "root CRL revoking the PCK CRL issuer ignored": it is PCK_REVOKED', async () => {
    const { authority, input } = await inputFor(SEED);
    const issuingCa = new X509Certificate(input.pckCrlIssuerChain[0]!);
    const root = AsnConvert.parse(authority.rootCaDer, Certificate);
    const rootKey = deriveP256Key(new TextEncoder().encode(SEED), 'root-ca');
    // The seed derives the authority's keys, so this CRL is genuinely signed by its root.
    assert.ok(
      new X509Certificate(authority.rootCaDer).publicKey.equals(rootKey.publicKey),
      'the derived key must be the authority root key',
    );
    const revokingRootCrl = encodeCrl(
      {
        issuerName: new Uint8Array(AsnConvert.serialize(root.tbsCertificate.subject)),
        authorityKeyId: rootKey.keyId,
        thisUpdate: new Date(Date.now() - 3_600_000),
        nextUpdate: new Date(Date.now() + 86_400_000),
        revoked: [{ serialNumber: fromHex(issuingCa.serialNumber), revocationDate: new Date() }],
        crlNumber: 2,
      },
      rootKey.privateKey,
    );
    assert.throws(
      () => checkCrlsStrictly({ ...input, rootCaCrl: revokingRootCrl }),
      rejectsWith('PCK_REVOKED', /issued the PCK CRL is revoked/),
    );
  });

  test('mutant "issuer-chain signature check removed": an issuing CA not signed by the root is CRL_INVALID', async () => {
    // Another authority's platform CA has the same name; its PCK CRL is signed
    // by its own key, so only the chain signature check can tell.
    const { input } = await inputFor(SEED);
    const { input: impostor } = await inputFor(`${SEED}-impostor`);
    assert.throws(
      () =>
        checkCrlsStrictly({
          ...input,
          pckCrl: impostor.pckCrl,
          pckCrlIssuerChain: [impostor.pckCrlIssuerChain[0]!, input.pckCrlIssuerChain[1]!],
        }),
      rejectsWith('CRL_INVALID', /not signed by the next certificate/),
    );
  });
});

describe('mutants in Trust Authority token checks', () => {
  const QUOTE = fixture('intel-tdx-v4/quote.bin');
  const API_KEY = 'ita-mutants-key-0123456789';
  let server: TrustAuthorityServer;

  before(async () => {
    server = await startTrustAuthorityServer({ apiKey: API_KEY });
  });
  after(() => server.close());

  /**
   * A verifier whose transport re-signs each token after `edit` (a genuine key,
   * so only the claim and header checks can refuse it).
   */
  function verifierEditingTokens(
    edit: (header: Record<string, unknown>, payload: Record<string, unknown>) => void,
  ) {
    const editingFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (!String(input).endsWith('/appraisal/v2/attest') || !response.ok) return response;
      const { token } = (await response.json()) as { token: string };
      // Decoded here, not with the library's JWT code, so this test outlives a change of JWT library.
      const [header, payload] = token
        .split('.')
        .slice(0, 2)
        .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))) as [
        Record<string, unknown>,
        Record<string, unknown>,
      ];
      edit(header, payload);
      return Response.json({ token: server.signToken(header, payload) });
    };
    return new IntelApiVerifier({
      apiKey: API_KEY,
      baseUrl: server.url,
      jwksUrl: server.jwksUrl,
      fetch: editingFetch,
    });
  }

  test('the control: a re-signed unchanged token is accepted', async () => {
    const result = await verifierEditingTokens(() => {}).verify(QUOTE);
    assert.equal(result.verifier, 'intel-api');
  });

  test('mutant "jku optional": a token with no jku is TOKEN_INVALID', async () => {
    await assert.rejects(
      verifierEditingTokens((header) => {
        delete header['jku'];
      }).verify(QUOTE),
      rejectsWith('TOKEN_INVALID', /key set/),
    );
  });

  test('mutant "nbf ignored": a token not valid for another hour is TOKEN_INVALID', async () => {
    await assert.rejects(
      verifierEditingTokens((_, payload) => {
        payload['nbf'] = Math.floor(Date.now() / 1000) + 3600;
        payload['exp'] = Math.floor(Date.now() / 1000) + 7200;
      }).verify(QUOTE),
      rejectsWith('TOKEN_INVALID', /not valid before/),
    );
  });

  test('mutant "iat ignored": a token issued an hour in the future is TOKEN_INVALID', async () => {
    await assert.rejects(
      verifierEditingTokens((_, payload) => {
        payload['iat'] = Math.floor(Date.now() / 1000) + 3600;
        payload['exp'] = Math.floor(Date.now() / 1000) + 7200;
      }).verify(QUOTE),
      rejectsWith('TOKEN_INVALID', /issued in the future/),
    );
  });
});

describe("mutant: 'connect' emitted on a socket that already died", () => {
  /** A real loopback TCP connection (the hand-off only needs a socket's life cycle). */
  async function loopbackPair(): Promise<{ client: Socket; close: () => Promise<void> }> {
    const accepted: Socket[] = [];
    const server = createServer((socket) => accepted.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const client = connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => client.once('connect', resolve));
    return {
      client,
      close: async () => {
        for (const socket of accepted) socket.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  test('pg gets CONNECTION_ENDED and then close, never connect, from a socket destroyed before its hand-off', async () => {
    const { client, close } = await loopbackPair();
    try {
      const socket = prepareSocketForPg(client as TLSSocket);
      const events: string[] = [];
      let error: unknown;
      socket.on('connect', () => events.push('connect'));
      socket.on('error', (e) => {
        events.push('error');
        error = e;
      });
      const closed = new Promise<void>((resolve) =>
        socket.on('close', () => {
          events.push('close');
          resolve();
        }),
      );
      socket.destroy();
      // What pg's Connection does: connect(), then wait for 'connect' to send the startup message.
      socket.connect(5432, '127.0.0.1');
      await closed;
      await new Promise((resolve) => setImmediate(resolve));
      assert.ok(!events.includes('connect'), `events: ${events.join(', ')}`);
      assert.ok(events.includes('error'), `events: ${events.join(', ')}`);
      assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'), String(error));
    } finally {
      await close();
    }
  });

  test('the control: a live socket announces connect on the next tick', async () => {
    const { client, close } = await loopbackPair();
    try {
      const socket = prepareSocketForPg(client as TLSSocket);
      const connected = new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.connect(5432, '127.0.0.1');
      await connected;
      assert.equal(socket.destroyed, false);
      socket.destroy();
    } finally {
      await close();
    }
  });
});
