import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { expectedReportData } from '../src/evidence/binding.js';
import { readRaTlsCertificate } from '../src/evidence/certificate.js';
import { parseQuote } from '../src/evidence/quote.js';
import type { RuntimeEvent } from '../src/evidence/types.js';
import { decodeVersionedAttestation } from '../src/evidence/versioned-attestation.js';
import { normalizePolicy } from '../src/policy/policy.js';
import type { Policy } from '../src/policy/types.js';
import {
  createRaTlsCertificate,
  generateRaTlsKeyPair,
  withReportData,
} from '../src/testing/ra-tls-certificate.js';
import type { RaTlsVerifier, VerificationResult } from '../src/verification/verifier.js';

const FIXTURE = new URL('./fixtures/', import.meta.url);
const sample = decodeVersionedAttestation(
  new Uint8Array(readFileSync(new URL('dstack-attestation-v0/attestation.bin', FIXTURE))),
);
const sgxQuote = new Uint8Array(readFileSync(new URL('intel-sgx-v3/quote.bin', FIXTURE)));
const otherTdxQuote = new Uint8Array(readFileSync(new URL('intel-tdx-v4/quote.bin', FIXTURE)));
const MRTD = parseQuote(sample.quote).mrtd;
const APP_ID = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
const NOW = new Date('2025-07-01T00:00:00Z');

/**
 * A legitimate custom verifier: it "checks" nothing but honestly reports the
 * values of the quote it was given, with a chosen status.
 */
function honestVerifier(
  options: {
    tcbStatus?: VerificationResult['tcbStatus'];
    unverified?: boolean;
    vouchFor?: Uint8Array;
  } = {},
) {
  const verifier = {
    name: 'test-honest',
    unverified: options.unverified,
    calls: 0,
    async verify(quote: Uint8Array): Promise<VerificationResult> {
      verifier.calls++;
      const parsed = parseQuote(options.vouchFor ?? quote);
      return {
        mrtd: parsed.mrtd,
        rtmr0: parsed.rtmr0,
        rtmr1: parsed.rtmr1,
        rtmr2: parsed.rtmr2,
        rtmr3: parsed.rtmr3,
        tcbStatus: options.tcbStatus ?? 'UpToDate',
        advisoryIds: ['INTEL-SA-00001'],
        isDebug: parsed.isDebug,
        reportData: parsed.reportData,
        verifier: 'test-honest',
      };
    },
  };
  return verifier;
}

/** A certificate whose key the patched sample quote binds, with the sample's runtime events. */
function boundCertificate(runtimeEvents: readonly RuntimeEvent[] = sample.runtimeEvents) {
  const keyPair = generateRaTlsKeyPair();
  const quote = withReportData(sample.quote, expectedReportData(keyPair.spki));
  return createRaTlsCertificate({
    privateKey: keyPair.privateKey,
    attestation: { quote, runtimeEvents },
  });
}

const attest = (certificate: Uint8Array | string, verifier: RaTlsVerifier, policy: Policy = {}) =>
  attestCertificate(certificate, { verifier, policy: normalizePolicy(policy), now: NOW });

const rejectsWith = (code: string, pattern?: RegExp) => (error: unknown) =>
  isRaTlsError(error) &&
  error.code === code &&
  (pattern === undefined || pattern.test(error.message));

