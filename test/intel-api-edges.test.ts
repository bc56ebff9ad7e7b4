/**
 * IntelApiVerifier at its edges, without a Trust Authority server: the claim
 * mapping (debug from any source, advisory ids, missing or malformed claims),
 * which endpoints configuration accepts, and how each HTTP answer and network
 * failure is reported (status bounds, hints, redaction, causes). The HTTP
 * client is a stub `fetch` answering real `Response` objects.
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  IntelApiVerifier,
  type IntelApiVerifierOptions,
  verificationResultFromClaims,
} from '../src/verification/intel-api-verifier.js';
import { refusal, rejection } from './support/refusals.js';

const QUOTE = new Uint8Array(
  readFileSync(new URL('./fixtures/intel-tdx-v4/quote.bin', import.meta.url)),
);
const KEY = 'ita-edge-key-0123456789';
const HEX48 = 'ab'.repeat(48);

/** Claims of a token that maps cleanly, with `changes` applied (undefined removes a claim). */
function claims(changes: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    tdx_mrtd: HEX48,
    tdx_rtmr0: HEX48,
    tdx_rtmr1: HEX48,
    tdx_rtmr2: HEX48,
    tdx_rtmr3: HEX48,
    tdx_report_data: 'cd'.repeat(64),
    attester_tcb_status: 'UpToDate',
    tdx_is_debuggable: false,
  };
  const merged: Record<string, unknown> = { ...base, ...changes };
  for (const [name, value] of Object.entries(merged)) if (value === undefined) delete merged[name];
  return merged;
}

describe('verificationResultFromClaims', () => {
  const map = (changes: Record<string, unknown>) =>
    verificationResultFromClaims(claims(changes), 1);

  test('debug if any source says so: the td_attributes debug bit alone is enough', () => {
    assert.equal(map({}).isDebug, false);
    assert.equal(map({ tdx_td_attributes: '0100000000000000' }).isDebug, true);
    assert.equal(
      map({ tdx_is_debuggable: undefined, tdx_td_attributes: '0100000000000000' }).isDebug,
      true,
    );
    // Bit 0 of the first byte, not any other bit.
    assert.equal(map({ tdx_td_attributes: '0000000010000000' }).isDebug, false);
    assert.equal(map({ tdx_td_attributes: 'fe00000000000000' }).isDebug, false);
    assert.equal(map({ tdx_td_attributes_debug: true }).isDebug, true);
    assert.equal(
      map({ tdx_is_debuggable: undefined, tdx_td_attributes_debug: false }).isDebug,
      false,
    );
  });

  test('a token stating no debug attribute, or one of the wrong type, is refused', () => {
    const none = refusal(() => map({ tdx_is_debuggable: undefined }));
    assert.equal(none.code, 'TOKEN_INVALID');
    assert.equal(
      none.message,
      'The attestation token states no debug attribute (tdx_is_debuggable, tdx_td_attributes_debug or tdx_td_attributes)',
    );
    const text = refusal(() => map({ tdx_is_debuggable: 'false' }));
    assert.equal(text.message, 'The attestation token claim tdx_is_debuggable is not a boolean');
    assert.deepEqual(text.details, { claim: 'tdx_is_debuggable' });
    const attributes = refusal(() => map({ tdx_td_attributes: '01' }));
    assert.deepEqual(attributes.details, { claim: 'tdx_td_attributes' });
    assert.match(attributes.message, /tdx_td_attributes is missing or not 8 bytes of hex/);
  });

  test('advisory ids: absent or null is none; anything but a list of strings is refused', () => {
    assert.deepEqual(map({}).advisoryIds, []);
    assert.deepEqual(map({ attester_advisory_ids: null }).advisoryIds, []);
    assert.deepEqual(map({ attester_advisory_ids: ['INTEL-SA-1'] }).advisoryIds, ['INTEL-SA-1']);
    for (const ids of ['INTEL-SA-1', [1], {}, ['a', null]]) {
      const error = refusal(() => map({ attester_advisory_ids: ids }));
      assert.equal(error.code, 'TOKEN_INVALID');
      assert.equal(
        error.message,
        'The attestation token claim attester_advisory_ids is not a list of strings',
      );
    }
  });

  test('a measurement that is not 48 bytes of hex names its claim; no TCB status is refused', () => {
    const short = refusal(() => map({ tdx_rtmr2: 'ab'.repeat(47) }));
    assert.equal(
      short.message,
      'The attestation token claim tdx_rtmr2 is missing or not 48 bytes of hex; this is not a TDX token',
    );
    assert.deepEqual(short.details, { claim: 'tdx_rtmr2' });
    for (const mrtd of [undefined, 'zz'.repeat(48), 42]) {
      const error = refusal(() => map({ tdx_mrtd: mrtd }));
      assert.equal(error.code, 'TOKEN_INVALID');
      assert.deepEqual(error.details, { claim: 'tdx_mrtd' });
    }
    const status = refusal(() => map({ attester_tcb_status: 7 }));
    assert.equal(status.message, 'The attestation token has no attester_tcb_status claim');
  });

  test('claims are read from a "tdx" object only when it is an object', () => {
    const nested = verificationResultFromClaims({ tdx: claims({ tdx_mrtd: 'cd'.repeat(48) }) }, 1);
    assert.equal(nested.mrtd, 'cd'.repeat(48));
    const flat = verificationResultFromClaims({ ...claims(), tdx: ['not', 'claims'] }, 1);
    assert.equal(flat.mrtd, HEX48);
    assert.equal(verificationResultFromClaims({ ...claims(), tdx: null }, 1).mrtd, HEX48);
  });
});

