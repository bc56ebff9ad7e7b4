import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { isRaTlsError } from '../src/errors.js';
import { inspectKmsChain } from '../src/evidence/certificate-chain.js';
import { normalizePolicy } from '../src/policy/policy.js';
import type { Policy } from '../src/policy/types.js';
import { createTestAuthority, type TestAuthority } from '../src/testing/authority/index.js';
import {
  createDstackIssuer,
  type DstackIssuerOptions,
  type DstackTlsKey,
} from '../src/testing/dstack-issuer.js';
import { sha256, toHex } from '../src/util/bytes.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';

const der = (pem: string) => new Uint8Array(new X509Certificate(pem).raw);
const spkiSha256 = (pem: string) =>
  toHex(sha256(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })));

describe('policy.trustedKmsRoots: the chain [leaf, app CA, KMS root]', () => {
  let authority: TestAuthority;
  let verifier: DcapVerifier;
  let genuine: DstackTlsKey;
  let rootPem: string;

  const issue = (options: Omit<DstackIssuerOptions, 'authority'> = {}) =>
    createDstackIssuer({ authority, ...options }).issueTlsKey({
      usageRaTls: true,
      usageServerAuth: true,
    });

  /** Attests `chain[0]` with `chain.slice(1)` as the certificates the handshake carried. */
  const attest = (chain: readonly string[], policy: Policy = { trustedKmsRoots: [rootPem] }) =>
    attestCertificate(der(chain[0]!), {
      verifier,
      policy: normalizePolicy(policy),
      chain: chain.slice(1).map(der),
    });

  const refused = async (code: string, why: RegExp, chain: readonly string[]) =>
    assert.rejects(attest(chain), (error: unknown) => {
      assert.ok(isRaTlsError(error), String(error));
      assert.equal(error.code, code, error.message);
      assert.match(error.message, why);
      return true;
    });

  before(async () => {
    authority = await createTestAuthority({ seed: 'pg-ra-tls kms chain tests' });
    verifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      collateral: authority.collateral(),
      logger: () => {},
    });
    genuine = await issue();
    rootPem = genuine.certificateChain[2]!;
  });
  after(() => verifier.close());

  test('the right chain is accepted, pinned by PEM, DER or SPKI SHA-256, and reported', async () => {
    for (const pin of [
      rootPem,
      der(rootPem),
      spkiSha256(rootPem),
      `0x${spkiSha256(rootPem).toUpperCase()}`,
    ]) {
      const report = await attest(genuine.certificateChain, {
        trustedKmsRoots: [pin],
        allowedAppIds: [createDstackIssuer({ authority }).expected.appId],
      });
      assert.deepEqual(report.kms, {
        rootSpkiSha256: spkiSha256(rootPem),
        appId: report.app?.appId,
        pinned: true,
      });
      assert.match(report.app?.keyProvider ?? '', /"name":"kms"/);
      // Pinned: no policy warning; only the test root's own notice remains.
      assert.equal(report.testRoot, true);
      assert.deepEqual(
        report.warnings.filter((warning) => !/TEST root of trust/.test(warning)),
        [],
      );
    }
  });

  test('unpinned, the report still shows the KMS root it saw, marked unpinned', async () => {
    const report = await attest(genuine.certificateChain, {});
    assert.equal(report.kms?.rootSpkiSha256, spkiSha256(rootPem));
    assert.equal(report.kms?.pinned, false);
  });

  test('a missing intermediate is KMS_NOT_TRUSTED', async () => {
    const [leaf, , root] = genuine.certificateChain;
    await refused('KMS_NOT_TRUSTED', /\[leaf, one CA\]/, [leaf!, root!]);
    await refused('KMS_NOT_TRUSTED', /leaf certificate alone/, [leaf!]);
  });

  test('the CAs in the wrong order are KMS_NOT_TRUSTED', async () => {
    const [leaf, appCa, root] = genuine.certificateChain;
    await refused('KMS_NOT_TRUSTED', /not signed by the app CA/, [leaf!, root!, appCa!]);
  });

  test('an expired app CA is KMS_NOT_TRUSTED', async () => {
    const expired = await issue({ appCa: { notAfter: new Date(Date.now() - 86_400_000) } });
    await refused('KMS_NOT_TRUSTED', /app CA is valid from .* not at/, expired.certificateChain);
  });

  test('an app CA signed by another root, presented with the pinned root, is KMS_NOT_TRUSTED', async () => {
    const foreign = await issue({ caSeed: 'another KMS' });
    const [leaf, appCa] = foreign.certificateChain;
    await refused('KMS_NOT_TRUSTED', /app CA is not signed by the KMS root/, [
      leaf!,
      appCa!,
      rootPem,
    ]);
  });

  test('a whole chain from another KMS is KMS_NOT_TRUSTED and names that root', async () => {
    const foreign = await issue({ caSeed: 'another KMS' });
    const foreignRoot = spkiSha256(foreign.certificateChain[2]!);
    await refused(
      'KMS_NOT_TRUSTED',
      new RegExp(`${foreignRoot}, which is not in`),
      foreign.certificateChain,
    );
  });

  test("local mode's [leaf, local CA] is KMS_NOT_TRUSTED under a KMS pin", async () => {
    const local = await issue({ chain: 'local' });
    await refused('KMS_NOT_TRUSTED', /local-key-provider mode/, local.certificateChain);
  });

  test('an app CA whose app-id claim is not the RTMR3 app-id is APP_ID_MISMATCH', async () => {
    const claim = '0b'.repeat(20);
    const mismatched = await issue({ appCa: { appIdClaim: claim } });
    await refused('APP_ID_MISMATCH', new RegExp(`app-id ${claim}`), mismatched.certificateChain);
  });

  test('no captured chain at all is KMS_NOT_TRUSTED', async () => {
    await assert.rejects(
      attestCertificate(der(genuine.certificateChain[0]!), {
        verifier,
        policy: normalizePolicy({ trustedKmsRoots: [rootPem] }),
      }),
      (error: unknown) =>
        isRaTlsError(error, 'KMS_NOT_TRUSTED') && /no certificate chain/.test(error.message),
    );
  });

  test('a PEM chain given as text is read as the leaf followed by its issuers', async () => {
    const report = await attestCertificate(genuine.certificateChain.join('\n'), {
      verifier,
      policy: normalizePolicy({ trustedKmsRoots: [rootPem] }),
    });
    assert.equal(report.kms?.pinned, true);
  });

  test('garbage in the chain is refused, never thrown past the policy', () => {
    const leaf = der(genuine.certificateChain[0]!);
    const facts = inspectKmsChain(
      leaf,
      [new Uint8Array([0x30, 0x03, 1, 2, 3]), der(rootPem)],
      new Date(),
    );
    assert.equal(facts.verified, false);
  });

  test('issuers seen before are still judged at each call: validity at its now, their exact bytes', () => {
    const [leaf, appCa, root] = genuine.certificateChain.map(der) as [
      Uint8Array,
      Uint8Array,
      Uint8Array,
    ];
    const now = new Date();
    assert.equal(inspectKmsChain(leaf, [appCa, root], now).verified, true);
    // The same issuers again, at a time after the root expired.
    const rootExpiry = new Date(new X509Certificate(rootPem).validTo);
    const late = inspectKmsChain(leaf, [appCa, root], new Date(rootExpiry.getTime() + 1000));
    assert.equal(late.verified, false);
    assert.match(late.verified ? '' : late.reason, /valid from/);
    // The same app CA with one signature bit flipped is another certificate.
    const forged = appCa.slice();
    const last = forged.length - 1;
    forged[last] = forged[last]! ^ 0x01;
    const facts = inspectKmsChain(leaf, [forged, root], now);
    assert.equal(facts.verified, false);
    assert.equal(inspectKmsChain(leaf, [appCa, root], now).verified, true);
  });

  test('careless pins are BAD_CONFIG', () => {
    for (const trustedKmsRoots of [
      [],
      ['not a root'],
      ['ab'.repeat(31)],
      [genuine.certificateChain.join('\n')],
      [new Uint8Array(4)],
      'x',
    ]) {
      assert.throws(
        () => normalizePolicy({ trustedKmsRoots: trustedKmsRoots as never }),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CONFIG') && /policy\.trustedKmsRoots/.test(error.message),
        JSON.stringify(trustedKmsRoots),
      );
    }
  });
});