describe('attestCertificate', () => {
  test('a bound certificate with matching events passes a pinned policy and yields a frozen report', async () => {
    const built = boundCertificate();
    const verifier = honestVerifier();
    const report = await attest(built.certificatePem, verifier, {
      allowedMrtds: [MRTD],
      allowedAppIds: [APP_ID],
    });
    assert.equal(verifier.calls, 1);
    assert.equal(report.fingerprint, readRaTlsCertificate(built.certificateDer).fingerprint);
    assert.equal(report.mrtd, MRTD);
    assert.equal(report.app?.appId, APP_ID);
    assert.equal(report.reportData, Buffer.from(expectedReportData(built.spki)).toString('hex'));
    assert.equal(report.attestationFormat, 'versioned-v0');
    assert.equal(report.quoteVersion, 4);
    assert.equal(report.tcbStatus, 'UpToDate');
    assert.deepEqual(report.advisoryIds, ['INTEL-SA-00001']);
    assert.equal(report.verifiedAt, NOW.getTime());
    // MRTD and app-id pinned without the boot chain or a KMS root: honest, not silent.
    assert.equal(report.warnings.length, 1);
    assert.match(
      report.warnings[0]!,
      /without policy\.allowedMeasurements or policy\.trustedKmsRoots/,
    );
    assert.ok(
      Object.isFrozen(report) && Object.isFrozen(report.warnings) && Object.isFrozen(report.app),
    );
  });

  test('accepts an already-read certificate and DER bytes alike', async () => {
    const built = boundCertificate();
    const fromObject = await attestCertificate(readRaTlsCertificate(built.certificateDer), {
      verifier: honestVerifier(),
      policy: normalizePolicy(),
      now: NOW,
    });
    const fromDer = await attest(built.certificateDer, honestVerifier());
    assert.equal(fromObject.fingerprint, fromDer.fingerprint);
    assert.match(fromDer.warnings[0] ?? '', /allowedMrtds is empty/);
  });

  test('a replayed quote in another key’s certificate fails binding before the verifier runs', async () => {
    const victim = readRaTlsCertificate(boundCertificate().certificateDer);
    const attacker = createRaTlsCertificate({
      attestation: { quote: victim.attestation.quote, runtimeEvents: sample.runtimeEvents },
    });
    const verifier = honestVerifier();
    await assert.rejects(attest(attacker.certificateDer, verifier), rejectsWith('PUBKEY_MISMATCH'));
    assert.equal(verifier.calls, 0);
  });

  test('tampered runtime events fail the RTMR3 replay before the verifier runs', async () => {
    const forged = sample.runtimeEvents.map(
      (event): RuntimeEvent =>
        event.event === 'app-id'
          ? { event: 'app-id', payload: new Uint8Array(20).fill(0xaa) }
          : event,
    );
    const verifier = honestVerifier();
    await assert.rejects(
      attest(boundCertificate(forged).certificateDer, verifier),
      rejectsWith('RTMR_MISMATCH'),
    );
    assert.equal(verifier.calls, 0);
  });

  test('a verifier vouching for another quote is VERIFIER_MISMATCH', async () => {
    const verifier = honestVerifier({ vouchFor: otherTdxQuote });
    await assert.rejects(
      attest(boundCertificate().certificateDer, verifier),
      rejectsWith('VERIFIER_MISMATCH', /mrtd/),
    );
    const sameMeasurementsOtherData = honestVerifier({
      vouchFor: withReportData(sample.quote, new Uint8Array(64)),
    });
    await assert.rejects(
      attest(boundCertificate().certificateDer, sameMeasurementsOtherData),
      rejectsWith('VERIFIER_MISMATCH', /report_data/),
    );
  });

  test('a verifier (e.g. Trust Authority) vouching for another RTMR0, RTMR1 or RTMR2 alone is VERIFIER_MISMATCH', async () => {
    // The boot chain is pinned from the quote; a verifier must have appraised the same registers.
    for (const register of ['rtmr0', 'rtmr1', 'rtmr2'] as const) {
      const honest = honestVerifier();
      const skewed: RaTlsVerifier = {
        name: 'skewed',
        verify: async (quote) => ({ ...(await honest.verify(quote)), [register]: 'ab'.repeat(48) }),
      };
      await assert.rejects(
        attest(boundCertificate().certificateDer, skewed),
        rejectsWith('VERIFIER_MISMATCH', new RegExp(`its ${register} `)),
      );
    }
  });

  test('verifier failures surface as RaTlsErrors: its own code kept, anything else QUOTE_INVALID', async () => {
    const built = boundCertificate();
    const throwsPlain: RaTlsVerifier = {
      name: 'plain',
      verify: () => Promise.reject(new Error('Invalid quote signature')),
    };
    await assert.rejects(
      attest(built.certificateDer, throwsPlain),
      rejectsWith('QUOTE_INVALID', /Invalid quote signature/),
    );
    const throwsCoded: RaTlsVerifier = {
      name: 'coded',
      verify: () => Promise.reject(new RaTlsError('PCK_REVOKED', 'revoked')),
    };
    await assert.rejects(attest(built.certificateDer, throwsCoded), rejectsWith('PCK_REVOKED'));
  });

  test('policy still applies around any verifier; an unverified one skips only the TCB status', async () => {
    const built = boundCertificate();
    await assert.rejects(
      attest(built.certificateDer, honestVerifier({ tcbStatus: 'OutOfDate' })),
      rejectsWith('BAD_TCB_STATUS'),
    );
    const noop = honestVerifier({ tcbStatus: 'Unknown', unverified: true });
    const report = await attest(built.certificateDer, noop, { allowedMrtds: [MRTD] });
    assert.match(report.warnings.join('\n'), /checks nothing/);
    await assert.rejects(
      attest(built.certificateDer, noop, { allowedAppIds: ['00'.repeat(20)] }),
      rejectsWith('APP_NOT_ALLOWED'),
    );
  });

  test('without runtime events an app allowlist is APP_IDENTITY_UNVERIFIED', async () => {
    const built = boundCertificate([]);
    const report = await attest(built.certificateDer, honestVerifier());
    assert.equal(report.app, undefined);
    await assert.rejects(
      attest(built.certificateDer, honestVerifier(), { allowedAppIds: [APP_ID] }),
      rejectsWith('APP_IDENTITY_UNVERIFIED'),
    );
  });

  test('an SGX quote is NOT_TDX and a certificate without attestation NO_ATTESTATION', async () => {
    const sgx = createRaTlsCertificate({ attestation: { quote: sgxQuote } });
    await assert.rejects(attest(sgx.certificateDer, honestVerifier()), rejectsWith('NOT_TDX'));
    const plain = createRaTlsCertificate();
    await assert.rejects(
      attest(plain.certificateDer, honestVerifier()),
      rejectsWith('NO_ATTESTATION'),
    );
  });

  test('an aborted signal stops attestation with its RaTlsError reason', async () => {
    const controller = new AbortController();
    controller.abort(new RaTlsError('VERIFY_TIMEOUT', 'verification took too long'));
    await assert.rejects(
      attestCertificate(boundCertificate().certificateDer, {
        verifier: honestVerifier(),
        policy: normalizePolicy(),
        signal: controller.signal,
      }),
      rejectsWith('VERIFY_TIMEOUT', /too long/),
    );
  });
});