describe('IntelApiVerifier endpoints', () => {
  const make = (options: IntelApiVerifierOptions) =>
    new IntelApiVerifier({ apiKey: KEY, ...options });

  test('https anywhere, plain http only to loopback hosts', () => {
    for (const baseUrl of [
      'https://ita.example.com',
      'http://localhost:8080',
      'http://[::1]:8080',
      'http://127.0.0.1:8080',
      'http://127.10.200.3',
      'http://127.0.0.10',
    ]) {
      assert.doesNotThrow(() => make({ baseUrl }), baseUrl);
    }
    for (const baseUrl of [
      'http://ita.example.com',
      'http://127.0.0.1.example.com',
      'http://localhost.example.com',
      'ftp://127.0.0.1',
      'ws://localhost',
    ]) {
      const error = refusal(() => make({ baseUrl }));
      assert.equal(error.code, 'BAD_CONFIG', baseUrl);
      assert.match(
        error.message,
        /^baseUrl must use https \(plain http is accepted only for 127\.0\.0\.1\/localhost\), got /,
      );
      assert.deepEqual(error.details, { option: 'baseUrl' });
    }
    const jwks = refusal(() => make({ jwksUrl: 'http://keys.example.com/certs' }));
    assert.deepEqual(jwks.details, { option: 'jwksUrl' });
  });

  test('an endpoint that is not an absolute URL, and an unknown region, are named', () => {
    const relative = refusal(() => make({ baseUrl: '/appraisal' }));
    assert.equal(relative.message, 'baseUrl must be an absolute URL, got "/appraisal"');
    assert.deepEqual(relative.details, { option: 'baseUrl' });
    const region = refusal(() => make({ region: 'mars' as 'us' }));
    assert.equal(region.message, `region must be 'us' or 'eu', got "mars"`);
    assert.deepEqual(region.details, { option: 'region' });
  });

  test('a bad duration and an unknown option are named, and the verifier names itself', () => {
    assert.deepEqual(refusal(() => make({ jwksCacheTtl: 'soon' })).details, {
      option: 'jwksCacheTtl',
    });
    assert.deepEqual(refusal(() => make({ requestTimeout: 'soon' })).details, {
      option: 'requestTimeout',
    });
    const unknown = refusal(() => make({ apikey: KEY } as IntelApiVerifierOptions));
    assert.equal(unknown.code, 'BAD_CONFIG');
    assert.match(unknown.message, /^IntelApiVerifier has no option "apikey"/);
    assert.equal(make({}).name, 'intel-api');
  });

  test('an API key of only spaces is no key; a key with spaces around it is sent trimmed', async () => {
    const blank = refusal(
      () => new IntelApiVerifier({ apiKey: '   ', baseUrl: 'http://127.0.0.1:1' }),
    );
    assert.equal(blank.code, 'BAD_CONFIG');
    assert.deepEqual(blank.details, { option: 'apiKey' });
    const sent: Array<Record<string, string>> = [];
    const verifier = new IntelApiVerifier({
      apiKey: `  ${KEY}  `,
      baseUrl: 'http://127.0.0.1:1/base///',
      fetch: async (url, init) => {
        assert.equal(String(url), 'http://127.0.0.1:1/base/appraisal/v2/attest');
        sent.push(init?.headers as Record<string, string>);
        return new Response('{}', { status: 200 });
      },
    });
    await rejection(verifier.verify(QUOTE));
    assert.equal(sent[0]?.['x-api-key'], KEY);
  });
});

