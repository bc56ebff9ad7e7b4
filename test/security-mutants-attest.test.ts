/**
 * Tests that kill the mutants of src/attest that survived `npm run mutate`
 * (issue 10): aborts, the verifier cross-check's edges, and every field of
 * the AttestationReport a caller relies on. Custom verifiers here report the
 * quote they were given (the DCAP engines are exercised by the attest-* and
 * dcap-* suites); the certificates are real RA-TLS certificates around the
 * real dstack sample quote.
 */
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

const sample = decodeVersionedAttestation(
  new Uint8Array(
    readFileSync(new URL('./fixtures/dstack-attestation-v0/attestation.bin', import.meta.url)),
  ),
);
const NOW = new Date('2025-07-01T00:00:00Z');

function boundCertificate(runtimeEvents: readonly RuntimeEvent[] = sample.runtimeEvents) {
  const keyPair = generateRaTlsKeyPair();
  const quote = withReportData(sample.quote, expectedReportData(keyPair.spki));
  return createRaTlsCertificate({
    privateKey: keyPair.privateKey,
    attestation: { quote, runtimeEvents },
  });
}

/**
 * A verifier reporting the quote it was given, with `edit` applied to its
 * result; it names no `verifier` unless `edit` adds one (a JavaScript verifier may omit it).
 */
function reporting(
  edit: (honest: Omit<VerificationResult, 'verifier'>) => unknown = (honest) => honest,
  extra: Partial<RaTlsVerifier> = {},
): RaTlsVerifier & { calls: number } {
  const verifier = {
    name: 'test-reporting',
    calls: 0,
    ...extra,
    async verify(quote: Uint8Array): Promise<VerificationResult> {
      verifier.calls++;
      const parsed = parseQuote(quote);
      return edit({
        mrtd: parsed.mrtd,
        rtmr0: parsed.rtmr0,
        rtmr1: parsed.rtmr1,
        rtmr2: parsed.rtmr2,
        rtmr3: parsed.rtmr3,
        tcbStatus: 'UpToDate',
        advisoryIds: [],
        isDebug: parsed.isDebug,
        reportData: parsed.reportData,
      }) as VerificationResult;
    },
  };
  return verifier;
}

const attest = (
  certificate: Uint8Array | string,
  verifier: RaTlsVerifier,
  policy: Policy = {},
  options: { chain?: Uint8Array[]; signal?: AbortSignal } = {},
) =>
  attestCertificate(certificate, {
    verifier,
    policy: normalizePolicy(policy),
    now: NOW,
    ...options,
  });

function rejectsWith(code: string, message?: RegExp, details?: Record<string, unknown>) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message !== undefined) assert.match(error.message, message);
    if (details !== undefined) assert.deepEqual(error.details, details);
    return true;
  };
}

