import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { toHex } from '../src/util/bytes.js';
import { readCertificateExtension, readCertificateNames } from '../src/util/x509-der.js';
import { readPckInfo } from '../src/verification/pck-info.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);

function pckChain(name: string): readonly Uint8Array[] {
  return readPckInfo(new Uint8Array(readFileSync(new URL(`${name}/quote.bin`, FIXTURES)))).chain;
}

describe('the strict certificate reader (x509-der)', () => {
  for (const fixture of ['intel-tdx-v4', 'intel-tdx-v4-b', 'intel-tdx-v5', 'intel-sgx-v3']) {
    it(`reads the serial, names and extensions a full ASN.1 parse reads (${fixture} PCK chain)`, () => {
      for (const der of pckChain(fixture)) {
        const full = AsnConvert.parse(der, Certificate).tbsCertificate;
        const names = readCertificateNames(der);
        assert.equal(toHex(names.serial), toHex(new Uint8Array(full.serialNumber)));
        assert.equal(toHex(names.issuer), toHex(new Uint8Array(AsnConvert.serialize(full.issuer))));
        assert.equal(
          toHex(names.subject),
          toHex(new Uint8Array(AsnConvert.serialize(full.subject))),
        );
        for (const extension of full.extensions ?? []) {
          assert.equal(
            toHex(readCertificateExtension(der, extension.extnID) ?? new Uint8Array()),
            toHex(new Uint8Array(extension.extnValue.buffer)),
            `extension ${extension.extnID}`,
          );
        }
        assert.equal(readCertificateExtension(der, '1.2.3.4'), undefined);
      }
    });
  }

  it('refuses a truncated certificate, trailing bytes and a non-certificate', () => {
    const [leaf] = pckChain('intel-tdx-v4');
    assert.ok(leaf);
    assert.throws(() => readCertificateNames(leaf.subarray(0, leaf.length - 1)));
    assert.throws(() => readCertificateNames(new Uint8Array([...leaf, 0])));
    assert.throws(() => readCertificateNames(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])));
    assert.throws(() => readCertificateNames(new Uint8Array()));
  });
});
