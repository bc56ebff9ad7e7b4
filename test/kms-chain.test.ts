import assert from 'node:assert/strict';
import { type KeyObject, sign, X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { isRaTlsError } from '../src/errors.js';
import {
  inspectKmsChain,
  type KmsChainFacts,
  keptIssuerCount,
  pemCertificates,
  spkiSha256Of,
} from '../src/evidence/certificate-chain.js';
import { normalizePolicy } from '../src/policy/policy.js';
import type { Policy } from '../src/policy/types.js';
import {
  type CertificateExtension,
  type CertificateSpec,
  encodeCertificate,
  encodeName,
} from '../src/testing/authority/certificate.js';
import {
  bitString,
  ecdsaWithSha256,
  explicit,
  integer,
  objectIdentifier,
  octetString,
  sequence,
  time,
  tlv,
} from '../src/testing/authority/der.js';
import { createTestAuthority, type TestAuthority } from '../src/testing/authority/index.js';
import { deriveP256Key } from '../src/testing/authority/keys.js';
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

describe('inspectKmsChain on hand-built chains: each rule on its own', () => {
  const NOW = new Date('2026-06-01T00:00:00Z');
  const FROM = new Date('2026-01-01T00:00:00Z');
  const UNTIL = new Date('2027-01-01T00:00:00Z');
  const APP_ID = Uint8Array.from({ length: 20 }, (_, i) => i + 1);
  const seed = new TextEncoder().encode('inspectKmsChain rules');
  const rootKey = deriveP256Key(seed, 'root');
  const appCaKey = deriveP256Key(seed, 'app-ca');
  const leafKey = deriveP256Key(seed, 'leaf');
  const otherKey = deriveP256Key(seed, 'other');
  const ROOT = encodeName([['CN', 'Test KMS root']]);
  const APP_CA = encodeName([['CN', 'Test app CA']]);
  const claim = (value: Uint8Array): CertificateExtension => ({
    oid: '1.3.6.1.4.1.62397.1.3',
    critical: false,
    value,
  });

  type Spec = Partial<CertificateSpec> & { readonly signer?: KeyObject };
  function cert(base: CertificateSpec, signer: KeyObject, edit: Spec = {}): Uint8Array {
    return encodeCertificate({ ...base, ...edit }, edit.signer ?? signer);
  }
  const rootSpec: CertificateSpec = {
    serialNumber: Uint8Array.of(1),
    issuer: ROOT,
    subject: ROOT,
    notBefore: FROM,
    notAfter: UNTIL,
    publicKey: rootKey.publicKey,
    subjectKeyId: rootKey.keyId,
    authorityKeyId: rootKey.keyId,
    ca: true,
    crlUrl: 'https://kms.invalid/crl',
  };
  const appCaSpec: CertificateSpec = {
    ...rootSpec,
    serialNumber: Uint8Array.of(2),
    issuer: ROOT,
    subject: APP_CA,
    publicKey: appCaKey.publicKey,
    subjectKeyId: appCaKey.keyId,
    authorityKeyId: rootKey.keyId,
    extraExtensions: [claim(octetString(APP_ID))],
  };
  const leafSpec: CertificateSpec = {
    ...rootSpec,
    serialNumber: Uint8Array.of(3),
    issuer: APP_CA,
    subject: encodeName([['CN', 'db.example']]),
    publicKey: leafKey.publicKey,
    subjectKeyId: leafKey.keyId,
    authorityKeyId: appCaKey.keyId,
    ca: false,
  };
  const chain = (edits: { root?: Spec; appCa?: Spec; leaf?: Spec } = {}) => ({
    leaf: cert(leafSpec, appCaKey.privateKey, edits.leaf),
    appCa: cert(appCaSpec, rootKey.privateKey, edits.appCa),
    root: cert(rootSpec, rootKey.privateKey, edits.root),
  });
  const inspect = (edits: Parameters<typeof chain>[0] = {}, now = NOW) => {
    const { leaf, appCa, root } = chain(edits);
    return inspectKmsChain(leaf, [appCa, root], now);
  };
  const refusedBecause = (facts: KmsChainFacts, why: RegExp) => {
    assert.equal(facts.verified, false);
    assert.ok(!facts.verified);
    assert.match(facts.reason, why);
    return facts;
  };
  const spkiSha256 = (key: KeyObject) =>
    toHex(sha256(new Uint8Array(key.export({ type: 'spki', format: 'der' }))));

  test('the control: a well-formed chain is verified, with the root SPKI hash and the app-id', () => {
    assert.deepEqual(inspect(), {
      verified: true,
      rootSpkiSha256: spkiSha256(rootKey.publicKey),
      appId: toHex(APP_ID),
    });
  });

  test('validity windows are closed at both ends, for each of the three certificates', () => {
    assert.equal(inspect({}, FROM).verified, true);
    assert.equal(inspect({}, UNTIL).verified, true);
    refusedBecause(inspect({}, new Date(UNTIL.getTime() + 1000)), /the leaf is valid from/);
    refusedBecause(inspect({}, new Date(FROM.getTime() - 1000)), /the leaf is valid from/);
    for (const [name, which] of [
      ['leaf', 'leaf'],
      ['app CA', 'appCa'],
      ['KMS root', 'root'],
    ] as const) {
      refusedBecause(
        inspect({ [which]: { notAfter: new Date('2026-05-01T00:00:00Z') } }),
        new RegExp(
          `the ${name} is valid from 2026-01-01T00:00:00.000Z to 2026-05-01T00:00:00.000Z, not at 2026-06-01T00:00:00.000Z`,
        ),
      );
      refusedBecause(
        inspect({ [which]: { notBefore: new Date('2026-07-01T00:00:00Z') } }),
        new RegExp(`the ${name} is valid from 2026-07-01T00:00:00.000Z to`),
      );
    }
  });

  test('more than [leaf, app CA, KMS root] is refused and names the last certificate', () => {
    const { leaf, appCa, root } = chain();
    const facts = refusedBecause(
      inspectKmsChain(leaf, [appCa, root, root], NOW),
      /the server presented 4 certificates; a dstack KMS chain is exactly \[leaf, app CA, KMS root\]/,
    );
    assert.equal(!facts.verified && facts.lastSpkiSha256, spkiSha256(rootKey.publicKey));
  });

  // A certificate allowed to sign certificates (keyUsage keyCertSign, so OpenSSL accepts it as
  // an issuer) whose basicConstraints says it is no CA: only the cA check refuses it.
  function signerButNoCa(spec: CertificateSpec, signer: KeyObject): Uint8Array {
    const extension = (oid: string, value: Uint8Array) =>
      sequence(objectIdentifier(oid), octetString(value));
    const tbs = sequence(
      explicit(0, integer(2)),
      integer(spec.serialNumber),
      ecdsaWithSha256(),
      spec.issuer,
      sequence(time(spec.notBefore), time(spec.notAfter)),
      spec.subject,
      new Uint8Array(spec.publicKey.export({ type: 'spki', format: 'der' })),
      explicit(
        3,
        sequence(
          extension('2.5.29.35', sequence(tlv(0x80, spec.authorityKeyId))),
          extension('2.5.29.14', octetString(spec.subjectKeyId)),
          extension('2.5.29.15', tlv(0x03, Uint8Array.of(0x01, 0x06))),
          extension('2.5.29.19', sequence()),
          ...(spec.extraExtensions ?? []).map((e) => extension(e.oid, e.value)),
        ),
      ),
    );
    return sequence(tbs, ecdsaWithSha256(), bitString(sign('sha256', tbs, signer)));
  }

  test('a refusal names the SPKI hash of the last certificate presented', () => {
    const { leaf, appCa } = chain();
    const facts = refusedBecause(inspectKmsChain(leaf, [appCa], NOW), /\[leaf, one CA\]/);
    assert.equal(!facts.verified && facts.lastSpkiSha256, spkiSha256(appCaKey.publicKey));
  });

  test('an app CA that is not a CA is refused, even though it signed the leaf', () => {
    const { leaf, root } = chain();
    const appCa = signerButNoCa(appCaSpec, rootKey.privateKey);
    refusedBecause(inspectKmsChain(leaf, [appCa, root], NOW), /the app CA is not a CA certificate/);
  });

  test('a last certificate that is not a self-signed CA is refused', () => {
    const { leaf, appCa } = chain();
    const root = signerButNoCa(rootSpec, rootKey.privateKey);
    refusedBecause(
      inspectKmsChain(leaf, [appCa, root], NOW),
      /the last certificate is not a self-signed CA/,
    );
    // A CA named as its own issuer but signed by another key: not self-signed.
    refusedBecause(
      inspect({ root: { signer: otherKey.privateKey } }),
      /the last certificate is not a self-signed CA/,
    );
  });

  test('an app CA without a 20-byte app-id claim is refused', () => {
    const why =
      /the app CA carries no 20-byte app-id claim \(extension 1\.3\.6\.1\.4\.1\.62397\.1\.3\)/;
    refusedBecause(inspect({ appCa: { extraExtensions: [] } }), why);
    refusedBecause(
      inspect({ appCa: { extraExtensions: [claim(octetString(APP_ID.subarray(1)))] } }),
      why,
    );
    // Not wrapped in an OCTET STRING: the claim cannot be read.
    refusedBecause(inspect({ appCa: { extraExtensions: [claim(APP_ID)] } }), why);
  });

  test('an app CA with two app-id claims does not parse', () => {
    const twice = [claim(octetString(APP_ID)), claim(octetString(APP_ID))];
    refusedBecause(
      inspect({ appCa: { extraExtensions: twice } }),
      /the app CA is not a DER X\.509 certificate/,
    );
  });

  test('a certificate with bytes after it does not parse, and a refusal without a parsable last one names none', () => {
    const { leaf, appCa, root } = chain();
    const padded = new Uint8Array([...leaf, 0]);
    refusedBecause(
      inspectKmsChain(padded, [appCa, root], NOW),
      /the leaf is not a DER X\.509 certificate/,
    );
    const broken = inspectKmsChain(leaf, [appCa, new Uint8Array([...root, 0])], NOW);
    refusedBecause(broken, /the KMS root is not a DER X\.509 certificate/);
    assert.ok(!('lastSpkiSha256' in broken));
    assert.equal(spkiSha256Of(new Uint8Array([...root, 0])), undefined);
    assert.equal(spkiSha256Of(root), spkiSha256(rootKey.publicKey));
  });

  test('issuers are kept by their exact bytes, at most 16 of them however many a server sends', () => {
    // 20 distinct app CAs (new serials), each judged in full and each verified.
    for (let i = 0; i < 20; i++) {
      const facts = inspect({ appCa: { serialNumber: Uint8Array.of(100 + i) } });
      assert.equal(facts.verified, true, `chain ${i}`);
    }
    assert.equal(keptIssuerCount(), 16, 'the 16 most recent, no more, no fewer');
    // A kept one is judged as before.
    assert.equal(inspect({ appCa: { serialNumber: Uint8Array.of(119) } }).verified, true);
    assert.equal(keptIssuerCount(), 16);
  });

  test('pemCertificates reads PEM text and yields nothing for text that is not PEM', () => {
    const { leaf, root } = chain();
    const pem = [leaf, root].map((der) => new X509Certificate(der).toString()).join('');
    assert.deepEqual(
      pemCertificates(pem).map((der) => toHex(der)),
      [toHex(leaf), toHex(root)],
    );
    assert.deepEqual(
      pemCertificates('-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n'),
      [],
    );
  });
});
