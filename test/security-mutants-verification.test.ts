/**
 * Tests that pin the Trust Authority token checks of src/verification/jwt.ts at
 * their exact edges (issue 10, mutation testing): the clock-skew boundaries of
 * exp, nbf and iat, which algorithms and keys can ever verify, and what a
 * malformed token is refused as. jose does the signature and time checks; these
 * tests hold whatever does them to the same edges. Also the collateral shape
 * and validity window (collateral.ts) at each of their rules. Pure: real RSA and
 * EC keys, the Intel v4 fixture collateral, no network.
 */
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isRaTlsError, type RaTlsError } from '../src/errors.js';
import {
  bitString,
  ecdsaWithSha256,
  integer,
  sequence,
  time,
} from '../src/testing/authority/der.js';
import {
  type Collateral,
  collateralWindow,
  normalizeCollateral,
} from '../src/verification/collateral.js';
import {
  localTokenKeys,
  MAX_TOKEN_LENGTH,
  readJwks,
  type TokenKeys,
  verifyAttestationToken,
} from '../src/verification/jwt.js';
import { rejection } from './support/refusals.js';

const SKEW = 60_000;
const JKU = 'https://portal.trustauthority.intel.com/certs';
const ORIGIN = 'https://portal.trustauthority.intel.com';
const EXP = 1_750_000_000; // seconds

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

function token(
  payload: Record<string, unknown>,
  header: Record<string, unknown> = {},
  signWith: { key: KeyObject; alg: 'PS384' | 'RS256' | 'ES256'; saltLength?: number } = {
    key: rsa.privateKey,
    alg: 'PS384',
  },
): string {
  const input = `${b64({ alg: signWith.alg, typ: 'JWT', kid: 'k1', jku: JKU, ...header })}.${b64(payload)}`;
  const signature =
    signWith.alg === 'ES256'
      ? sign('sha256', Buffer.from(input), { key: signWith.key, dsaEncoding: 'ieee-p1363' })
      : sign(signWith.alg === 'PS384' ? 'sha384' : 'sha256', Buffer.from(input), {
          key: signWith.key,
          ...(signWith.alg === 'PS384'
            ? {
                padding: constants.RSA_PKCS1_PSS_PADDING,
                saltLength: signWith.saltLength ?? 48,
              }
            : {}),
        });
  return `${input}.${signature.toString('base64url')}`;
}

