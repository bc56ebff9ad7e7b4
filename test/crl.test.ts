import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { constants as qvlConstants } from '@phala/dcap-qvl';
import { isRaTlsError } from '../src/errors.js';
import {
  bitString,
  ecdsaWithSha256,
  explicit,
  integer,
  objectIdentifier,
  sequence,
  time,
  tlv,
} from '../src/testing/authority/der.js';
import { deriveP256Key } from '../src/testing/authority/keys.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { fromHex, toHex } from '../src/util/bytes.js';
import { pemBlocks } from '../src/util/pem.js';
import { readCertificateNames } from '../src/util/x509-der.js';
import {
  checkCrlsStrictly,
  checkPckChain,
  isRevoked,
  parseCrl,
  prepareCrls,
  type StrictCrlInput,
  verifyCrl,
} from '../src/verification/crl.js';
import { readPckInfo } from '../src/verification/pck-info.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);
const INTEL_ROOT = new Uint8Array(qvlConstants.TRUSTED_ROOT_CA_DER);

function strictInput(name: string, now: Date): StrictCrlInput {
  const quote = new Uint8Array(readFileSync(new URL(`${name}/quote.bin`, FIXTURES)));
  const collateral = JSON.parse(readFileSync(new URL(`${name}/collateral.json`, FIXTURES), 'utf8'));
  return {
    rootCaCrl: fromHex(collateral.root_ca_crl),
    pckCrl: fromHex(collateral.pck_crl),
    pckCrlIssuerChain: pemBlocks(collateral.pck_crl_issuer_chain),
    pckChain: readPckInfo(quote).chain,
    trustedRootCa: INTEL_ROOT,
    now,
  };
}

function code(expected: string, pattern?: RegExp, details?: Record<string, unknown>) {
  return (error: unknown): boolean => {
    assert.ok(isRaTlsError(error), String(error));
    assert.equal(error.code, expected, error.message);
    if (pattern) assert.match(error.message, pattern);
    if (details) assert.deepEqual(error.details, details);
    return true;
  };
}

describe('strict CRL check on the real Intel CRLs', () => {
  it('accepts the v4 fixture CRLs at the fixture time and reports the earliest nextUpdate', () => {
    const result = checkCrlsStrictly(strictInput('intel-tdx-v4', new Date(1751328000 * 1000)));

    assert.equal(result.validUntil, Date.parse('2025-07-19T10:00:35Z'));
  });

  it('accepts the v4-b and v5 fixture CRLs inside their windows', () => {
    checkCrlsStrictly(strictInput('intel-tdx-v4-b', new Date('2025-09-15T00:00:00Z')));
    checkCrlsStrictly(strictInput('intel-tdx-v5', new Date('2026-03-01T00:00:00Z')));
  });

  it('rejects the PCK CRL at its nextUpdate (the window is half-open)', () => {
    assert.throws(
      () => checkCrlsStrictly(strictInput('intel-tdx-v4', new Date('2025-07-19T10:00:35Z'))),
      code('CRL_INVALID', /PCK CRL is valid from .* until 2025-07-19T10:00:35/),
    );
  });

  it('rejects a CRL before its thisUpdate', () => {
    assert.throws(
      () => checkCrlsStrictly(strictInput('intel-tdx-v4', new Date('2025-06-19T10:00:34Z'))),
      code('CRL_INVALID', /PCK CRL/),
    );
  });

  it('rejects a PCK CRL whose signature was altered', () => {
    const input = strictInput('intel-tdx-v4', new Date(1751328000 * 1000));
    const pckCrl = input.pckCrl.slice();
    pckCrl[pckCrl.length - 3]! ^= 0x01;

    assert.throws(
      () => checkCrlsStrictly({ ...input, pckCrl }),
      code('CRL_INVALID', /PCK CRL signature does not verify/, { crl: 'PCK CRL' }),
    );
  });

  it('rejects a PCK CRL whose revocation list was altered (signed bytes changed)', () => {
    const input = strictInput('intel-tdx-v4', new Date(1751328000 * 1000));
    const crl = parseCrl(input.pckCrl, 'PCK CRL');
    const serial = [...crl.revokedSerials][0]!;
    const at = Buffer.from(input.pckCrl).indexOf(Buffer.from(serial, 'hex'));
    assert.ok(at > 0);
    const pckCrl = input.pckCrl.slice();
    pckCrl[at]! ^= 0x01;

    assert.throws(() => checkCrlsStrictly({ ...input, pckCrl }), code('CRL_INVALID', /signature/));
  });

  it('rejects a CRL signed by a CA other than the one in the collateral', () => {
    const input = strictInput('intel-tdx-v4', new Date(1751328000 * 1000));

    assert.throws(
      () => checkCrlsStrictly({ ...input, pckCrl: input.rootCaCrl }),
      code('CRL_INVALID', /names an issuer other than/, { crl: 'PCK CRL' }),
    );
  });

  it('rejects an issuer chain that ends in another root', async () => {
    const authority = await createTestAuthority({ seed: 'crl-other-root' });
    const input = strictInput('intel-tdx-v4', new Date(1751328000 * 1000));

    assert.throws(
      () => checkCrlsStrictly({ ...input, trustedRootCa: authority.rootCaDer }),
      code('CRL_INVALID', /another root of trust|root CA other than/),
    );
  });

  it('rejects bytes that are not a CRL with CRL_INVALID instead of crashing', () => {
    assert.throws(
      () => parseCrl(new Uint8Array([0x30, 0x03, 0x02, 0x01]), 'PCK CRL'),
      code('CRL_INVALID'),
    );
  });

  it('verifyCrl accepts the root CA CRL signed by Intel and the listed serials are findable', () => {
    const input = strictInput('intel-tdx-v4', new Date(1751328000 * 1000));
    const rootCrl = parseCrl(input.rootCaCrl, 'root CA CRL');
    const pckCrl = parseCrl(input.pckCrl, 'PCK CRL');

    verifyCrl(rootCrl, INTEL_ROOT, input.now, 'root CA CRL');
    assert.equal(pckCrl.revokedSerials.size, 44);
    assert.equal(isRevoked(pckCrl, input.pckChain[0]!), false);
  });
});

