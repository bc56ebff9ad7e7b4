/**
 * Tests that pin the Trust Authority token checks of src/verification/jwt.ts at
 * their exact edges (issue 10, mutation testing): the clock-skew boundaries of
 * exp, nbf and iat, which algorithms and keys can ever verify, and what a
 * malformed token or JWKS is refused as. Pure: real RSA and EC keys, no I/O.
 */
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import {
  acceptedAlgorithm,
  checkTokenTimes,
  decodeJwt,
  parseJwks,
  verifyJwtSignature,
} from '../src/verification/jwt.js';

const NOW = 1_750_000_000_000;
const SKEW = 60_000;

function tokenInvalid(run: () => unknown, message?: RegExp, details?: Record<string, unknown>) {
  assert.throws(run, (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, 'TOKEN_INVALID', error.message);
    if (message !== undefined) assert.match(error.message, message);
    if (details !== undefined) assert.deepEqual(error.details, details);
    return true;
  });
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('checkTokenTimes: the clock-skew boundaries', () => {
  const exp = NOW / 1000;

  test('exp: valid up to exp + skew inclusive, refused one millisecond later', () => {
    assert.equal(checkTokenTimes({ exp }, NOW + SKEW, SKEW), NOW);
    tokenInvalid(
      () => checkTokenTimes({ exp }, NOW + SKEW + 1, SKEW),
      new RegExp(
        `^The attestation token expired at ${new Date(NOW).toISOString()}; check the system clock`,
      ),
      { exp },
    );
  });

  test('nbf: valid from nbf - skew inclusive, refused one millisecond earlier', () => {
    const nbf = (NOW + 10 * SKEW) / 1000;
    const later = { exp: exp + 3600, nbf };
    assert.doesNotThrow(() => checkTokenTimes(later, nbf * 1000 - SKEW, SKEW));
    tokenInvalid(
      () => checkTokenTimes(later, nbf * 1000 - SKEW - 1, SKEW),
      new RegExp(
        `^The attestation token is not valid before ${new Date(nbf * 1000).toISOString()}`,
      ),
      { nbf },
    );
  });

  test('iat: up to now + skew is fine, one millisecond more is "issued in the future"', () => {
    const iat = (NOW + SKEW) / 1000;
    assert.doesNotThrow(() => checkTokenTimes({ exp: exp + 3600, iat }, NOW, SKEW));
    tokenInvalid(
      () => checkTokenTimes({ exp: exp + 3600, iat: iat + 0.001 }, NOW, SKEW),
      /^The attestation token was issued in the future \(/,
      { iat: iat + 0.001 },
    );
  });

  test('exp is required and numeric; nbf and iat, when present, must be finite numbers', () => {
    for (const bad of [undefined, '1750000000', Number.NaN, Number.POSITIVE_INFINITY]) {
      tokenInvalid(() => checkTokenTimes({ exp: bad }, NOW, SKEW), /no numeric "exp" claim/);
    }
    for (const bad of ['0', Number.NaN, null]) {
      tokenInvalid(
        () => checkTokenTimes({ exp: exp + 60, nbf: bad }, NOW, SKEW),
        /"nbf" claim is not a number/,
      );
      tokenInvalid(
        () => checkTokenTimes({ exp: exp + 60, iat: bad }, NOW, SKEW),
        /"iat" claim is not a number/,
      );
    }
  });

  test('an absurd expiry is shown in Unix seconds, not as an invalid date', () => {
    tokenInvalid(
      () => checkTokenTimes({ exp: -1e15 }, NOW, SKEW),
      /expired at -1000000000000000 \(Unix seconds\)/,
    );
  });
});

describe('decodeJwt: only three base64url parts with JSON-object header and payload', () => {
  const header = b64({ alg: 'PS384', kid: 'k1' });
  const payload = b64({ exp: 1 });

  test('decodes header, payload, signing input and signature bytes', () => {
    const jwt = decodeJwt(`${header}.${payload}.AQID`);
    assert.deepEqual(jwt.header, { alg: 'PS384', kid: 'k1' });
    assert.deepEqual(jwt.payload, { exp: 1 });
    assert.equal(jwt.signingInput, `${header}.${payload}`);
    assert.deepEqual(jwt.signature, new Uint8Array([1, 2, 3]));
  });

  test('empty, oversized, non-string, two- or four-part and non-base64url tokens are refused', () => {
    for (const token of [
      '',
      42,
      `${header}.${payload}`,
      `${header}.${payload}.AQID.AQID`,
      `${header}.${payload}.AQ+D`,
    ]) {
      tokenInvalid(() => decodeJwt(token as string));
    }
    const padding = 'A'.repeat(256 * 1024 - header.length - payload.length - 2);
    assert.equal(decodeJwt(`${header}.${payload}.${padding}`).signingInput, `${header}.${payload}`);
    tokenInvalid(
      () => decodeJwt(`${header}.${payload}.${padding}A`),
      /empty, not a string, or too large/,
    );
  });

  test('a header or payload that is not a JSON object says which part', () => {
    tokenInvalid(
      () => decodeJwt(`${b64([1])}.${payload}.AQID`),
      /token header is not a JSON object/,
    );
    tokenInvalid(
      () => decodeJwt(`${header}.${b64(null)}.AQID`),
      /token payload is not a JSON object/,
    );
    tokenInvalid(
      () => decodeJwt(`${header}.${b64('x')}.AQID`),
      /token payload is not a JSON object/,
    );
    tokenInvalid(
      () => decodeJwt(`${header}.${Buffer.from('{').toString('base64url')}.AQID`),
      /token payload is not valid base64url JSON/,
    );
  });
});

describe('signatures: only PS384 and RS256 with RSA keys', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signed = (alg: 'PS384' | 'RS256', key: KeyObject = rsa.privateKey) => {
    const input = `${b64({ alg })}.${b64({ exp: 1 })}`;
    const signature =
      alg === 'PS384'
        ? sign('sha384', Buffer.from(input), {
            key,
            padding: constants.RSA_PKCS1_PSS_PADDING,
            saltLength: 48,
          })
        : sign('sha256', Buffer.from(input), key);
    return decodeJwt(`${input}.${signature.toString('base64url')}`);
  };

  test('each accepted algorithm verifies its own signature and not the other one', () => {
    assert.equal(verifyJwtSignature(signed('PS384'), 'PS384', rsa.publicKey), true);
    assert.equal(verifyJwtSignature(signed('RS256'), 'RS256', rsa.publicKey), true);
    assert.equal(verifyJwtSignature(signed('RS256'), 'PS384', rsa.publicKey), false);
    assert.equal(verifyJwtSignature(signed('PS384'), 'RS256', rsa.publicKey), false);
  });

  test('a PS384 signature with another salt length is refused', () => {
    const input = `${b64({ alg: 'PS384' })}.${b64({ exp: 1 })}`;
    const signature = sign('sha384', Buffer.from(input), {
      key: rsa.privateKey,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: 32,
    });
    const jwt = decodeJwt(`${input}.${signature.toString('base64url')}`);
    assert.equal(verifyJwtSignature(jwt, 'PS384', rsa.publicKey), false);
  });

  test('a non-RSA key never verifies, and a garbage signature is false, not a throw', () => {
    assert.equal(verifyJwtSignature(signed('RS256'), 'RS256', ec.publicKey), false);
    // An ECDSA signature by an EC key would verify under "sha256" if the key type were not checked.
    const input = `${b64({ alg: 'RS256' })}.${b64({ exp: 1 })}`;
    const ecdsa = sign('sha256', Buffer.from(input), ec.privateKey).toString('base64url');
    assert.equal(verifyJwtSignature(decodeJwt(`${input}.${ecdsa}`), 'RS256', ec.publicKey), false);
    const garbage = decodeJwt(`${b64({ alg: 'PS384' })}.${b64({})}.AQID`);
    assert.equal(verifyJwtSignature(garbage, 'PS384', rsa.publicKey), false);
  });

  test('none, HS256, ES256 and a missing alg are refused, naming the alg', () => {
    assert.equal(acceptedAlgorithm({ alg: 'PS384' }), 'PS384');
    assert.equal(acceptedAlgorithm({ alg: 'RS256' }), 'RS256');
    for (const alg of ['none', 'HS256', 'ES256', 'ps384']) {
      tokenInvalid(
        () => acceptedAlgorithm({ alg }),
        new RegExp(`uses algorithm "${alg}"; only PS384 and RS256 are accepted`),
        { alg },
      );
    }
    tokenInvalid(() => acceptedAlgorithm({}), /algorithm undefined/, { alg: 'undefined' });
    tokenInvalid(() => acceptedAlgorithm({ alg: 5 }), undefined, { alg: '5' });
  });

  test('parseJwks keeps importable RSA keys by kid and skips everything else', () => {
    const jwk = rsa.publicKey.export({ format: 'jwk' });
    const keys = parseJwks({
      keys: [
        { ...jwk, kid: 'good' },
        { ...jwk },
        { ...jwk, kid: 7 },
        { ...ec.publicKey.export({ format: 'jwk' }), kid: 'ec' },
        { kty: 'RSA', kid: 'no-n', e: jwk.e },
        { kty: 'RSA', kid: 'no-e', n: jwk.n },
        null,
        'key',
      ],
    });
    assert.deepEqual([...keys.keys()], ['good']);
    assert.equal(verifyJwtSignature(signed('PS384'), 'PS384', keys.get('good')!), true);
    for (const document of [null, {}, { keys: {} }, 'keys', [jwk]]) {
      tokenInvalid(() => parseJwks(document), /^The JWKS document has no "keys" array$/);
    }
  });
});