describe('attestCertificate: aborts', () => {
  test('a signal aborted with a plain reason is VERIFY_TIMEOUT, before the verifier runs', async () => {
    const verifier = reporting();
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    controller.abort(reason);
    await assert.rejects(
      attest(boundCertificate().certificateDer, verifier, {}, { signal: controller.signal }),
      (error: unknown) => {
        rejectsWith(
          'VERIFY_TIMEOUT',
          /^Attestation verification was aborted before it finished\.$/,
        )(error);
        assert.equal((error as Error).cause, reason, 'the abort reason is kept as the cause');
        return true;
      },
    );
    assert.equal(verifier.calls, 0);
  });

  test("the verifier is given the judging time and the caller's signal", async () => {
    const controller = new AbortController();
    const seen: { now?: Date; signal?: AbortSignal }[] = [];
    const verifier = reporting();
    const recording: RaTlsVerifier = {
      name: 'recording',
      verify(quote, options) {
        seen.push({ ...options });
        return verifier.verify(quote, options);
      },
    };
    await attest(boundCertificate().certificateDer, recording, {}, { signal: controller.signal });
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.now?.getTime(), NOW.getTime(), "judged at the caller's time");
    assert.equal(seen[0]?.signal, controller.signal, "the caller's signal reaches the verifier");
  });

  test('an abort while the verifier runs wins over its verdict, accepted or failed', async () => {
    const controller = new AbortController();
    const abortsThenPasses = reporting((honest) => {
      controller.abort(new Error('deadline'));
      return honest;
    });
    await assert.rejects(
      attest(
        boundCertificate().certificateDer,
        abortsThenPasses,
        {},
        { signal: controller.signal },
      ),
      rejectsWith('VERIFY_TIMEOUT'),
    );
    const second = new AbortController();
    const abortsThenThrows: RaTlsVerifier = {
      name: 'aborted-throws',
      async verify() {
        second.abort(new RaTlsError('VERIFY_TIMEOUT', 'verifyTimeout 5s elapsed'));
        throw new Error('socket hang up');
      },
    };
    await assert.rejects(
      attest(boundCertificate().certificateDer, abortsThenThrows, {}, { signal: second.signal }),
      rejectsWith('VERIFY_TIMEOUT', /verifyTimeout 5s elapsed/),
    );
  });

  test('a plain verifier failure is QUOTE_INVALID naming the verifier', async () => {
    const failing: RaTlsVerifier = {
      name: 'failing-one',
      verify: () => Promise.reject(new Error('bad signature')),
    };
    await assert.rejects(
      attest(boundCertificate().certificateDer, failing),
      rejectsWith('QUOTE_INVALID', /^Verifier failing-one rejected the quote: bad signature/, {
        verifier: 'failing-one',
      }),
    );
  });
});

