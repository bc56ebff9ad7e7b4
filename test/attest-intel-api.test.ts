/**
 * End to end with the hosted verifier: certificates from the dstack issuer,
 * attestCertificate, and IntelApiVerifier talking HTTP to a local Trust
 * Authority (docs/protocol.md §6). Binding, RTMR3 replay and policy stay with
 * pg-ra-tls whatever the token says.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { isRaTlsError } from '../src/errors.js';
import { normalizePolicy } from '../src/policy/policy.js';
import type { Policy } from '../src/policy/types.js';
import { createTestAuthority, type TestAuthority } from '../src/testing/authority/index.js';
import { createDstackIssuer, type DstackIssuer } from '../src/testing/dstack-issuer.js';
import {
  startTrustAuthorityServer,
  type TrustAuthorityServer,
} from '../src/testing/trust-authority-server.js';
import { IntelApiVerifier } from '../src/verification/intel-api-verifier.js';

const API_KEY = 'attest-intel-api-test-key';

const rejectsWith = (code: string, pattern?: RegExp) => (error: unknown) => {
  assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
  assert.equal(error.code, code, error.message);
  if (pattern) assert.match(error.message, pattern);
  return true;
};

describe('attestation through IntelApiVerifier and a local Trust Authority', () => {
  let authority: TestAuthority;
  let issuer: DstackIssuer;
  let server: TrustAuthorityServer;

  const attest = async (from: DstackIssuer, policy: Policy = {}) => {
    const { leafDer } = await from.issueTlsKey({ usageRaTls: true, usageServerAuth: true });
    const verifier = new IntelApiVerifier({
      apiKey: API_KEY,
      baseUrl: server.url,
      jwksUrl: server.jwksUrl,
    });
    return attestCertificate(leafDer, { verifier, policy: normalizePolicy(policy) });
  };

  before(async () => {
    authority = await createTestAuthority({ seed: 'pg-ra-tls attest-intel-api tests' });
    issuer = createDstackIssuer({ authority });
    server = await startTrustAuthorityServer({ apiKey: API_KEY });
  });
  after(() => server.close());
  beforeEach(() => server.configure({}));

  test("accepts a test-root certificate's quote and reports the issuer's identity", async () => {
    // Given a pinned policy for the issuer's app
    const policy = {
      allowedMrtds: [issuer.expected.mrtd],
      allowedAppIds: [issuer.expected.appId],
      allowedComposeHashes: [issuer.expected.composeHash],
    };
    // When its certificate is attested through the Trust Authority
    const requestsBefore = server.requests.length;
    const report = await attest(issuer, policy);
    // Then the quote went to the API once and the verified identity is the issuer's
    assert.equal(server.requests.length, requestsBefore + 1);
    assert.equal(report.verifier, 'intel-api');
    assert.equal(report.tcbStatus, 'UpToDate');
    assert.equal(report.mrtd, issuer.expected.mrtd);
    assert.equal(report.rtmr3, issuer.expected.rtmr3);
    assert.equal(report.app?.appId, issuer.expected.appId);
  });

  test('an MRTD outside allowedMrtds: MRTD_NOT_ALLOWED', async () => {
    const other = createDstackIssuer({ authority, identity: { mrtd: 'ee'.repeat(48) } });
    await assert.rejects(
      attest(other, { allowedMrtds: [issuer.expected.mrtd] }),
      rejectsWith('MRTD_NOT_ALLOWED'),
    );
  });

  test('a debug TD: DEBUG_MODE, and accepted when the policy allows debug', async () => {
    const debug = createDstackIssuer({ authority, identity: { debug: true } });
    await assert.rejects(attest(debug), rejectsWith('DEBUG_MODE'));
    const report = await attest(debug, { allowDebugMode: true });
    assert.equal(report.isDebug, true);
  });

  test('a token claiming debug for a non-debug quote: DEBUG_MODE', async () => {
    server.configure({ debug: true });
    await assert.rejects(attest(issuer), rejectsWith('DEBUG_MODE'));
  });

  test('a TCB status outside the accept list: BAD_TCB_STATUS, and accepted when listed', async () => {
    server.configure({ tcbStatus: 'OutOfDate' });
    await assert.rejects(attest(issuer), rejectsWith('BAD_TCB_STATUS', /OutOfDate/));
    const report = await attest(issuer, { acceptableTcbStatuses: ['OutOfDate'] });
    assert.equal(report.tcbStatus, 'OutOfDate');
  });

  test('an app-id outside allowedAppIds: APP_NOT_ALLOWED', async () => {
    const other = createDstackIssuer({ authority, identity: { appId: '0a'.repeat(20) } });
    await assert.rejects(
      attest(other, { allowedAppIds: [issuer.expected.appId] }),
      rejectsWith('APP_NOT_ALLOWED'),
    );
  });

  test('a wrong key binding or events that do not replay fail before any API request', async () => {
    const requestsBefore = server.requests.length;
    const bound = createDstackIssuer({
      authority,
      faults: { bindTo: (await issuer.issueTlsKey()).spki },
    });
    await assert.rejects(attest(bound), rejectsWith('PUBKEY_MISMATCH'));
    const tampered = createDstackIssuer({ authority, faults: { tamperEvents: true } });
    await assert.rejects(attest(tampered), rejectsWith('RTMR_MISMATCH'));
    assert.equal(server.requests.length, requestsBefore);
  });
});