describe('IntelApiVerifier HTTP answers and failures', () => {
  const BASE = 'http://127.0.0.1:1';
  const ATTEST = `Intel Trust Authority (${BASE}/appraisal/v2/attest)`;
  const answering = (status: number, body: string, options: IntelApiVerifierOptions = {}) =>
    new IntelApiVerifier({
      apiKey: KEY,
      baseUrl: BASE,
      fetch: async () => new Response(body, { status }),
      ...options,
    });

  test('2xx is an answer, whatever its code; 300 and up is an error', async () => {
    const ok = await rejection(answering(299, '{}').verify(QUOTE));
    assert.equal(ok.message, `${ATTEST} answered HTTP 299 without a token`);
    assert.deepEqual(ok.details, { status: 299 });
    const redirect = await rejection(answering(300, 'moved').verify(QUOTE));
    assert.equal(redirect.message, `${ATTEST} answered HTTP 300: moved`);
    assert.deepEqual(redirect.details, { status: 300 });
  });

  test('401 and 403 add the API-key hint, other errors do not; an empty body adds no text', async () => {
    const hint = `; check the API key (apiKey option or INTEL_TRUST_AUTHORITY_API_KEY) and its region`;
    for (const status of [401, 403]) {
      const error = await rejection(answering(status, 'denied').verify(QUOTE));
      assert.equal(error.message, `${ATTEST} answered HTTP ${status}: denied${hint}`);
    }
    const missing = await rejection(answering(404, '').verify(QUOTE));
    assert.equal(missing.message, `${ATTEST} answered HTTP 404`);
  });

  test('error text loses control characters and the API key, and is cut to 300 characters', async () => {
    const echoed = await rejection(
      answering(500, `bad\r\n\t\u0000request ${KEY}\u007f!`).verify(QUOTE),
    );
    assert.equal(echoed.message, `${ATTEST} answered HTTP 500: bad request [redacted] !`);
    const long = await rejection(answering(500, 'x'.repeat(1000)).verify(QUOTE));
    assert.equal(long.message, `${ATTEST} answered HTTP 500: ${'x'.repeat(300)}`);
    const padded = await rejection(answering(500, '\n  denied \r\n ').verify(QUOTE));
    assert.equal(padded.message, `${ATTEST} answered HTTP 500: denied`);
    const blank = await rejection(answering(500, ' \r\n\t ').verify(QUOTE));
    assert.equal(blank.message, `${ATTEST} answered HTTP 500`);
  });

  test('a body over 1 MiB is refused as too large; a body that breaks off is a failure', async () => {
    const large = await rejection(answering(200, 'x'.repeat(1024 * 1024 + 1)).verify(QUOTE));
    assert.equal(large.code, 'INTEL_API_ERROR');
    assert.equal(
      large.message,
      `${ATTEST} answered more than 1048576 bytes; check baseUrl/jwksUrl point at Intel Trust Authority`,
    );
    const broken = await rejection(
      answering(200, '', {
        fetch: async () =>
          new Response(
            new ReadableStream<Uint8Array>({
              pull(controller) {
                controller.error(new Error('connection reset'));
              },
            }),
            { status: 200 },
          ),
      }).verify(QUOTE),
    );
    assert.equal(broken.code, 'INTEL_API_ERROR');
    assert.equal(broken.message, `${ATTEST} failed: connection reset`);
  });

  test('an error response from a custom fetch (status 0) is an HTTP error, not an answer', async () => {
    const error = await rejection(
      answering(200, '', { fetch: async () => Response.error() }).verify(QUOTE),
    );
    assert.equal(error.code, 'INTEL_API_ERROR');
    assert.equal(error.message, `${ATTEST} answered HTTP 0`);
    assert.deepEqual(error.details, { status: 0 });
  });

  test('no abort listener is left on the request signal once an exchange is over', async () => {
    const signals: AbortSignal[] = [];
    const verifier = answering(200, '', {
      fetch: async (_url, init) => {
        if (init?.signal) signals.push(init.signal);
        return new Response('{}', { status: 200 });
      },
    });
    await rejection(verifier.verify(QUOTE));
    await rejection(verifier.verify(QUOTE, { signal: new AbortController().signal }));
    assert.equal(signals.length, 2);
    for (const signal of signals) assert.equal(getEventListeners(signal, 'abort').length, 0);
  });

  test('a 200 answer whose body is not JSON, is null, or has no string token has no token', async () => {
    for (const body of ['not json', 'null', '{"token":5}']) {
      const error = await rejection(answering(200, body).verify(QUOTE));
      assert.equal(error.message, `${ATTEST} answered HTTP 200 without a token`, body);
    }
  });

  test('the request refuses redirects and carries an abort signal', async () => {
    let seen: RequestInit | undefined;
    const verifier = answering(200, '{}', {
      fetch: async (_url, init) => {
        seen = init;
        return new Response('{}', { status: 200 });
      },
    });
    await rejection(verifier.verify(QUOTE));
    assert.equal(seen?.redirect, 'error');
    assert.equal(seen?.method, 'POST');
    assert.ok(seen?.signal instanceof AbortSignal);
  });

  test('a network failure names its cause, redacted; a caller abort and a timeout are told apart', async () => {
    const failing = answering(200, '', {
      fetch: async () => {
        throw new TypeError(`fetch failed for ${KEY}`, {
          cause: new Error(`connect ECONNREFUSED\n${KEY}`),
        });
      },
    });
    const network = await rejection(failing.verify(QUOTE));
    assert.equal(
      network.message,
      `${ATTEST} failed: fetch failed for [redacted] (connect ECONNREFUSED [redacted])`,
    );
    const plain = await rejection(
      answering(200, '', {
        fetch: async () => {
          throw new Error('socket hang up');
        },
      }).verify(QUOTE),
    );
    assert.equal(plain.message, `${ATTEST} failed: socket hang up`);

    const stalled: typeof fetch = () => new Promise(() => {});
    const caller = new AbortController();
    const reason = new Error('caller gave up');
    const aborted = answering(200, '', { fetch: stalled }).verify(QUOTE, { signal: caller.signal });
    caller.abort(reason);
    const byCaller = await rejection(aborted);
    assert.equal(byCaller.message, `${ATTEST} was aborted by the caller`);
    assert.equal(byCaller.cause, reason);

    // AbortSignal.timeout's timer is unref'd; a real socket would keep the loop alive.
    const keepAlive = setTimeout(() => {}, 10_000);
    const timedOut = await rejection(
      answering(200, '', { fetch: stalled, requestTimeout: '50ms' }).verify(QUOTE),
    );
    clearTimeout(keepAlive);
    assert.equal(
      timedOut.message,
      `${ATTEST} timed out after 50 ms; raise requestTimeout or check connectivity`,
    );
    assert.deepEqual(timedOut.details, { timeoutMs: 50 });
  });

  test('the JWKS: an HTTP error names status and URL; a body that is not JSON is TOKEN_INVALID', async () => {
    const JWKS = `${BASE}/certs`;
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const token = `${b64({ alg: 'PS384', kid: 'k1', jku: JWKS })}.${b64({ exp: 2e9 })}.AAAA`;
    const jwksRequests: RequestInit[] = [];
    const withJwks = (status: number, body: string) =>
      new IntelApiVerifier({
        apiKey: KEY,
        baseUrl: BASE,
        jwksUrl: JWKS,
        fetch: async (url, init) => {
          if (String(url) !== JWKS) return new Response(JSON.stringify({ token }), { status: 200 });
          jwksRequests.push(init ?? {});
          return new Response(body, { status });
        },
      });
    const failed = await rejection(withJwks(503, 'down').verify(QUOTE));
    assert.equal(jwksRequests[0]?.method, 'GET');
    assert.deepEqual(jwksRequests[0]?.headers, { Accept: 'application/json' });
    assert.equal(jwksRequests[0]?.redirect, 'error');
    assert.equal(failed.code, 'INTEL_API_ERROR');
    assert.equal(failed.message, `The JWKS at ${JWKS} answered HTTP 503`);
    assert.deepEqual(failed.details, { status: 503, url: JWKS });
    const garbled = await rejection(withJwks(200, '<html>').verify(QUOTE));
    assert.equal(garbled.code, 'TOKEN_INVALID');
    assert.equal(garbled.message, `The JWKS at ${JWKS} is not JSON; check jwksUrl`);
  });
});
