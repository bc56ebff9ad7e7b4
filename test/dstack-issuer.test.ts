import assert from 'node:assert/strict';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { before, describe, test } from 'node:test';
import { decode as decodeMsgpack } from '@msgpack/msgpack';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { isRaTlsError } from '../src/errors.js';
import { expectedReportData } from '../src/evidence/binding.js';
import {
  RA_TLS_OIDS,
  readRaTlsCertificate,
  unwrapOctetString,
} from '../src/evidence/certificate.js';
import { parseQuote } from '../src/evidence/quote.js';
import { replayRtmr3 } from '../src/evidence/rtmr3.js';
import { parseLegacyEventLog } from '../src/evidence/versioned-attestation.js';
import { normalizePolicy } from '../src/policy/policy.js';
import { createTestAuthority, type TestAuthority } from '../src/testing/authority/index.js';
import { createDstackIssuer, type DstackIssuer } from '../src/testing/dstack-issuer.js';
import { sha256, toHex } from '../src/util/bytes.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** The 62397 extensions of a certificate, payloads unwrapped (docs/protocol.md §1). */
function phalaExtensions(pem: string): Map<string, Uint8Array> {
  const der = new X509Certificate(pem).raw;
  const certificate = AsnConvert.parse(der, Certificate);
  const out = new Map<string, Uint8Array>();
  for (const extension of certificate.tbsCertificate.extensions ?? []) {
    if (!extension.extnID.startsWith('1.3.6.1.4.1.62397.')) continue;
    const value = new Uint8Array(extension.extnValue.buffer);
    out.set(extension.extnID, unwrapOctetString(value, extension.extnID));
  }
  return out;
}

const text = (bytes: Uint8Array | undefined) =>
  bytes === undefined ? undefined : new TextDecoder().decode(bytes);

