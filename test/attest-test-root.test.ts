/**
 * End to end under the DCAP test root (docs/protocol.md §8): certificates from the
 * dstack issuer, attestCertificate, the DcapVerifier's pure-JS engine, and
 * collateral either fixed or served by a real local PCCS.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { isRaTlsError } from '../src/errors.js';
import { readRaTlsCertificate } from '../src/evidence/certificate.js';
import { normalizePolicy } from '../src/policy/policy.js';
import type { Policy } from '../src/policy/types.js';
import {
  createTestAuthority,
  type TcbLevelStatus,
  type TestAuthority,
  type TestCollateral,
} from '../src/testing/authority/index.js';
import { createDstackIssuer, type DstackIssuer } from '../src/testing/dstack-issuer.js';
import { type PccsServer, startPccsServer } from '../src/testing/pccs-server.js';
import { createRaTlsCertificate, generateRaTlsKeyPair } from '../src/testing/ra-tls-certificate.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';

const DAY_MS = 86_400_000;
/** Every status outside the default accept list (UpToDate, SWHardeningNeeded) that TCB info can carry. */
const NON_DEFAULT_STATUSES: readonly TcbLevelStatus[] = [
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
];

const rejectsWith = (code: string, pattern?: RegExp) => (error: unknown) => {
  assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
  assert.equal(error.code, code, error.message);
  if (pattern) assert.match(error.message, pattern);
  return true;
};