describe('attestCertificate: the verifier cross-check', () => {
  test('a verifier returning nothing is VERIFIER_MISMATCH', async () => {
    for (const result of [undefined, null, 'ok']) {
      await assert.rejects(
        attest(
          boundCertificate().certificateDer,
          reporting(() => result),
        ),
        rejectsWith(
          'VERIFIER_MISMATCH',
          /^Verifier test-reporting reported on a different quote than the server presented: it returned no result\. This is a verifier bug or an attack; do not connect\.$/,
          { verifier: 'test-reporting' },
        ),
      );
    }
  });

  test('upper-case hex from a verifier is the same measurement; a missing one is not', async () => {
    const upper = reporting((honest) => ({
      ...honest,
      mrtd: honest.mrtd.toUpperCase(),
      rtmr3: honest.rtmr3.toUpperCase(),
    }));
    const report = await attest(boundCertificate().certificateDer, upper);
    assert.equal(report.mrtd, parseQuote(sample.quote).mrtd);
    await assert.rejects(
      attest(
        boundCertificate().certificateDer,
        reporting((honest) => ({ ...honest, rtmr3: undefined })),
      ),
      rejectsWith('VERIFIER_MISMATCH', /its rtmr3 undefined differs from the quote's [0-9a-f]{96}/),
    );
  });

  test('report_data that is not bytes is VERIFIER_MISMATCH', async () => {
    await assert.rejects(
      attest(
        boundCertificate().certificateDer,
        reporting((honest) => ({ ...honest, reportData: Array.from(honest.reportData) })),
      ),
      rejectsWith('VERIFIER_MISMATCH', /its report_data differs from the quote's/),
    );
  });
});

describe('attestCertificate: the report', () => {
  test('carries the certificate, every measurement and the verifier verdict, frozen', async () => {
    const built = boundCertificate();
    const certificate = readRaTlsCertificate(built.certificateDer);
    const quote = parseQuote(certificate.attestation.quote);
    const advisories = ['INTEL-SA-00837'];
    const verifier = reporting(
      (honest) => ({
        ...honest,
        tcbStatus: 'SWHardeningNeeded',
        advisoryIds: advisories,
        verifier: 'dcap (js)',
        validUntil: 1_900_000_000_000,
      }),
      { name: 'dcap' },
    );
    const report = await attest(built.certificateDer, verifier);
    advisories.push('INTEL-SA-99999');
    assert.deepEqual(report.certificate, {
      subject: certificate.subject,
      notBefore: new Date(certificate.notBefore),
      notAfter: new Date(certificate.notAfter),
    });
    assert.equal(report.rtmr0, quote.rtmr0);
    assert.equal(report.rtmr1, quote.rtmr1);
    assert.equal(report.rtmr2, quote.rtmr2);
    assert.equal(report.rtmr3, quote.rtmr3);
    assert.equal(report.tdAttributes, quote.tdAttributes);
    assert.equal(report.mrSeam, quote.mrSeam);
    assert.equal(report.isDebug, false);
    assert.equal(report.tcbStatus, 'SWHardeningNeeded');
    assert.deepEqual(report.advisoryIds, ['INTEL-SA-00837']);
    assert.equal(report.verifier, 'dcap (js)');
    assert.equal(report.validUntil, 1_900_000_000_000);
    assert.equal('testRoot' in report, false);
    assert.equal(report.kms, undefined);
    assert.ok(Object.isFrozen(report.certificate) && Object.isFrozen(report.advisoryIds));
    assert.throws(() => (report.advisoryIds as string[]).push('x'), TypeError);
  });

  test('without advisories, a verifier name or validUntil, the report says so', async () => {
    const report = await attest(
      boundCertificate().certificateDer,
      reporting((honest) => ({ ...honest, advisoryIds: undefined })),
    );
    assert.deepEqual(report.advisoryIds, []);
    assert.equal(report.verifier, 'test-reporting');
    assert.equal('validUntil' in report, false);
  });

  test('a verifier that saw a debug TD makes the report debug, when the policy allows it', async () => {
    const report = await attest(
      boundCertificate().certificateDer,
      reporting((honest) => ({ ...honest, isDebug: true })),
      { allowDebugMode: true },
    );
    assert.equal(report.isDebug, true);
  });

  test('a test root is flagged in the report and in a warning naming the verifier', async () => {
    const report = await attest(
      boundCertificate().certificateDer,
      reporting((honest) => ({ ...honest, testRoot: true }), { name: 'dcap-test' }),
    );
    assert.equal(report.testRoot, true);
    assert.ok(
      report.warnings.includes(
        "Verifier dcap-test checked the quote against a TEST root of trust, not Intel's: this proves nothing about real TDX hardware.",
      ),
      report.warnings.join('\n'),
    );
  });

  test('an unverified verifier is named in its warning; a real one adds none', async () => {
    const report = await attest(
      boundCertificate().certificateDer,
      reporting((honest) => honest, { name: 'noop-x', unverified: true }),
    );
    assert.ok(
      report.warnings.includes(
        "Verifier noop-x checks nothing: the quote's signatures and TCB status were not verified.",
      ),
      report.warnings.join('\n'),
    );
    const real = await attest(
      boundCertificate().certificateDer,
      reporting((honest) => honest, { unverified: false }),
    );
    assert.equal(real.warnings.length, 1, real.warnings.join('\n'));
  });

  test('without runtime events there is no app, even for a quote whose RTMR3 is zero', async () => {
    // A quote with RTMR3 = 0 would "replay" from zero events: it still proves no app.
    const keyPair = generateRaTlsKeyPair();
    const zeroRtmr3 = new Uint8Array(
      withReportData(sample.quote, expectedReportData(keyPair.spki)),
    );
    zeroRtmr3.fill(0, 48 + 472, 48 + 520);
    const built = createRaTlsCertificate({
      privateKey: keyPair.privateKey,
      attestation: { quote: zeroRtmr3, runtimeEvents: [] },
    });
    const report = await attest(built.certificateDer, reporting());
    assert.equal(report.rtmr3, '00'.repeat(48));
    assert.equal(report.app, undefined);
  });

  test('a chain that proves no KMS leaves kms out of the report', async () => {
    const built = boundCertificate();
    const report = await attest(
      built.certificateDer,
      reporting(),
      {},
      {
        chain: [built.certificateDer, built.certificateDer],
      },
    );
    assert.equal(report.kms, undefined);
    const alone = await attest(built.certificatePem, reporting());
    assert.equal(alone.kms, undefined);
  });

  test('verifiedAt defaults to now', async () => {
    const before = Date.now();
    const report = await attestCertificate(boundCertificate().certificateDer, {
      verifier: reporting(),
      policy: normalizePolicy(),
    });
    assert.ok(report.verifiedAt >= before && report.verifiedAt <= Date.now());
  });
});
