import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { toHex } from '../src/util/bytes.js';
import { readCertificateFields } from '../src/util/certificate-fields.js';
import { readPckInfo } from '../src/verification/pck-info.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);

function pckChain(name: string): readonly Uint8Array[] {
  return readPckInfo(new Uint8Array(readFileSync(new URL(`${name}/quote.bin`, FIXTURES)))).chain;
}

describe('readCertificateFields', () => {
  for (const fixture of ['intel-tdx-v4', 'intel-tdx-v4-b', 'intel-tdx-v5', 'intel-sgx-v3']) {
    it(`reads the same serial, names and extensions as a full ASN.1 parse (${fixture} PCK chain)`, () => {
      for (const der of pckChain(fixture)) {
        const full = AsnConvert.parse(der, Certificate).tbsCertificate;
        const fields = readCertificateFields(der);
        assert.equal(toHex(fields.serial), toHex(new Uint8Array(full.serialNumber)));
        assert.equal(
          toHex(fields.issuer),
          toHex(new Uint8Array(AsnConvert.serialize(full.issuer))),
        );
        assert.equal(
          toHex(fields.subject),
          toHex(new Uint8Array(AsnConvert.serialize(full.subject))),
        );
        assert.deepEqual(
          fields.extensions.map((e) => toHex(e.value)),
          [...(full.extensions ?? [])].map((e) => toHex(new Uint8Array(e.extnValue.buffer))),
        );
      }
    });
  }

  it('refuses a truncated certificate, trailing bytes and a non-certificate', () => {
    const [leaf] = pckChain('intel-tdx-v4');
    assert.ok(leaf);
    assert.throws(() => readCertificateFields(leaf.subarray(0, leaf.length - 1)));
    assert.throws(() => readCertificateFields(new Uint8Array([...leaf, 0])));
    assert.throws(() => readCertificateFields(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])));
    assert.throws(() => readCertificateFields(new Uint8Array()));
  });
});