describe('strict CRL check with a test root of trust', () => {
  it('finds the revoked PCK leaf and names its serial', async () => {
    const authority = await createTestAuthority({ seed: 'crl-revoked' });
    const collateral = authority.collateral({ revokePck: true });
    const quote = authority.issueQuote();

    assert.throws(
      () =>
        checkCrlsStrictly({
          rootCaCrl: fromHex(collateral.root_ca_crl),
          pckCrl: fromHex(collateral.pck_crl),
          pckCrlIssuerChain: pemBlocks(collateral.pck_crl_issuer_chain),
          pckChain: readPckInfo(quote).chain,
          trustedRootCa: authority.rootCaDer,
          now: new Date(),
        }),
      code('PCK_REVOKED', new RegExp(authority.pckSerialNumber.replace(/^0+/, ''))),
    );
  });
});

describe('strict CRL check: each refusal is its own rule', () => {
  const SEED = 'crl-rules';
  const seedBytes = new TextEncoder().encode(SEED);
  const now = new Date('2026-01-15T12:00:00Z');
  const issueDate = new Date('2026-01-01T00:00:00Z');
  const crlNextUpdate = new Date('2026-02-01T00:00:00Z');

  async function setup(options: { readonly revokedSerials?: readonly string[] } = {}) {
    const authority = await createTestAuthority({ seed: SEED });
    const collateral = authority.collateral({ issueDate, crlNextUpdate, ...options });
    const input: StrictCrlInput = {
      rootCaCrl: fromHex(collateral.root_ca_crl),
      pckCrl: fromHex(collateral.pck_crl),
      pckCrlIssuerChain: pemBlocks(collateral.pck_crl_issuer_chain),
      pckChain: readPckInfo(authority.issueQuote()).chain,
      trustedRootCa: authority.rootCaDer,
      now,
    };
    return { authority, input, prepared: prepareCrls(input) };
  }

  // The authority derives its keys from the seed, so these CRLs are genuinely signed by its CAs.
  function signedCrl(
    label: 'root-ca' | 'pck-platform-ca',
    issuerDer: Uint8Array,
    fields: { readonly nextUpdate?: Date; readonly revoked?: readonly Uint8Array[] },
  ): Uint8Array {
    const key = deriveP256Key(seedBytes, label);
    const issuer = readCertificateNames(issuerDer).subject;
    const entries = (fields.revoked ?? []).map((serial) =>
      sequence(tlv(0x02, serial), time(issueDate)),
    );
    const tbs = sequence(
      integer(1),
      ecdsaWithSha256(),
      issuer,
      time(issueDate),
      ...(fields.nextUpdate === undefined ? [] : [time(fields.nextUpdate)]),
      ...(entries.length > 0 ? [sequence(...entries)] : []),
    );
    return sequence(tbs, ecdsaWithSha256(), bitString(sign('sha256', tbs, key.privateKey)));
  }

  it('accepts a CRL at exactly its thisUpdate (the window is closed at its start)', async () => {
    const { prepared, input } = await setup();
    const result = checkPckChain(prepared, input.pckChain, issueDate);
    assert.equal(result.validUntil, crlNextUpdate.getTime());
    assert.throws(
      () => checkPckChain(prepared, input.pckChain, new Date(issueDate.getTime() - 1)),
      (error: unknown) => {
        assert.ok(isRaTlsError(error));
        assert.equal(error.code, 'CRL_INVALID');
        assert.match(error.message, /root CA CRL is valid from 2026-01-01T00:00:00.000Z until/);
        assert.deepEqual(error.details, {
          crl: 'root CA CRL',
          thisUpdate: '2026-01-01T00:00:00.000Z',
          nextUpdate: '2026-02-01T00:00:00.000Z',
          now: '2025-12-31T23:59:59.999Z',
        });
        return true;
      },
    );
  });

  it('reports the earlier nextUpdate of the two CRLs, whichever it is', async () => {
    const { prepared, input } = await setup();
    const early = new Date('2026-01-20T00:00:00Z');
    for (const which of ['rootCrl', 'pckCrl'] as const) {
      const shorter = { ...prepared, [which]: { ...prepared[which], nextUpdate: early } };
      assert.equal(checkPckChain(shorter, input.pckChain, now).validUntil, early.getTime(), which);
    }
  });

  it('refuses a CRL without nextUpdate when the collateral is prepared, not only when dated', async () => {
    const { input } = await setup();
    const rootCaCrl = signedCrl('root-ca', input.trustedRootCa, {});
    assert.throws(
      () => prepareCrls({ ...input, rootCaCrl }),
      code('CRL_INVALID', /root CA CRL has no nextUpdate/, { crl: 'root CA CRL' }),
    );
    const pckCrl = signedCrl('pck-platform-ca', input.pckCrlIssuerChain[0]!, {});
    assert.throws(
      () => prepareCrls({ ...input, pckCrl }),
      code('CRL_INVALID', /PCK CRL has no nextUpdate/, { crl: 'PCK CRL' }),
    );
    // The per-quote date check refuses it too, whatever handed it the parsed CRL.
    const { prepared } = await setup();
    const undated = { ...prepared, pckCrl: { ...prepared.pckCrl, nextUpdate: undefined } };
    assert.throws(
      () => checkPckChain(undated, input.pckChain, now),
      code('CRL_INVALID', /PCK CRL has no nextUpdate/, { crl: 'PCK CRL' }),
    );
  });

  it('verifies an ecdsa-with-SHA384 CRL signature and refuses an algorithm it does not know', async () => {
    const { prepared, input } = await setup();
    const rootKey = deriveP256Key(seedBytes, 'root-ca');
    const sha384 = {
      ...prepared.rootCrl,
      signatureAlgorithm: '1.2.840.10045.4.3.3',
      signature: new Uint8Array(sign('sha384', prepared.rootCrl.tbs, rootKey.privateKey)),
    };
    verifyCrl(sha384, input.trustedRootCa, now, 'root CA CRL');
    // The same signature under the SHA-256 name does not verify: the digest follows the OID.
    assert.throws(
      () =>
        verifyCrl(
          { ...sha384, signatureAlgorithm: '1.2.840.10045.4.3.2' },
          input.trustedRootCa,
          now,
          'root CA CRL',
        ),
      code('CRL_INVALID', /root CA CRL signature does not verify/),
    );
    assert.throws(
      () =>
        verifyCrl(
          { ...sha384, signatureAlgorithm: '1.2.840.10045.4.3.4' },
          input.trustedRootCa,
          now,
          'root CA CRL',
        ),
      (error: unknown) => {
        assert.ok(isRaTlsError(error));
        assert.equal(error.code, 'CRL_INVALID');
        assert.match(
          error.message,
          /root CA CRL uses the unsupported signature algorithm 1\.2\.840\.10045\.4\.3\.4/,
        );
        assert.deepEqual(error.details, { crl: 'root CA CRL', algorithm: '1.2.840.10045.4.3.4' });
        return true;
      },
    );
  });

  it('refuses, instead of throwing, when the issuing CA key cannot check an ECDSA signature', async () => {
    const { prepared } = await setup();
    // A well-formed certificate whose key is Ed25519: OpenSSL refuses ECDSA-with-SHA256 with it.
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const ed25519 = sequence(objectIdentifier('1.3.101.112'));
    const subject = sequence(
      tlv(0x31, sequence(objectIdentifier('2.5.4.3'), tlv(0x0c, Buffer.from('Ed25519 CA')))),
    );
    const tbs = sequence(
      explicit(0, integer(2)),
      integer(1),
      ed25519,
      subject,
      sequence(time(issueDate), time(crlNextUpdate)),
      subject,
      new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })),
    );
    const issuer = sequence(tbs, ed25519, bitString(sign(null, tbs, privateKey)));
    assert.throws(
      () => verifyCrl({ ...prepared.rootCrl, issuer: subject }, issuer, now, 'root CA CRL'),
      code('CRL_INVALID', /root CA CRL signature does not verify/),
    );
  });

  it('refuses an issuer chain without the issuing CA, or empty', async () => {
    const { input } = await setup();
    for (const chain of [[input.trustedRootCa], []]) {
      assert.throws(
        () => prepareCrls({ ...input, pckCrlIssuerChain: chain }),
        (error: unknown) => {
          assert.ok(isRaTlsError(error));
          assert.equal(error.code, 'CRL_INVALID');
          assert.match(error.message, /must hold the PCK CRL issuing CA and the root CA/);
          assert.deepEqual(error.details, { certificates: chain.length });
          return true;
        },
      );
    }
  });

  it('names what is not a certificate: the trusted root, an issuer-chain member, a quote certificate', async () => {
    const { input, prepared } = await setup();
    const junk = Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x01);
    const refusal = (label: string) => (error: unknown) => {
      assert.ok(isRaTlsError(error));
      assert.equal(error.code, 'CRL_INVALID');
      assert.equal(error.message, `The ${label} is not a DER X.509 certificate`);
      assert.deepEqual(error.details, { certificate: label });
      assert.ok(error.cause instanceof Error);
      return true;
    };
    assert.throws(() => prepareCrls({ ...input, trustedRootCa: junk }), refusal('trusted root CA'));
    assert.throws(
      () => prepareCrls({ ...input, pckCrlIssuerChain: [input.pckCrlIssuerChain[0]!, junk] }),
      refusal('PCK CRL issuer chain certificate 1'),
    );
    assert.throws(
      () => checkPckChain(prepared, [input.pckChain[0]!, junk], now),
      refusal('PCK chain certificate 1 in the quote'),
    );
    assert.throws(
      () => verifyCrl(prepared.rootCrl, junk, now, 'root CA CRL'),
      refusal('issuer of the root CA CRL'),
    );
  });

  it('refuses a quote without a PCK chain', async () => {
    const { prepared } = await setup();
    assert.throws(
      () => checkPckChain(prepared, [], now),
      code('CRL_INVALID', /The quote carries no PCK certificate chain to check/),
    );
  });

  it('looks the leaf up in the PCK CRL and the platform CA up in the root CA CRL', async () => {
    const { prepared, input } = await setup();
    const [leaf, platformCa] = input.pckChain.map((der) => toHex(readCertificateNames(der).serial));
    assert.ok(leaf !== undefined && platformCa !== undefined);
    const revoking = (crl: 'rootCrl' | 'pckCrl', serial: string) => ({
      ...prepared,
      [crl]: { ...prepared[crl], revokedSerials: new Set([serial.replace(/^(00)+/, '')]) },
    });
    const revoked = (position: string, certificate: number) => (error: unknown) => {
      assert.ok(isRaTlsError(error));
      assert.equal(error.code, 'PCK_REVOKED');
      assert.match(
        error.message,
        new RegExp(`The quote's ${position} \\(serial [0-9a-f]+\\) is revoked`),
      );
      assert.equal((error.details as { certificate: number }).certificate, certificate);
      return true;
    };
    assert.throws(
      () => checkPckChain(revoking('pckCrl', leaf), input.pckChain, now),
      revoked('PCK leaf certificate', 0),
    );
    assert.throws(
      () => checkPckChain(revoking('rootCrl', platformCa), input.pckChain, now),
      revoked('PCK chain certificate 1', 1),
    );
    // Each certificate is looked up only in the CRL of its own issuer.
    checkPckChain(revoking('rootCrl', leaf), input.pckChain, now);
    checkPckChain(revoking('pckCrl', platformCa), input.pckChain, now);
  });

  it('does not look the trusted root up in any CRL', async () => {
    const { prepared, input } = await setup();
    assert.equal(input.pckChain.length, 3, 'the quote carries leaf, platform CA and root');
    const rootSerial = toHex(readCertificateNames(input.trustedRootCa).serial).replace(
      /^(00)+/,
      '',
    );
    const selfRevoking = {
      ...prepared,
      rootCrl: { ...prepared.rootCrl, revokedSerials: new Set([rootSerial]) },
    };
    checkPckChain(selfRevoking, input.pckChain, now);
  });

  it('refuses a quote certificate that no CRL of the collateral covers', async () => {
    const { prepared, input } = await setup();
    const uncovered = {
      ...prepared,
      pckCrl: { ...prepared.pckCrl, issuer: Uint8Array.of(0x30, 0x00) },
    };
    assert.throws(
      () => checkPckChain(uncovered, input.pckChain, now),
      (error: unknown) => {
        assert.ok(isRaTlsError(error));
        assert.equal(error.code, 'CRL_INVALID');
        assert.match(
          error.message,
          /No CRL in the collateral covers the quote's PCK leaf certificate/,
        );
        assert.deepEqual(error.details, { certificate: 0 });
        return true;
      },
    );
  });

  it('compares serials without leading zero bytes, and only whole serials', async () => {
    const { input, authority } = await setup();
    const leaf = readCertificateNames(input.pckChain[0]!).serial;
    const issuer = input.pckCrlIssuerChain[0]!;
    // The leaf's serial with one more leading zero byte than DER needs: still the same number.
    const padded = parseCrl(
      signedCrl('pck-platform-ca', issuer, {
        nextUpdate: crlNextUpdate,
        revoked: [Uint8Array.of(0, ...leaf)],
      }),
      'PCK CRL',
    );
    assert.equal(isRevoked(padded, input.pckChain[0]!), true);
    assert.deepEqual([...padded.revokedSerials], [authority.pckSerialNumber.replace(/^(00)+/, '')]);
    // A serial that differs only in its first byte is another certificate.
    const other = leaf.slice();
    other[0] = other[0] === 0x7f ? 0x7e : 0x7f;
    const near = signedCrl('pck-platform-ca', issuer, {
      nextUpdate: crlNextUpdate,
      revoked: [other],
    });
    assert.equal(isRevoked(parseCrl(near, 'PCK CRL'), input.pckChain[0]!), false);
    checkCrlsStrictly({ ...input, pckCrl: near });
  });

  it('reads serial number zero as 00, never as an empty serial', async () => {
    const { input } = await setup();
    const crl = parseCrl(
      signedCrl('pck-platform-ca', input.pckCrlIssuerChain[0]!, {
        nextUpdate: crlNextUpdate,
        revoked: [Uint8Array.of(0), Uint8Array.of(0, 0x80)],
      }),
      'PCK CRL',
    );
    assert.deepEqual([...crl.revokedSerials], ['00', '80']);
  });

  it('names the CRL that does not decode when the collateral is prepared', async () => {
    const { input } = await setup();
    const broken = Uint8Array.of(0x30, 0x03, 0x02, 0x01);
    assert.throws(
      () => prepareCrls({ ...input, rootCaCrl: broken }),
      code('CRL_INVALID', /^The root CA CRL is not a DER certificate revocation list/, {
        crl: 'root CA CRL',
      }),
    );
    assert.throws(
      () => prepareCrls({ ...input, pckCrl: broken }),
      code('CRL_INVALID', /^The PCK CRL is not a DER certificate revocation list/, {
        crl: 'PCK CRL',
      }),
    );
  });

  it('isRevoked refuses a certificate it cannot read, saying so', async () => {
    const { prepared } = await setup();
    assert.throws(
      () => isRevoked(prepared.pckCrl, Uint8Array.of(0x30, 0x00)),
      code('CRL_INVALID', /^The certificate is not a DER X\.509 certificate$/, {
        certificate: 'certificate',
      }),
    );
  });

  it('a parsed CRL keeps its own copy of the bytes it was read from', async () => {
    const { input } = await setup();
    const der = input.rootCaCrl.slice();
    const crl = parseCrl(der, 'root CA CRL');
    const before = {
      issuer: toHex(crl.issuer),
      tbs: toHex(crl.tbs),
      signature: toHex(crl.signature),
    };
    der.fill(0);
    assert.deepEqual(
      { issuer: toHex(crl.issuer), tbs: toHex(crl.tbs), signature: toHex(crl.signature) },
      before,
    );
    verifyCrl(crl, input.trustedRootCa, now, 'root CA CRL');
  });

  it('says which CRL is broken when one does not decode', () => {
    assert.throws(
      () => parseCrl(new Uint8Array([0x30, 0x03, 0x02, 0x01]), 'root CA CRL'),
      (error: unknown) => {
        assert.ok(isRaTlsError(error));
        assert.equal(error.code, 'CRL_INVALID');
        assert.match(error.message, /The root CA CRL is not a DER certificate revocation list/);
        assert.deepEqual(error.details, { crl: 'root CA CRL' });
        assert.ok(error.cause instanceof Error);
        return true;
      },
    );
  });
});