describe('dstack issuer', () => {
  let authority: TestAuthority;
  let issuer: DstackIssuer;
  let verifier: DcapVerifier;

  before(async () => {
    authority = await createTestAuthority({ seed: 'pg-ra-tls dstack issuer tests' });
    issuer = createDstackIssuer({ authority });
    verifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      collateral: authority.collateral(),
      logger: () => {},
    });
  });

  test('the chain is [leaf, app CA, KMS root], each signed by the next', async () => {
    // Given an issuer under a KMS (the default)
    // When it issues an RA-TLS key
    const issued = await issuer.issueTlsKey({ usageRaTls: true, usageServerAuth: true });
    // Then the leaf is signed by the app CA, the app CA by the self-signed KMS root
    const [leaf, appCa, root] = issued.certificateChain.map((pem) => new X509Certificate(pem));
    assert.ok(leaf && appCa && root && issued.certificateChain.length === 3);
    assert.ok(leaf.checkIssued(appCa) && leaf.verify(appCa.publicKey));
    assert.ok(appCa.checkIssued(root) && appCa.verify(root.publicKey));
    assert.ok(root.verify(root.publicKey));
    assert.deepEqual([leaf.ca, appCa.ca, root.ca], [false, true, true]);
    assert.equal(appCa.subject, 'O=Dstack\nCN=Dstack App CA');
    assert.equal(issuer.rootCertificatePem, issued.certificateChain[2]);
    // And the issuer claims: app_id on both, usage app:custom on the leaf and app:ca on the app CA
    const leafClaims = phalaExtensions(issued.certificateChain[0]!);
    const caClaims = phalaExtensions(issued.certificateChain[1]!);
    assert.equal(toHex(leafClaims.get(RA_TLS_OIDS.appId)!), issuer.expected.appId);
    assert.equal(text(leafClaims.get(RA_TLS_OIDS.usage)), 'app:custom');
    assert.equal(toHex(caClaims.get(RA_TLS_OIDS.appId)!), issuer.expected.appId);
    assert.equal(text(caClaims.get(RA_TLS_OIDS.usage)), 'app:ca');
  });

  test("chain 'local' is [leaf, local CA]", async () => {
    const local = createDstackIssuer({ authority, chain: 'local' });
    const issued = await local.issueTlsKey({ usageRaTls: true });
    const [leaf, ca] = issued.certificateChain.map((pem) => new X509Certificate(pem));
    assert.ok(leaf && ca && issued.certificateChain.length === 2);
    assert.ok(leaf.verify(ca.publicKey) && ca.verify(ca.publicKey) && ca.ca);
    assert.match(local.expected.keyProvider, /"name":"local-sgx"/);
  });

  test('the key is the PKCS#8 P-256 key of the leaf, whose SPKI the quote binds', async () => {
    const issued = await issuer.issueTlsKey({ usageRaTls: true });
    assert.match(issued.key, /^-----BEGIN PRIVATE KEY-----/);
    const spki = createPublicKey(issued.key).export({ type: 'spki', format: 'der' });
    assert.deepEqual(new Uint8Array(spki), issued.spki);
    const leaf = readRaTlsCertificate(issued.leafDer);
    assert.deepEqual(leaf.spki, issued.spki);
    assert.equal(
      new X509Certificate(issued.certificateChain[0]!).publicKey.asymmetricKeyDetails?.namedCurve,
      'prime256v1',
    );
    assert.deepEqual(
      parseQuote(leaf.attestation.quote).reportData,
      expectedReportData(issued.spki),
    );
  });

  test('attestCertificate with the DCAP JS engine under the test root accepts the leaf and reports the identity', async () => {
    // Given a leaf issued for RA-TLS (1.8 V0 by default)
    const issued = await issuer.issueTlsKey({ usageRaTls: true, usageClientAuth: true });
    // When it is attested with a policy pinning the issuer's MRTD, app-id and compose-hash
    const report = await attestCertificate(issued.leafDer, {
      verifier,
      policy: normalizePolicy({
        allowedMrtds: [issuer.expected.mrtd],
        allowedAppIds: [issuer.expected.appId],
        allowedComposeHashes: [issuer.expected.composeHash],
      }),
    });
    // Then the verified identity is exactly the issuer's
    const { expected } = issuer;
    assert.equal(report.attestationFormat, 'versioned-v0');
    assert.equal(report.tcbStatus, 'UpToDate');
    assert.deepEqual(
      [report.mrtd, report.rtmr0, report.rtmr1, report.rtmr2, report.rtmr3],
      [expected.mrtd, expected.rtmr0, expected.rtmr1, expected.rtmr2, expected.rtmr3],
    );
    assert.equal(report.app?.appId, expected.appId);
    assert.equal(report.app?.composeHash, expected.composeHash);
    assert.equal(report.app?.instanceId, expected.instanceId);
    assert.equal(report.app?.osImageHash, expected.osImageHash);
    assert.equal(report.app?.keyProvider, expected.keyProvider);
    assert.deepEqual(
      report.app?.events.map((event) => event.event),
      [
        'system-preparing',
        'app-id',
        'compose-hash',
        'instance-id',
        'boot-mr-done',
        'os-image-hash',
        'key-provider',
        'storage-fs',
        'system-ready',
      ],
    );
  });

  test('chosen identity values reach the quote and the runtime events', async () => {
    const identity = {
      mrtd: `0x${'ab'.repeat(48)}`,
      appId: '11'.repeat(20),
      composeHash: '22'.repeat(32),
      instanceId: '33'.repeat(20),
      osImageHash: '44'.repeat(32),
      keyProvider: '{"name":"kms","id":"00"}',
    };
    const custom = createDstackIssuer({ authority, identity, legacy: true });
    const report = await attestCertificate(
      (await custom.issueTlsKey({ usageRaTls: true })).leafDer,
      { verifier, policy: normalizePolicy({ allowedMrtds: ['ab'.repeat(48)] }) },
    );
    assert.equal(report.attestationFormat, 'legacy');
    assert.equal(report.mrtd, 'ab'.repeat(48));
    assert.deepEqual(
      [report.app?.appId, report.app?.composeHash, report.app?.instanceId, report.app?.osImageHash],
      [identity.appId, identity.composeHash, identity.instanceId, identity.osImageHash],
    );
    assert.equal(report.app?.keyProvider, identity.keyProvider);
  });

  test('subject, alt names and validity are taken from the request', async () => {
    const issued = await issuer.issueTlsKey({
      subject: 'db.teesql.test',
      altNames: ['db.teesql.test', '127.0.0.1', '::1'],
      notBefore: 1_700_000_000,
      notAfter: 1_900_000_000,
    });
    const leaf = new X509Certificate(issued.certificateChain[0]!);
    assert.equal(leaf.subject, 'CN=db.teesql.test');
    assert.equal(
      leaf.subjectAltName,
      'DNS:db.teesql.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
    assert.equal(Date.parse(leaf.validFrom), 1_700_000_000_000);
    assert.equal(Date.parse(leaf.validTo), 1_900_000_000_000);
  });

  test("validity defaults to 1975-01-01 until now + 3650 days, like dstack's", async () => {
    const before = Date.now();
    const leaf = new X509Certificate((await issuer.issueTlsKey()).certificateChain[0]!);
    assert.equal(new Date(leaf.validFrom).toISOString(), '1975-01-01T00:00:00.000Z');
    const tenYears = 3650 * 86_400_000;
    const validTo = Date.parse(leaf.validTo);
    assert.ok(validTo >= Math.floor(before / 1000) * 1000 + tenYears - 1000);
    assert.ok(validTo <= Date.now() + tenYears);
  });

  test('the usage flags become exactly the extended key usages', async () => {
    const ekuOf = async (usageServerAuth: boolean, usageClientAuth: boolean) =>
      new X509Certificate(
        (await issuer.issueTlsKey({ usageServerAuth, usageClientAuth })).certificateChain[0]!,
      ).keyUsage;
    assert.deepEqual(await ekuOf(true, false), [SERVER_AUTH]);
    assert.deepEqual(await ekuOf(false, true), [CLIENT_AUTH]);
    assert.deepEqual(await ekuOf(true, true), [SERVER_AUTH, CLIENT_AUTH]);
    assert.equal(await ekuOf(false, false), undefined);
  });

  test('without usage_ra_tls the leaf carries no attestation, like dstack', async () => {
    const issued = await issuer.issueTlsKey({ usageServerAuth: true });
    const claims = phalaExtensions(issued.certificateChain[0]!);
    assert.deepEqual([...claims.keys()].sort(), [RA_TLS_OIDS.appId, RA_TLS_OIDS.usage]);
    assert.throws(
      () => readRaTlsCertificate(issued.leafDer),
      (error: unknown) => isRaTlsError(error, 'NO_ATTESTATION'),
    );
  });

  test('with_app_info adds the positional msgpack app info claim (1.9)', async () => {
    const withInfo = phalaExtensions(
      (await issuer.issueTlsKey({ usageRaTls: true, withAppInfo: true })).certificateChain[0]!,
    );
    const fields = decodeMsgpack(withInfo.get(RA_TLS_OIDS.appInfo)!) as Uint8Array[];
    assert.equal(fields.length, 8);
    assert.equal(toHex(fields[0]!), issuer.expected.appId);
    assert.equal(toHex(fields[1]!), issuer.expected.composeHash);
    assert.equal(toHex(fields[2]!), issuer.expected.instanceId);
    assert.equal(toHex(fields[6]!), issuer.expected.osImageHash);
    assert.equal(text(fields[7]), issuer.expected.keyProvider);
    const without = phalaExtensions(
      (await issuer.issueTlsKey({ usageRaTls: true })).certificateChain[0]!,
    );
    assert.equal(without.has(RA_TLS_OIDS.appInfo), false);
  });

  test('getQuote answers a verifiable quote for the padded report_data and an event log that replays to its RTMR3', async () => {
    // When GetQuote is asked for two bytes of report_data
    const response = issuer.getQuote('cafe');
    // Then report_data is zero-padded to 64 bytes, in the answer and in the quote
    assert.equal(response.report_data, `cafe${'00'.repeat(62)}`);
    const quote = Buffer.from(response.quote, 'hex');
    const parsed = parseQuote(quote);
    assert.equal(toHex(parsed.reportData), response.report_data);
    // And the JSON event log's IMR 3 entries replay to the quote's RTMR3
    const entries = parseLegacyEventLog(response.event_log);
    const events = entries.map((entry) => ({ event: entry.event, payload: entry.eventPayload }));
    assert.equal(toHex(replayRtmr3(events)), parsed.rtmr3);
    assert.equal(parsed.rtmr3, issuer.expected.rtmr3);
    // And the quote verifies under the test root
    const result = await verifier.verify(quote);
    assert.equal(result.mrtd, issuer.expected.mrtd);
    assert.throws(
      () => issuer.getQuote(new Uint8Array(65)),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
    );
  });

  test('info reports the identity, with tcb_info as a JSON string and compose_hash = SHA-256(app_compose)', () => {
    const info = issuer.info();
    assert.equal(info.app_id, issuer.expected.appId);
    assert.equal(info.instance_id, issuer.expected.instanceId);
    assert.equal(info.compose_hash, issuer.expected.composeHash);
    assert.equal(info.app_name, 'pg-ra-tls-test');
    const tcbInfo = JSON.parse(info.tcb_info) as Record<string, unknown>;
    assert.equal(tcbInfo['mrtd'], issuer.expected.mrtd);
    assert.equal(tcbInfo['rtmr3'], issuer.expected.rtmr3);
    assert.equal(
      toHex(sha256(new TextEncoder().encode(tcbInfo['app_compose'] as string))),
      info.compose_hash,
    );
  });

  test('malformed options and requests are BAD_CONFIG naming the option', async () => {
    assert.throws(
      () => createDstackIssuer({ authority, identity: { appId: '11'.repeat(19) } }),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') && /identity\.appId/.test(error.message),
    );
    await assert.rejects(
      issuer.issueTlsKey({ notBefore: 2_000_000_000, notAfter: 1_000_000_000 }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && /notAfter/.test(error.message),
    );
  });
});
