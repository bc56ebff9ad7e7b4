import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, beforeEach, describe, test } from 'node:test';
import { isRaTlsError, type RaTlsError } from '../src/errors.js';
import { parseQuote } from '../src/evidence/quote.js';
import {
  startTrustAuthorityServer,
  type TrustAuthorityServer,
} from '../src/testing/trust-authority-server.js';
import { toHex } from '../src/util/bytes.js';
import {
  INTEL_API_KEY_ENV,
  INTEL_TRUST_AUTHORITY_REGIONS,
  IntelApiVerifier,
  type IntelApiVerifierOptions,
} from '../src/verification/intel-api-verifier.js';
import { localTokenKeys, verifyAttestationToken } from '../src/verification/jwt.js';

const QUOTE = new Uint8Array(
  readFileSync(new URL('./fixtures/intel-tdx-v4/quote.bin', import.meta.url)),
);
const MRTD =
  '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7';
const RTMR0 =
  '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0';
const SECRET_KEY = 'ita-secret-key-0123456789abcdef';

function rejectsWith(code: string, pattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };
}

describe('IntelApiVerifier against a local Trust Authority', () => {
  let server: TrustAuthorityServer;
  const verifierFor = (options: IntelApiVerifierOptions = {}) =>
    new IntelApiVerifier({
      apiKey: SECRET_KEY,
      baseUrl: server.url,
      jwksUrl: server.jwksUrl,
      ...options,
    });

  before(async () => {
    server = await startTrustAuthorityServer({ apiKey: SECRET_KEY });
  });
  after(() => server.close());
  beforeEach(() => server.configure({}));

  test('a good token yields the measurements of the submitted quote', async () => {
    // Given a verifier pinned to the local Trust Authority
    const verifier = verifierFor();
    // When it verifies the real v4 fixture quote
    const result = await verifier.verify(QUOTE);
    // Then the result carries the quote's own measurements, unjudged
    assert.equal(result.verifier, 'intel-api');
    assert.equal(result.mrtd, MRTD);
    assert.equal(result.rtmr0, RTMR0);
    assert.equal(result.rtmr3, '0'.repeat(96));
    assert.equal(result.tcbStatus, 'UpToDate');
    assert.equal(result.isDebug, false);
    assert.deepEqual(result.advisoryIds, []);
    assert.equal(toHex(result.reportData), toHex(QUOTE.subarray(568, 632)));
    assert.ok(result.validUntil !== undefined && result.validUntil > Date.now());
  });

  test('the request carries the API key header, JSON headers and the base64 quote', async () => {
    await verifierFor().verify(QUOTE);
    const request = server.requests.at(-1);
    assert.ok(request);
    assert.equal(request.path, '/appraisal/v2/attest');
    assert.equal(request.apiKey, SECRET_KEY);
    assert.equal(request.contentType, 'application/json');
    assert.equal(request.accept, 'application/json');
    assert.deepEqual(request.body, {
      quote: Buffer.from(QUOTE).toString('base64'),
      token_signing_alg: 'PS384',
    });
  });

  test('claims nested under "tdx" (token ver 2.x) are read the same way', async () => {
    server.configure({ nestTdxClaims: true, advisoryIds: ['INTEL-SA-00837'] });
    const result = await verifierFor().verify(QUOTE);
    assert.equal(result.mrtd, MRTD);
    assert.deepEqual(result.advisoryIds, ['INTEL-SA-00837']);
  });

  test('status, debug and advisories are reported as stated, not judged', async () => {
    server.configure({ tcbStatus: 'OutOfDate', debug: true, advisoryIds: ['INTEL-SA-00615'] });
    const result = await verifierFor().verify(QUOTE);
    assert.equal(result.tcbStatus, 'OutOfDate');
    assert.equal(result.isDebug, true);
    assert.deepEqual(result.advisoryIds, ['INTEL-SA-00615']);
  });

  test('a status this library does not know becomes Unknown', async () => {
    server.configure({ tcbStatus: 'SomethingNew' });
    assert.equal((await verifierFor().verify(QUOTE)).tcbStatus, 'Unknown');
  });

  test('a token signed by a key other than the published one is refused', async () => {
    server.configure({ signWithWrongKey: true });
    await assert.rejects(verifierFor().verify(QUOTE), rejectsWith('TOKEN_INVALID', /signature/));
  });

  test('a token naming a foreign jku is refused and the foreign key set is never fetched', async () => {
    // Given an attacker's Trust Authority whose tokens point at its own JWKS
    const attacker = await startTrustAuthorityServer({ apiKey: SECRET_KEY });
    try {
      // When our verifier (JWKS pinned to the real server) is sent to the attacker's API
      const verifier = verifierFor({ baseUrl: attacker.url });
      // Then the token is refused before any key is fetched from the attacker
      await assert.rejects(verifier.verify(QUOTE), rejectsWith('TOKEN_INVALID', /pinned/));
      assert.equal(attacker.jwksRequests, 0);
    } finally {
      await attacker.close();
    }
  });

  test('a jku on another host but the same path is refused', async () => {
    server.configure({ jku: server.jwksUrl.replace('127.0.0.1', 'localhost') });
    await assert.rejects(verifierFor().verify(QUOTE), rejectsWith('TOKEN_INVALID', /jku|pinned/));
  });

  for (const alg of ['none', 'HS256'] as const) {
    test(`alg ${alg} is refused even when "signed" with the public key`, async () => {
      server.configure({ alg });
      await assert.rejects(verifierFor().verify(QUOTE), rejectsWith('TOKEN_INVALID', /algorithm/));
    });
  }

  test('RS256 tokens are accepted', async () => {
    server.configure({ alg: 'RS256' });
    assert.equal((await verifierFor().verify(QUOTE)).mrtd, MRTD);
  });

  test('an expired token is refused', async () => {
    server.configure({ expiresAt: Math.floor(Date.now() / 1000) - 3600 });
    await assert.rejects(verifierFor().verify(QUOTE), rejectsWith('TOKEN_INVALID', /expired/));
  });

  test('a token is judged at the verify-time `now`', async () => {
    const result = await verifierFor().verify(QUOTE);
    const later = new Date((result.validUntil ?? 0) + 3_600_000);
    await assert.rejects(
      verifierFor().verify(QUOTE, { now: later }),
      rejectsWith('TOKEN_INVALID', /expired/),
    );
  });

  test('keys are cached; an unknown kid costs exactly one refetch, then fails', async () => {
    // Given a verifier that has fetched the JWKS once
    const verifier = verifierFor();
    const before = server.jwksRequests;
    await verifier.verify(QUOTE);
    await verifier.verify(QUOTE);
    assert.equal(server.jwksRequests, before + 1);
    // When a token names a key the JWKS does not publish
    server.configure({ kid: 'rotated-away' });
    await assert.rejects(verifier.verify(QUOTE), rejectsWith('TOKEN_INVALID', /rotated-away/));
    // Then the JWKS was fetched exactly once more
    assert.equal(server.jwksRequests, before + 2);
  });

  test('close() forgets the cached keys: the next verify fetches the JWKS again', async () => {
    const verifier = verifierFor();
    const before = server.jwksRequests;
    await verifier.verify(QUOTE);
    verifier.close();
    await verifier.verify(QUOTE);
    assert.equal(server.jwksRequests, before + 2);
  });

  test('a genuine token about a different quote is refused', async () => {
    // Given a Trust Authority that answers with measurements of another TD
    server.configure({ claims: { tdx_mrtd: 'ab'.repeat(48) } });
    // Then the token does not vouch for the submitted quote
    await assert.rejects(verifierFor().verify(QUOTE), rejectsWith('VERIFIER_MISMATCH', /mrtd/));
    // Every differing field is named, in the message and the details
    server.configure({ claims: { tdx_mrtd: 'ab'.repeat(48), tdx_rtmr2: 'cd'.repeat(48) } });
    await assert.rejects(verifierFor().verify(QUOTE), (error: RaTlsError) => {
      rejectsWith('VERIFIER_MISMATCH')(error);
      assert.equal(
        error.message,
        'Intel Trust Authority returned a token about a different quote (mrtd, rtmr2 differ); refusing it',
      );
      assert.deepEqual(error.details, {
        differing: ['mrtd', 'rtmr2'],
        tokenMrtd: 'ab'.repeat(48),
        quoteMrtd: MRTD,
      });
      return true;
    });
    server.configure({ claims: { tdx_report_data: '00'.repeat(64) } });
    await assert.rejects(
      verifierFor().verify(QUOTE),
      rejectsWith('VERIFIER_MISMATCH', /reportData/),
    );
  });

  test('the second real v4 quote verifies with its own measurements', async () => {
    const other = new Uint8Array(
      readFileSync(new URL('./fixtures/intel-tdx-v4-b/quote.bin', import.meta.url)),
    );
    const result = await verifierFor().verify(other);
    assert.equal(result.mrtd, parseQuote(other).mrtd);
    assert.notEqual(result.mrtd, MRTD);
  });

  test('an SGX quote is refused before anything is sent', async () => {
    const sgx = new Uint8Array(
      readFileSync(new URL('./fixtures/intel-sgx-v3/quote.bin', import.meta.url)),
    );
    const sent = server.requests.length;
    await assert.rejects(verifierFor().verify(sgx), rejectsWith('NOT_TDX'));
    assert.equal(server.requests.length, sent);
  });

  test('a token without TDX claims is refused', async () => {
    server.configure({ claims: { tdx_mrtd: undefined } });
    await assert.rejects(verifierFor().verify(QUOTE), rejectsWith('TOKEN_INVALID', /tdx_mrtd/));
  });

  test('a response whose token is not a JWT is refused', async () => {
    server.configure({ status: 200, errorBody: '{"token":"not-a-jwt"}' });
    await assert.rejects(verifierFor().verify(QUOTE), rejectsWith('TOKEN_INVALID'));
  });

  for (const status of [401, 500]) {
    test(`HTTP ${status} becomes INTEL_API_ERROR with the status`, async () => {
      server.configure({ status, errorBody: '{"error":"nope"}' });
      await assert.rejects(verifierFor().verify(QUOTE), (error: RaTlsError) => {
        rejectsWith('INTEL_API_ERROR', new RegExp(`HTTP ${status}.*nope`))(error);
        assert.equal(error.details['status'], status);
        return true;
      });
    });
  }

  test('a wrong API key gets the server 401 and a hint naming the option and env var', async () => {
    await assert.rejects(
      verifierFor({ apiKey: 'wrong-key' }).verify(QUOTE),
      rejectsWith('INTEL_API_ERROR', new RegExp(`401.*apiKey.*${INTEL_API_KEY_ENV}`)),
    );
  });

  test('a stalled API times out with INTEL_API_ERROR', async () => {
    server.configure({ stall: true });
    await assert.rejects(
      verifierFor({ requestTimeout: '200ms' }).verify(QUOTE),
      rejectsWith('INTEL_API_ERROR', /timed out/),
    );
  });

  test('an unreachable API is INTEL_API_ERROR, not a crash', async () => {
    const closed = await startTrustAuthorityServer();
    await closed.close();
    await assert.rejects(
      verifierFor({ baseUrl: closed.url }).verify(QUOTE),
      rejectsWith('INTEL_API_ERROR', /failed/),
    );
  });

  test('an endless answer is INTEL_API_ERROR, and reading stops just past 1 MiB', async () => {
    let pulled = 0;
    const endless: typeof fetch = async () =>
      new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            pulled += 64 * 1024;
            controller.enqueue(new Uint8Array(64 * 1024));
          },
        }),
        { status: 200, headers: { 'content-type': 'application/json' } },
      );
    await assert.rejects(
      verifierFor({ fetch: endless }).verify(QUOTE),
      rejectsWith('INTEL_API_ERROR', /more than 1048576 bytes/),
    );
    assert.ok(pulled <= 2 * 1024 * 1024, `read ${pulled} bytes`);
  });

  test('an answer announcing more than 1 MiB is refused before its body is read', async () => {
    let pulled = 0;
    const announced: typeof fetch = async () =>
      new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            pulled++;
            controller.enqueue(new Uint8Array(16));
            controller.close();
          },
        }),
        { status: 200, headers: { 'content-length': String(2 * 1024 * 1024) } },
      );
    await assert.rejects(
      verifierFor({ fetch: announced }).verify(QUOTE),
      rejectsWith('INTEL_API_ERROR', /more than 1048576 bytes/),
    );
    assert.ok(pulled <= 1, 'at most the first chunk was produced');
  });

  test('the API key never appears in an error message, even when the API echoes it', async () => {
    // Given an API that echoes the key back in its error text
    server.configure({ status: 403, errorBody: `{"error":"key ${SECRET_KEY} is disabled"}` });
    // When verification fails
    const error = await verifierFor()
      .verify(QUOTE)
      .then(
        () => assert.fail('expected a failure'),
        (caught: RaTlsError) => caught,
      );
    // Then the key was sent, but the message shows it redacted
    assert.equal(server.requests.at(-1)?.apiKey, SECRET_KEY);
    assert.ok(!error.message.includes(SECRET_KEY));
    assert.match(error.message, /\[redacted\]/);
    assert.ok(!JSON.stringify(error.details).includes(SECRET_KEY));
  });
});