describe('attestation under the test root of trust', () => {
  let authority: TestAuthority;
  let issuer: DstackIssuer;

  const testRootVerifier = (collateral: TestCollateral = authority.collateral()) =>
    new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      collateral,
      logger: () => {},
    });
  const attest = (
    certificate: Uint8Array | string,
    policy: Policy = {},
    verifier: RaTlsVerifier = testRootVerifier(),
  ) => attestCertificate(certificate, { verifier, policy: normalizePolicy(policy) });
  const raTlsLeaf = async (from: DstackIssuer = issuer) =>
    (await from.issueTlsKey({ usageRaTls: true, usageServerAuth: true })).leafDer;

  before(async () => {
    authority = await createTestAuthority({ seed: 'pg-ra-tls attest-test-root tests' });
    issuer = createDstackIssuer({ authority });
  });

  describe('accepts', () => {
    test('a good 1.8 V0 certificate, pinned by MRTD, app-id and compose-hash', async () => {
      const report = await attest(await raTlsLeaf(), {
        allowedMrtds: [issuer.expected.mrtd],
        allowedAppIds: [issuer.expected.appId],
        allowedComposeHashes: [issuer.expected.composeHash],
      });
      assert.equal(report.attestationFormat, 'versioned-v0');
      assert.equal(report.tcbStatus, 'UpToDate');
      assert.equal(report.verifier, 'dcap:js');
      assert.equal(report.app?.appId, issuer.expected.appId);
      // A report made under a test root says so, in a field and in a warning.
      assert.equal(report.testRoot, true);
      assert.ok(
        report.warnings.some((w) => /TEST root of trust/.test(w)),
        report.warnings.join('; '),
      );
    });

    test('the report carries the evidence deadline: the collateral nextUpdate', async () => {
      const now = Date.now();
      const nextUpdate = new Date(Math.floor((now + DAY_MS) / 1000) * 1000); // whole seconds, as signed
      const collateral = authority.collateral({ issueDate: new Date(now - DAY_MS), nextUpdate });
      const report = await attest(await raTlsLeaf(), {}, testRootVerifier(collateral));
      assert.equal(report.validUntil, nextUpdate.getTime());
    });

    test('a good legacy 1.1 + 1.2 certificate', async () => {
      const legacy = createDstackIssuer({ authority, legacy: true });
      const report = await attest(await raTlsLeaf(legacy), {
        allowedAppIds: [legacy.expected.appId],
      });
      assert.equal(report.attestationFormat, 'legacy');
      assert.equal(report.app?.composeHash, legacy.expected.composeHash);
    });

    test('SWHardeningNeeded by default, reporting its advisories', async () => {
      const verifier = testRootVerifier(
        authority.collateral({ tcbStatus: 'SWHardeningNeeded', advisoryIds: ['INTEL-SA-00837'] }),
      );
      const report = await attest(await raTlsLeaf(), {}, verifier);
      assert.equal(report.tcbStatus, 'SWHardeningNeeded');
      assert.deepEqual(report.advisoryIds, ['INTEL-SA-00837']);
    });

    for (const status of NON_DEFAULT_STATUSES) {
      test(`${status} when the policy lists it`, async () => {
        const verifier = testRootVerifier(authority.collateral({ tcbStatus: status }));
        const report = await attest(
          await raTlsLeaf(),
          { acceptableTcbStatuses: ['UpToDate', status] },
          verifier,
        );
        assert.equal(report.tcbStatus, status);
      });
    }
  });

  describe('rejects', () => {
    test('a quote whose report_data was patched to bind the presented key: QUOTE_INVALID', async () => {
      // Given a quote signed for other report_data, then patched to bind the leaf's key
      const forged = createDstackIssuer({ authority, faults: { tamperQuote: true } });
      // Then binding holds, but the quote's signature does not
      await assert.rejects(
        attest(await raTlsLeaf(forged)),
        rejectsWith('QUOTE_INVALID', /signature/),
      );
    });

    test("a captured quote re-wrapped in another key's certificate: PUBKEY_MISMATCH", async () => {
      // Given a genuine quote and runtime events taken from a good certificate
      const captured = readRaTlsCertificate(await raTlsLeaf()).attestation;
      // When an attacker embeds them in a certificate for its own key
      const attacker = createRaTlsCertificate({
        privateKey: generateRaTlsKeyPair().privateKey,
        attestation: { quote: captured.quote, runtimeEvents: captured.runtimeEvents },
      });
      // Then the binding check refuses it
      await assert.rejects(attest(attacker.certificateDer), rejectsWith('PUBKEY_MISMATCH'));
    });

    test('a quote bound to another key by the issuer (bindTo): PUBKEY_MISMATCH', async () => {
      const other = generateRaTlsKeyPair().spki;
      const leaf = (await issuer.issueTlsKey({ usageRaTls: true, faults: { bindTo: other } }))
        .leafDer;
      await assert.rejects(attest(leaf), rejectsWith('PUBKEY_MISMATCH'));
    });

    test('a debug TD: DEBUG_MODE (the JS engine refuses it even when the policy allows debug)', async () => {
      const debug = createDstackIssuer({ authority, identity: { debug: true } });
      const leaf = await raTlsLeaf(debug);
      await assert.rejects(attest(leaf), rejectsWith('DEBUG_MODE'));
      await assert.rejects(attest(leaf, { allowDebugMode: true }), rejectsWith('DEBUG_MODE'));
    });

    for (const status of NON_DEFAULT_STATUSES) {
      test(`TCB status ${status} under the default policy: BAD_TCB_STATUS`, async () => {
        const verifier = testRootVerifier(authority.collateral({ tcbStatus: status }));
        await assert.rejects(
          attest(await raTlsLeaf(), {}, verifier),
          rejectsWith('BAD_TCB_STATUS', new RegExp(status)),
        );
      });
    }

    test('TCB status Revoked: BAD_TCB_STATUS, even when the policy lists it', async () => {
      const verifier = testRootVerifier(authority.collateral({ tcbStatus: 'Revoked' }));
      const leaf = await raTlsLeaf();
      await assert.rejects(attest(leaf, {}, verifier), rejectsWith('BAD_TCB_STATUS', /Revoked/));
      await assert.rejects(
        attest(leaf, { acceptableTcbStatuses: ['Revoked'] }, verifier),
        rejectsWith('BAD_TCB_STATUS', /Revoked/),
      );
    });

    test('a platform matching no TCB level (status Unknown): BAD_TCB_STATUS', async () => {
      const verifier = testRootVerifier(
        authority.collateral({ tcbLevels: [{ status: 'UpToDate', pceSvn: 200 }] }),
      );
      await assert.rejects(
        attest(await raTlsLeaf(), { acceptableTcbStatuses: ['UpToDate', 'Unknown'] }, verifier),
        rejectsWith('BAD_TCB_STATUS', /No matching TCB level/),
      );
    });

    test('a revoked PCK certificate: PCK_REVOKED', async () => {
      const verifier = testRootVerifier(authority.collateral({ revokePck: true }));
      await assert.rejects(attest(await raTlsLeaf(), {}, verifier), rejectsWith('PCK_REVOKED'));
    });

    test('expired collateral: COLLATERAL_EXPIRED', async () => {
      const issueDate = new Date(Date.now() - 60 * DAY_MS);
      const verifier = testRootVerifier(
        authority.collateral({
          issueDate,
          nextUpdate: new Date(issueDate.getTime() + 30 * DAY_MS),
        }),
      );
      await assert.rejects(
        attest(await raTlsLeaf(), {}, verifier),
        rejectsWith('COLLATERAL_EXPIRED'),
      );
    });

    test('a TDX module not signed by Intel (mr_signer_seam not zero): SEAM_SIGNER_NOT_ZERO', async () => {
      const other = createDstackIssuer({ authority, identity: { mrSignerSeam: '5e'.repeat(48) } });
      await assert.rejects(attest(await raTlsLeaf(other)), rejectsWith('SEAM_SIGNER_NOT_ZERO'));
    });

    test('an MRTD outside allowedMrtds: MRTD_NOT_ALLOWED', async () => {
      const other = createDstackIssuer({ authority, identity: { mrtd: 'ee'.repeat(48) } });
      await assert.rejects(
        attest(await raTlsLeaf(other), { allowedMrtds: [issuer.expected.mrtd] }),
        rejectsWith('MRTD_NOT_ALLOWED', /eeee/),
      );
    });

    test('an app-id outside allowedAppIds: APP_NOT_ALLOWED', async () => {
      const other = createDstackIssuer({ authority, identity: { appId: '0a'.repeat(20) } });
      await assert.rejects(
        attest(await raTlsLeaf(other), { allowedAppIds: [issuer.expected.appId] }),
        rejectsWith('APP_NOT_ALLOWED', /0a0a/),
      );
    });

    test('a compose-hash outside allowedComposeHashes: COMPOSE_HASH_NOT_ALLOWED', async () => {
      const other = createDstackIssuer({ authority, identity: { composeHash: '0b'.repeat(32) } });
      await assert.rejects(
        attest(await raTlsLeaf(other), { allowedComposeHashes: [issuer.expected.composeHash] }),
        rejectsWith('COMPOSE_HASH_NOT_ALLOWED', /0b0b/),
      );
    });

    test('runtime events that do not replay to RTMR3: RTMR_MISMATCH, in both formats', async () => {
      for (const legacy of [false, true]) {
        const tampered = createDstackIssuer({ authority, legacy, faults: { tamperEvents: true } });
        await assert.rejects(attest(await raTlsLeaf(tampered)), rejectsWith('RTMR_MISMATCH'));
      }
    });

    test('a test-root certificate under the production default verifier: QUOTE_INVALID', async () => {
      // Given the production default (both engines, Intel's root) with the test collateral
      const production = new DcapVerifier({ collateral: authority.collateral() });
      // Then the quote's chain does not reach Intel's root
      await assert.rejects(attest(await raTlsLeaf(), {}, production), rejectsWith('QUOTE_INVALID'));
      // And the WASM engine cannot be given a test root at all
      assert.throws(
        () => new DcapVerifier({ engine: 'both', rootCa: authority.rootCaDer, logger: () => {} }),
        rejectsWith('BAD_CONFIG', /rootCa/),
      );
    });
  });

  describe('rootCa as PEM text', () => {
    test('the PEM of the test root verifies exactly as its DER does', async () => {
      const verifier = new DcapVerifier({
        engine: 'js',
        rootCa: authority.rootCaPem,
        collateral: authority.collateral(),
        logger: () => {},
      });
      const report = await attest(
        await raTlsLeaf(),
        { allowedMrtds: [issuer.expected.mrtd] },
        verifier,
      );
      assert.equal(report.testRoot, true);
      assert.equal(report.tcbStatus, 'UpToDate');
    });

    test('anything but one PEM certificate is BAD_CONFIG before any verification', () => {
      for (const rootCa of [
        '',
        'not a certificate',
        authority.rootCaPem + authority.rootCaPem,
        '-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n',
      ]) {
        assert.throws(
          () => new DcapVerifier({ engine: 'js', rootCa, logger: () => {} }),
          rejectsWith('BAD_CONFIG', /rootCa/),
        );
      }
    });
  });

  describe('with collateral from a local PCCS', () => {
    let pccs: PccsServer;
    let served: TestCollateral;
    const pccsVerifier = () =>
      new DcapVerifier({
        engine: 'js',
        rootCa: authority.rootCaDer,
        pccsUrl: pccs.url,
        logger: () => {},
      });

    before(async () => {
      served = authority.collateral();
      pccs = await startPccsServer({ collateral: () => served });
    });
    after(() => pccs.close());

    test('a good certificate is accepted with collateral fetched over HTTP', async () => {
      served = authority.collateral();
      const before = pccs.requests.tcb;
      const report = await attest(await raTlsLeaf(), {}, pccsVerifier());
      assert.equal(report.tcbStatus, 'UpToDate');
      assert.equal(pccs.requests.tcb, before + 1);
    });

    test('served OutOfDate collateral is rejected by default and accepted when listed', async () => {
      served = authority.collateral({ tcbStatus: 'OutOfDate' });
      const leaf = await raTlsLeaf();
      await assert.rejects(attest(leaf, {}, pccsVerifier()), rejectsWith('BAD_TCB_STATUS'));
      const report = await attest(leaf, { acceptableTcbStatuses: ['OutOfDate'] }, pccsVerifier());
      assert.equal(report.tcbStatus, 'OutOfDate');
    });

    test('a served PCK CRL listing the PCK certificate: PCK_REVOKED', async () => {
      served = authority.collateral({ revokePck: true });
      await assert.rejects(
        attest(await raTlsLeaf(), {}, pccsVerifier()),
        rejectsWith('PCK_REVOKED'),
      );
    });

    test('served collateral past its nextUpdate: COLLATERAL_EXPIRED', async () => {
      const issueDate = new Date(Date.now() - 45 * DAY_MS);
      served = authority.collateral({
        issueDate,
        nextUpdate: new Date(issueDate.getTime() + 30 * DAY_MS),
      });
      await assert.rejects(
        attest(await raTlsLeaf(), {}, pccsVerifier()),
        rejectsWith('COLLATERAL_EXPIRED'),
      );
    });
  });
});
