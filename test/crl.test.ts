import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { constants as qvlConstants } from '@phala/dcap-qvl';
import { isRaTlsError } from '../src/errors.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { fromHex } from '../src/util/bytes.js';
import { pemBlocks } from '../src/util/pem.js';
import {
  checkCrlsStrictly,
  isRevoked,
  parseCrl,
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

function code(expected: string, pattern?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(isRaTlsError(error), String(error));
    assert.equal(error.code, expected, error.message);
    if (pattern) assert.match(error.message, pattern);
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
      code('CRL_INVALID', /PCK CRL signature does not verify/),
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
      code('CRL_INVALID', /names an issuer other than/),
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