describe('IntelApiVerifier configuration', () => {
  test('without apiKey or env var it fails with BAD_CONFIG naming both', () => {
    const saved = process.env[INTEL_API_KEY_ENV];
    delete process.env[INTEL_API_KEY_ENV];
    try {
      assert.throws(
        () => new IntelApiVerifier(),
        rejectsWith('BAD_CONFIG', new RegExp(`apiKey.*${INTEL_API_KEY_ENV}`)),
      );
    } finally {
      if (saved !== undefined) process.env[INTEL_API_KEY_ENV] = saved;
    }
  });

  test('the env var supplies the key, and the JWKS is pinned per region', () => {
    const saved = process.env[INTEL_API_KEY_ENV];
    process.env[INTEL_API_KEY_ENV] = SECRET_KEY;
    try {
      assert.equal(new IntelApiVerifier().jwksUrl, 'https://portal.trustauthority.intel.com/certs');
      assert.equal(
        new IntelApiVerifier({ region: 'eu' }).jwksUrl,
        INTEL_TRUST_AUTHORITY_REGIONS.eu.jwksUrl,
      );
    } finally {
      if (saved === undefined) delete process.env[INTEL_API_KEY_ENV];
      else process.env[INTEL_API_KEY_ENV] = saved;
    }
  });

  test('plain http to a non-loopback host is refused, and the key is not printed', () => {
    assert.throws(
      () => new IntelApiVerifier({ apiKey: SECRET_KEY, baseUrl: 'http://ita.example.com' }),
      (error: unknown) =>
        rejectsWith('BAD_CONFIG', /baseUrl.*https/)(error) &&
        !(error as Error).message.includes(SECRET_KEY),
    );
  });

  test('an unknown region and a bad timeout are BAD_CONFIG', () => {
    assert.throws(
      () => new IntelApiVerifier({ apiKey: SECRET_KEY, region: 'asia' as 'us' }),
      rejectsWith('BAD_CONFIG', /region/),
    );
    assert.throws(
      () => new IntelApiVerifier({ apiKey: SECRET_KEY, requestTimeout: 'soon' }),
      rejectsWith('BAD_CONFIG', /requestTimeout/),
    );
  });
});

describe('verifyAttestationToken', () => {
  test('malformed tokens are TOKEN_INVALID, never a crash', async () => {
    const check = {
      keys: await localTokenKeys({ keys: [] }),
      jwksOrigin: 'https://portal.trustauthority.intel.com',
      jwksUrl: 'https://portal.trustauthority.intel.com/certs',
      now: new Date(),
      clockToleranceMs: 60_000,
    };
    for (const token of ['', 'a.b', 'a.b.c.d', '!!.e30.', 'e30.bm90IGpzb24.', 'W10.e30.']) {
      await assert.rejects(verifyAttestationToken(token, check), rejectsWith('TOKEN_INVALID'));
    }
  });

  test('a document that is not a JWKS is TOKEN_INVALID', async () => {
    for (const document of [null, [], {}, { keys: 'k' }]) {
      await assert.rejects(localTokenKeys(document), rejectsWith('TOKEN_INVALID', /keys/));
    }
  });
});