async function check(nowMs: number, publicKey: KeyObject = rsa.publicKey) {
  return {
    keys: await localTokenKeys({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1' }] }),
    jwksOrigin: ORIGIN,
    jwksUrl: JKU,
    now: new Date(nowMs),
    clockToleranceMs: SKEW,
  };
}

async function refused(jwt: string, nowMs: number, message?: RegExp, publicKey?: KeyObject) {
  await assert.rejects(verifyAttestationToken(jwt, await check(nowMs, publicKey)), (error) => {
    assert.ok(isRaTlsError(error, 'TOKEN_INVALID'), `expected TOKEN_INVALID, got ${String(error)}`);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  });
}

describe('token times: the clock-skew boundaries', () => {
  test('exp: accepted a second before exp + skew, refused at exp + skew', async () => {
    const jwt = token({ exp: EXP });
    const verified = await verifyAttestationToken(jwt, await check(EXP * 1000 + SKEW - 1000));
    assert.equal(verified.expMs, EXP * 1000);
    await refused(
      jwt,
      EXP * 1000 + SKEW,
      /expired at 2025-06-15T15:06:40.000Z; check the system clock/,
    );
  });

  test('nbf: accepted from nbf - skew, refused a second earlier', async () => {
    const nbf = EXP - 3600;
    const jwt = token({ exp: EXP, nbf });
    await verifyAttestationToken(jwt, await check(nbf * 1000 - SKEW));
    await refused(jwt, nbf * 1000 - SKEW - 1000, /not valid before/);
  });

  test('iat: up to now + skew is fine, a millisecond more is "issued in the future"', async () => {
    const now = (EXP - 3600) * 1000;
    await verifyAttestationToken(token({ exp: EXP, iat: (now + SKEW) / 1000 }), await check(now));
    await refused(token({ exp: EXP, iat: (now + SKEW + 1) / 1000 }), now, /issued in the future/);
  });

  test('exp is required', async () => {
    await refused(token({ iat: EXP - 10 }), (EXP - 5) * 1000, /"exp"/);
  });
});

describe('which signatures can ever verify', () => {
  const now = (EXP - 60) * 1000;

  test('PS384 and RS256 with the published RSA key verify; a wrong PSS salt length does not', async () => {
    await verifyAttestationToken(token({ exp: EXP }), await check(now));
    await verifyAttestationToken(
      token({ exp: EXP }, {}, { key: rsa.privateKey, alg: 'RS256' }),
      await check(now),
    );
    await refused(
      token({ exp: EXP }, {}, { key: rsa.privateKey, alg: 'PS384', saltLength: 0 }),
      now,
      /signature does not verify with key k1/,
    );
  });

  test('ES256 is refused by name, even signed by the published EC key', async () => {
    await refused(
      token({ exp: EXP }, {}, { key: ec.privateKey, alg: 'ES256' }),
      now,
      /algorithm "ES256"; only PS384 and RS256 are accepted/,
      ec.publicKey,
    );
  });

  test('an ECDSA signature labelled RS256 does not verify against an EC key', async () => {
    const es = token({ exp: EXP }, {}, { key: ec.privateKey, alg: 'ES256' });
    const [, payload, signature] = es.split('.');
    const relabelled = `${b64({ alg: 'RS256', typ: 'JWT', kid: 'k1', jku: JKU })}.${payload}.${signature}`;
    await refused(relabelled, now, undefined, ec.publicKey);
  });

  test('a signature by another RSA key does not verify', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await refused(
      token({ exp: EXP }, {}, { key: other.privateKey, alg: 'PS384' }),
      now,
      /does not verify/,
    );
  });
});

describe('malformed and foreign tokens', () => {
  const now = (EXP - 60) * 1000;

  test('a foreign jku, a missing kid, two or four parts, an empty or oversized token', async () => {
    await refused(
      token({ exp: EXP }, { jku: 'https://evil.example/certs' }),
      now,
      /not the pinned/,
    );
    await refused(
      token({ exp: EXP }, { jku: 'portal.trustauthority.intel.com' }),
      now,
      /not the pinned/,
    );
    await refused(token({ exp: EXP }, { kid: undefined }), now, /no key id/);
    const jwt = token({ exp: EXP });
    const [header, payload] = jwt.split('.');
    await refused(`${header}.${payload}`, now, /three base64url parts/);
    await refused(`${jwt}.AQID`, now, /three base64url parts/);
    await refused('', now, /empty, not a string, or too large/);
    await refused('A'.repeat(MAX_TOKEN_LENGTH + 1), now, /too large/);
    await refused(`!!.${payload}.AQID`, now, /header is not valid base64url JSON/);
  });
});

describe('token refusals: their details, and every failure jose reports', () => {
  const now = (EXP - 60) * 1000;
  /** The refusal of `jwt` checked at `now` (under `keys` if given). */
  async function refusal(jwt: string, keys?: TokenKeys): Promise<RaTlsError> {
    const options = await check(now);
    return rejection(
      verifyAttestationToken(jwt, keys === undefined ? options : { ...options, keys }),
    );
  }

  test('a token that is not a string is refused; the size cap is inclusive', async () => {
    for (const notText of [5, null, ['a.b.c']]) {
      const error = await refusal(notText as unknown as string);
      assert.equal(error.message, 'The attestation token is empty, not a string, or too large');
    }
    const atCap = await refusal('A'.repeat(MAX_TOKEN_LENGTH));
    assert.match(atCap.message, /three base64url parts/);
    assert.deepEqual(atCap.details, {});
  });

  test('a refused algorithm, jku or time is named in details, cut to a bounded length', async () => {
    const alg = await refusal(token({ exp: EXP }, { alg: `HS${'9'.repeat(100)}` }));
    assert.deepEqual(alg.details, { alg: `HS${'9'.repeat(38)}` });
    assert.deepEqual((await refusal(token({ exp: EXP }, { alg: 7 }))).details, { alg: '7' });
    const long = `https://evil.example/${'x'.repeat(300)}`;
    const jku = await refusal(token({ exp: EXP }, { jku: long }));
    assert.deepEqual(jku.details, { jku: long.slice(0, 200) });
    assert.deepEqual((await refusal(token({ exp: EXP }, { jku: undefined }))).details, {
      jku: 'undefined',
    });
    const empty = await refusal(token({ exp: EXP }, { kid: '' }));
    assert.equal(empty.message, 'The attestation token header names no key id (kid)');
    const expired = await refusal(token({ exp: EXP - 3600 }));
    assert.deepEqual(expired.details, { exp: EXP - 3600 });
    assert.ok(expired.cause instanceof Error, 'jose’s error is kept as the cause');
    const early = await refusal(token({ exp: EXP + 7200, nbf: EXP + 3600 }));
    assert.deepEqual(early.details, { nbf: EXP + 3600 });
    assert.ok(early.cause instanceof Error);
    const future = await refusal(token({ exp: EXP + 60, iat: EXP + 30 }));
    assert.deepEqual(future.details, { iat: EXP + 30 });
  });

  test('a time outside Date’s range is shown as Unix seconds', async () => {
    const early = await refusal(token({ exp: 1e20, nbf: 1e19 }));
    assert.equal(
      early.message,
      'The attestation token is not valid before 10000000000000000000 (Unix seconds); check the system clock',
    );
  });

  test('a malformed claim is named by its claim; a malformed exp reads as a missing one', async () => {
    const nbf = await refusal(token({ exp: EXP, nbf: 'soon' }));
    assert.match(nbf.message, /^The attestation token claim "nbf" is invalid \(/);
    assert.deepEqual(nbf.details, { claim: 'nbf' });
    const iat = await refusal(token({ exp: EXP, iat: 'then' }));
    assert.deepEqual(iat.details, { claim: 'iat' });
    const exp = await refusal(token({ exp: 'later' }));
    assert.equal(exp.message, 'The attestation token has no numeric "exp" claim');
    assert.deepEqual(exp.details, {});
  });

  test('an unknown key and a bad signature name the kid', async () => {
    const unknown = await refusal(token({ exp: EXP }, { kid: 'k2' }));
    assert.equal(
      unknown.message,
      `The attestation token is signed with key k2, which ${JKU} does not publish (as an RSA signing key)`,
    );
    assert.deepEqual(unknown.details, { kid: 'k2' });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forged = await refusal(token({ exp: EXP }, {}, { key: other.privateKey, alg: 'PS384' }));
    assert.deepEqual(forged.details, { kid: 'k1' });
  });

  test('a key set that times out is INTEL_API_ERROR; one that is malformed is TOKEN_INVALID', async () => {
    const { errors } = await import('jose');
    const timedOut = await refusal(token({ exp: EXP }), async () => {
      throw new errors.JWKSTimeout();
    });
    assert.equal(timedOut.code, 'INTEL_API_ERROR');
    assert.equal(
      timedOut.message,
      `The JWKS at ${JKU} timed out; raise requestTimeout or check connectivity`,
    );
    assert.ok(timedOut.cause instanceof errors.JWKSTimeout);
    for (const error of [new errors.JWKSInvalid(), new errors.JWKInvalid()]) {
      const malformed = await refusal(token({ exp: EXP }), async () => {
        throw error;
      });
      assert.equal(malformed.code, 'TOKEN_INVALID');
      assert.equal(malformed.message, `The JWKS at ${JKU} is malformed`);
      assert.deepEqual(malformed.details, { kid: 'k1' });
      assert.equal(malformed.cause, error);
    }
  });

  test('anything else is TOKEN_INVALID with the first 200 characters of its message', async () => {
    const odd = await refusal(token({ exp: EXP }), async () => {
      throw new Error(`odd ${'y'.repeat(400)}`);
    });
    assert.equal(odd.code, 'TOKEN_INVALID');
    assert.equal(odd.message, `The attestation token is invalid: odd ${'y'.repeat(196)}`);
    const thrown = await refusal(token({ exp: EXP }), async () => {
      throw 'a string';
    });
    assert.equal(thrown.message, 'The attestation token is invalid: a string');
  });

  test('a JWKS document that is not an object with a keys array is refused', async () => {
    for (const document of [undefined, null, 42, 'keys', [], { keys: 'k1' }]) {
      assert.throws(
        () => readJwks(document),
        (error: unknown) =>
          isRaTlsError(error, 'TOKEN_INVALID') &&
          error.message === 'The JWKS document has no "keys" array',
        JSON.stringify(document),
      );
    }
  });

  test('a keys array jose cannot read as a key set is refused as malformed', async () => {
    const error = await rejection(localTokenKeys({ keys: [['not', 'a', 'key']] }));
    assert.equal(error.code, 'TOKEN_INVALID');
    assert.equal(error.message, 'The JWKS document is malformed');
    assert.ok(error.cause instanceof Error, 'jose’s error is kept as the cause');
  });
});

describe('collateral: what normalizeCollateral accepts and what collateralWindow reads', () => {
  const fixture: Collateral = JSON.parse(
    readFileSync(new URL('./fixtures/intel-tdx-v4/collateral.json', import.meta.url), 'utf8'),
  );
  const withJson = (
    field: 'tcb_info' | 'qe_identity',
    edit: (json: Record<string, unknown>) => void,
  ) => {
    const json = JSON.parse(fixture[field]) as Record<string, unknown>;
    edit(json);
    return normalizeCollateral({ ...fixture, [field]: JSON.stringify(json) });
  };
  const refusedAs = (code: string, message: string, field: string) => (error: unknown) => {
    assert.ok(isRaTlsError(error), String(error));
    assert.equal(error.code, code);
    assert.equal(error.message, message);
    assert.deepEqual(error.details, { field });
    return true;
  };

  test('binary fields as hex (any case, 0x), bytes or byte arrays all become lowercase hex', () => {
    const signature = fixture.tcb_info_signature as string;
    const normalized = normalizeCollateral({
      ...fixture,
      tcb_info_signature: `0x${signature.toUpperCase()}`,
      qe_identity_signature: Uint8Array.of(0xab, 0x01),
      root_ca_crl: [0, 255, 16],
    });
    assert.equal(normalized.tcb_info_signature, signature.toLowerCase());
    assert.equal(normalized.qe_identity_signature, 'ab01');
    assert.equal(normalized.root_ca_crl, '00ff10');
    assert.equal(normalized.tcb_info, fixture.tcb_info);
    assert.ok(Object.isFrozen(normalized));
  });

  test('a missing collateral, string field or byte field is refused with the caller’s code', () => {
    assert.throws(
      () => normalizeCollateral(null as unknown as Collateral),
      refusedAs('BAD_CONFIG', 'Collateral field (all) is missing', '(all)'),
    );
    assert.throws(
      () => normalizeCollateral('collateral' as unknown as Collateral, 'COLLATERAL_UNAVAILABLE'),
      refusedAs('COLLATERAL_UNAVAILABLE', 'Collateral field (all) is missing', '(all)'),
    );
    for (const field of ['pck_crl_issuer_chain', 'tcb_info', 'qe_identity_issuer_chain'] as const) {
      for (const value of ['', 42, undefined]) {
        assert.throws(
          () => normalizeCollateral({ ...fixture, [field]: value } as unknown as Collateral),
          refusedAs('BAD_CONFIG', `Collateral field ${field} must be a non-empty string`, field),
        );
      }
    }
    for (const field of ['root_ca_crl', 'pck_crl', 'qe_identity_signature'] as const) {
      for (const value of ['', 'abc', 'zz', [], [256], [1, 256], [-1], [1.5], ['01'], 7]) {
        assert.throws(
          () =>
            normalizeCollateral(
              { ...fixture, [field]: value } as unknown as Collateral,
              'COLLATERAL_UNAVAILABLE',
            ),
          refusedAs(
            'COLLATERAL_UNAVAILABLE',
            `Collateral field ${field} must be non-empty hex, a Uint8Array or an array of bytes`,
            field,
          ),
          `${field} = ${JSON.stringify(value)}`,
        );
      }
    }
  });

  test('the window is the latest start and the earliest end of the four documents', () => {
    const window = collateralWindow(normalizeCollateral(fixture));
    assert.deepEqual(window, {
      notBefore: Date.parse('2025-06-19T10:32:27Z'), // QE identity issueDate
      nextUpdate: Date.parse('2025-07-19T10:00:35Z'), // PCK CRL nextUpdate
      tcbEvaluationDataNumber: 17,
    });
    const tcb = collateralWindow(
      withJson('tcb_info', (json) => {
        json.issueDate = '2025-06-20T00:00:00Z';
        json.nextUpdate = '2025-07-01T00:00:00Z';
      }),
    );
    assert.equal(tcb.notBefore, Date.parse('2025-06-20T00:00:00Z'));
    assert.equal(tcb.nextUpdate, Date.parse('2025-07-01T00:00:00Z'));
  });

  test('tcbEvaluationDataNumber is the lower of the two, and absent unless both carry an integer', () => {
    const lower = (tcb: unknown, qe: unknown) =>
      collateralWindow(
        normalizeCollateral({
          ...fixture,
          tcb_info: JSON.stringify({
            ...JSON.parse(fixture.tcb_info),
            tcbEvaluationDataNumber: tcb,
          }),
          qe_identity: JSON.stringify({
            ...JSON.parse(fixture.qe_identity),
            tcbEvaluationDataNumber: qe,
          }),
        }),
      );
    assert.equal(lower(18, 16).tcbEvaluationDataNumber, 16);
    assert.equal(lower(15, 19).tcbEvaluationDataNumber, 15);
    for (const [tcb, qe] of [
      [17, undefined],
      [undefined, 17],
      [17, 17.5],
      ['17', 17],
    ]) {
      assert.ok(!('tcbEvaluationDataNumber' in lower(tcb, qe)), `${tcb} / ${qe}`);
    }
  });

  test('a CRL without nextUpdate does not end the window', () => {
    const undated = sequence(
      sequence(integer(1), ecdsaWithSha256(), sequence(), time(new Date('2025-01-01T00:00:00Z'))),
      ecdsaWithSha256(),
      bitString(Uint8Array.of(1)),
    );
    const window = collateralWindow(normalizeCollateral({ ...fixture, root_ca_crl: undated }));
    assert.equal(window.nextUpdate, Date.parse('2025-07-19T10:00:35Z'));
  });

  test('TCB info or QE identity without readable dates is refused, naming the document', () => {
    const cases: ReadonlyArray<
      readonly ['tcb_info' | 'qe_identity', string, (json: Record<string, unknown>) => void]
    > = [
      [
        'tcb_info',
        'TCB info',
        (json) => {
          json.issueDate = 1_750_000_000;
        },
      ],
      [
        'tcb_info',
        'TCB info',
        (json) => {
          json.nextUpdate = 'next month';
        },
      ],
      [
        'qe_identity',
        'QE identity',
        (json) => {
          json.issueDate = 'yesterday';
        },
      ],
      [
        'qe_identity',
        'QE identity',
        (json) => {
          delete json.nextUpdate;
        },
      ],
    ];
    for (const [field, label, edit] of cases) {
      assert.throws(
        () => collateralWindow(withJson(field, edit)),
        refusedAs(
          'COLLATERAL_UNAVAILABLE',
          `The collateral ${label} is not JSON with issueDate and nextUpdate; fetch fresh collateral`,
          field,
        ),
      );
    }
    for (const text of ['not json', 'null', '"2025"']) {
      assert.throws(
        () =>
          collateralWindow(normalizeCollateral({ ...fixture, qe_identity: text }), 'BAD_CONFIG'),
        refusedAs(
          'BAD_CONFIG',
          'The collateral QE identity is not JSON with issueDate and nextUpdate; fetch fresh collateral',
          'qe_identity',
        ),
      );
    }
  });
});
