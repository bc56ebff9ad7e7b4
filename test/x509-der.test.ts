import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import {
  bitString,
  ecdsaWithSha256,
  explicit,
  integer,
  objectIdentifier,
  octetString,
  sequence,
  time,
  tlv,
} from '../src/testing/authority/der.js';
import { toHex } from '../src/util/bytes.js';
import {
  readCertificateExtension,
  readCertificateNames,
  readCrlDer,
} from '../src/util/x509-der.js';
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

// Hand-built DER for the strict readers: every refusal below names the rule it breaks, and
// the message is asserted so that the rule itself (not a later, looser one) is what refuses.
const ALG = ecdsaWithSha256();
const SHA384 = sequence(objectIdentifier('1.2.840.10045.4.3.3'));
const CN = objectIdentifier('2.5.4.3');
const ISSUER = name('Test CRL CA');
const THIS_UPDATE = time(new Date('2025-06-01T10:00:00Z'));
const NEXT_UPDATE = time(new Date('2025-07-01T10:00:00Z'));
const REVOKED_AT = time(new Date('2025-05-01T00:00:00Z'));
const REASON = sequence(
  objectIdentifier('2.5.29.21'),
  octetString(Uint8Array.of(0x0a, 0x01, 0x01)),
);
const REVOKED = sequence(
  sequence(integer(Uint8Array.of(0x00, 0x9f, 0x01)), REVOKED_AT),
  sequence(integer(5), REVOKED_AT, sequence(REASON)),
);
const CRL_NUMBER = sequence(objectIdentifier('2.5.29.20'), octetString(integer(7)));
const CRL_EXTENSIONS = explicit(0, sequence(CRL_NUMBER));
const SIGNATURE = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);

function name(commonName: string): Uint8Array {
  return sequence(tlv(0x31, sequence(CN, tlv(0x0c, new TextEncoder().encode(commonName)))));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function certificateList(fields: Uint8Array[], algorithm = ALG, bits = bitString(SIGNATURE)) {
  return sequence(sequence(...fields), algorithm, bits);
}

/** A CRL with `replace` standing where the entry (or entries) of `field` would be. */
function crlWith(field: 'version' | 'revoked' | 'extensions', replace: Uint8Array[]): Uint8Array {
  const version = field === 'version' ? replace : [integer(1)];
  const revoked = field === 'revoked' ? replace : [REVOKED];
  const extensions = field === 'extensions' ? replace : [CRL_EXTENSIONS];
  return certificateList([
    ...version,
    ALG,
    ISSUER,
    THIS_UPDATE,
    NEXT_UPDATE,
    ...revoked,
    ...extensions,
  ]);
}

function entryWith(...parts: Uint8Array[]): Uint8Array {
  return crlWith('revoked', [sequence(sequence(...parts))]);
}

describe('the strict CRL reader (x509-der readCrlDer)', () => {
  it('reads every field of a v2 CRL exactly as signed', () => {
    const tbs = sequence(
      integer(1),
      ALG,
      ISSUER,
      THIS_UPDATE,
      NEXT_UPDATE,
      REVOKED,
      CRL_EXTENSIONS,
    );
    const crl = readCrlDer(sequence(tbs, ALG, bitString(SIGNATURE)));

    assert.equal(toHex(crl.tbs), toHex(tbs));
    assert.equal(toHex(crl.issuer), toHex(ISSUER));
    assert.equal(crl.signatureAlgorithm, '1.2.840.10045.4.3.2');
    assert.equal(toHex(crl.signature), toHex(SIGNATURE));
    assert.equal(crl.thisUpdate.toISOString(), '2025-06-01T10:00:00.000Z');
    assert.equal(crl.nextUpdate?.toISOString(), '2025-07-01T10:00:00.000Z');
    assert.deepEqual(
      crl.revokedSerials.map((serial) => toHex(serial)),
      ['009f01', '05'],
    );
  });

  it('reads a v1 CRL: no version, no nextUpdate, no entries, no extensions', () => {
    const crl = readCrlDer(certificateList([SHA384, ISSUER, THIS_UPDATE], SHA384));

    assert.equal(crl.signatureAlgorithm, '1.2.840.10045.4.3.3');
    assert.equal(crl.nextUpdate, undefined);
    assert.deepEqual(crl.revokedSerials, []);
  });

  it('reads UTCTime years 50-99 as 19xx and 00-49 as 20xx, and GeneralizedTime as written', () => {
    const crl = (thisUpdate: Date, nextUpdate: Date) =>
      readCrlDer(certificateList([ALG, ISSUER, time(thisUpdate), time(nextUpdate)]));
    const early = crl(new Date('1950-01-01T00:00:00Z'), new Date('2049-12-31T23:59:59Z'));
    assert.equal(early.thisUpdate.toISOString(), '1950-01-01T00:00:00.000Z');
    assert.equal(early.nextUpdate?.toISOString(), '2049-12-31T23:59:59.000Z');
    const late = crl(new Date('1949-12-31T23:59:59Z'), new Date('2050-01-01T00:00:00Z'));
    assert.equal(late.thisUpdate.toISOString(), '1949-12-31T23:59:59.000Z');
    assert.equal(late.nextUpdate?.toISOString(), '2050-01-01T00:00:00.000Z');
  });

  it('accepts entry extensions with an explicit critical flag (true or false)', () => {
    for (const flag of [0xff, 0x00]) {
      const critical = sequence(
        objectIdentifier('2.5.29.21'),
        tlv(0x01, Uint8Array.of(flag)),
        octetString(Uint8Array.of(0x0a, 0x01, 0x01)),
      );
      const crl = readCrlDer(entryWith(integer(9), REVOKED_AT, sequence(critical)));
      assert.deepEqual(
        crl.revokedSerials.map((serial) => toHex(serial)),
        ['09'],
      );
    }
  });

  const utc = (text: string) => tlv(0x17, new TextEncoder().encode(text));
  const generalized = (text: string) => tlv(0x18, new TextEncoder().encode(text));
  const valid = certificateList([integer(1), ALG, ISSUER, THIS_UPDATE, NEXT_UPDATE, REVOKED]);
  const refusals: ReadonlyArray<readonly [string, Uint8Array, RegExp]> = [
    [
      'a byte after the CertificateList',
      concat(valid, Uint8Array.of(0)),
      /bytes follow the CertificateList/,
    ],
    [
      'a CertificateList of two elements',
      sequence(sequence(integer(1), ALG, ISSUER, THIS_UPDATE), ALG),
      /CertificateList holds 2 elements, not 3/,
    ],
    [
      'a CertificateList of four elements',
      sequence(sequence(ALG, ISSUER, THIS_UPDATE), ALG, bitString(SIGNATURE), ALG),
      /CertificateList holds 4 elements, not 3/,
    ],
    [
      'a tbsCertList that is a SET',
      sequence(tlv(0x31, concat(ALG, ISSUER, THIS_UPDATE)), ALG, bitString(SIGNATURE)),
      /tbsCertList has tag 0x31, expected 0x30/,
    ],
    [
      'a signature in an OCTET STRING',
      certificateList([ALG, ISSUER, THIS_UPDATE], ALG, octetString(SIGNATURE)),
      /signatureValue has tag 0x4, expected 0x3/,
    ],
    [
      'a signature BIT STRING with unused bits',
      certificateList([ALG, ISSUER, THIS_UPDATE], ALG, tlv(0x03, Uint8Array.of(1, 0xaa))),
      /no unused bits/,
    ],
    [
      'an empty signature BIT STRING',
      certificateList([ALG, ISSUER, THIS_UPDATE], ALG, tlv(0x03, new Uint8Array())),
      /no unused bits/,
    ],
    ['version v3 (2)', crlWith('version', [integer(2)]), /CRL version is not v2/],
    [
      'version 1 in two bytes',
      crlWith('version', [tlv(0x02, Uint8Array.of(0, 1))]),
      /CRL version is not v2/,
    ],
    [
      'version 256 (first byte 1)',
      crlWith('version', [tlv(0x02, Uint8Array.of(1, 0))]),
      /CRL version is not v2/,
    ],
    [
      'a tbsCertList with only a version',
      certificateList([integer(1)]),
      /tbsCertList has no signature algorithm/,
    ],
    [
      'inner and outer algorithms that differ',
      certificateList([SHA384, ISSUER, THIS_UPDATE]),
      /inside and outside tbsCertList differ/,
    ],
    ['no issuer', certificateList([integer(1), ALG]), /tbsCertList has no issuer/],
    ['no thisUpdate', certificateList([integer(1), ALG, ISSUER]), /tbsCertList has no thisUpdate/],
    [
      'a thisUpdate that is an INTEGER',
      certificateList([ALG, ISSUER, integer(5)]),
      /thisUpdate is not a UTCTime or GeneralizedTime/,
    ],
    [
      'an empty revokedCertificates',
      crlWith('revoked', [sequence()]),
      /revokedCertificates is present but empty/,
    ],
    [
      'two elements in the crlExtensions wrapper',
      crlWith('extensions', [explicit(0, concat(sequence(CRL_NUMBER), sequence(CRL_NUMBER)))]),
      /crlExtensions holds 2 elements, not 1/,
    ],
    [
      'empty crlExtensions',
      crlWith('extensions', [explicit(0, sequence())]),
      /crlExtensions is empty/,
    ],
    [
      'an element after the extensions',
      crlWith('extensions', [CRL_EXTENSIONS, integer(3)]),
      /unexpected element in tbsCertList \(tag 2\)/,
    ],
    [
      'extensions before the revoked entries',
      certificateList([ALG, ISSUER, THIS_UPDATE, CRL_EXTENSIONS, REVOKED]),
      /unexpected element in tbsCertList \(tag 48\)/,
    ],
    [
      'an empty AlgorithmIdentifier',
      certificateList([sequence(), ISSUER, THIS_UPDATE], sequence()),
      /signatureAlgorithm is not an AlgorithmIdentifier/,
    ],
    [
      'an AlgorithmIdentifier of three elements',
      certificateList(
        [ALG, ISSUER, THIS_UPDATE],
        sequence(
          objectIdentifier('1.2.840.10045.4.3.2'),
          tlv(0x05, new Uint8Array()),
          tlv(0x05, new Uint8Array()),
        ),
      ),
      /signatureAlgorithm is not an AlgorithmIdentifier/,
    ],
    [
      'an algorithm that is not an OID',
      certificateList([ALG, ISSUER, THIS_UPDATE], sequence(integer(1))),
      /signatureAlgorithm algorithm has tag 0x2/,
    ],
    [
      'an issuer that is a SET',
      certificateList([ALG, tlv(0x31, new Uint8Array()), THIS_UPDATE]),
      /issuer has tag 0x31, expected 0x30/,
    ],
    [
      'an issuer RDN that is a SEQUENCE',
      certificateList([
        ALG,
        sequence(sequence(sequence(CN, tlv(0x0c, Uint8Array.of(0x41))))),
        THIS_UPDATE,
      ]),
      /issuer RDN has tag 0x30, expected 0x31/,
    ],
    [
      'an empty issuer RDN',
      certificateList([ALG, sequence(tlv(0x31, new Uint8Array())), THIS_UPDATE]),
      /an issuer RDN is empty/,
    ],
    [
      'an issuer attribute that is a SET',
      certificateList([
        ALG,
        sequence(tlv(0x31, tlv(0x31, concat(CN, tlv(0x0c, Uint8Array.of(0x41)))))),
        THIS_UPDATE,
      ]),
      /issuer attribute has tag 0x31, expected 0x30/,
    ],
    [
      'an issuer attribute of three elements',
      certificateList([
        ALG,
        sequence(
          tlv(0x31, sequence(CN, tlv(0x0c, Uint8Array.of(0x41)), tlv(0x0c, Uint8Array.of(0x41)))),
        ),
        THIS_UPDATE,
      ]),
      /issuer attribute holds 3 elements, not 2/,
    ],
    [
      'an issuer attribute type that is not an OID',
      certificateList([
        ALG,
        sequence(tlv(0x31, sequence(integer(3), tlv(0x0c, Uint8Array.of(0x41))))),
        THIS_UPDATE,
      ]),
      /issuer attribute type has tag 0x2/,
    ],
    [
      'an issuer RDN that runs past the issuer',
      certificateList([
        ALG,
        concat(Uint8Array.of(0x30, 0x02, 0x31, 0x09), CN, tlv(0x0c, Uint8Array.of(0x41))),
        THIS_UPDATE,
      ]),
      /DER length runs past the end of the input/,
    ],
    [
      'a revoked entry that is a SET',
      crlWith('revoked', [sequence(tlv(0x31, concat(integer(5), REVOKED_AT)))]),
      /revoked entry has tag 0x31, expected 0x30/,
    ],
    ['a revoked entry without a date', entryWith(integer(5)), /a revoked entry is malformed/],
    [
      'a revoked entry of four elements',
      entryWith(integer(5), REVOKED_AT, sequence(REASON), integer(1)),
      /a revoked entry is malformed/,
    ],
    [
      'a revoked serial that is an OCTET STRING',
      entryWith(octetString(Uint8Array.of(5)), REVOKED_AT),
      /revoked serial number has tag 0x4, expected 0x2/,
    ],
    [
      'an empty revoked serial',
      entryWith(tlv(0x02, new Uint8Array()), REVOKED_AT),
      /a revoked serial number is empty/,
    ],
    [
      'a revocationDate that is an INTEGER',
      entryWith(integer(5), integer(5)),
      /revocationDate is not a UTCTime or GeneralizedTime/,
    ],
    [
      'empty entry extensions',
      entryWith(integer(5), REVOKED_AT, sequence()),
      /crlEntryExtensions is empty/,
    ],
    [
      'entry extensions that are a SET',
      entryWith(integer(5), REVOKED_AT, tlv(0x31, REASON)),
      /crlEntryExtensions has tag 0x31, expected 0x30/,
    ],
    [
      'an entry extension that is a SET',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(tlv(0x31, concat(objectIdentifier('2.5.29.21'), octetString(Uint8Array.of(1))))),
      ),
      /crlEntryExtensions entry has tag 0x31, expected 0x30/,
    ],
    [
      'an entry extension with only an id',
      entryWith(integer(5), REVOKED_AT, sequence(sequence(objectIdentifier('2.5.29.21')))),
      /an entry of crlEntryExtensions is malformed/,
    ],
    [
      'an entry extension of four elements',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(
          sequence(
            objectIdentifier('2.5.29.21'),
            tlv(0x01, Uint8Array.of(0xff)),
            octetString(Uint8Array.of(1)),
            octetString(Uint8Array.of(1)),
          ),
        ),
      ),
      /an entry of crlEntryExtensions is malformed/,
    ],
    [
      'an extension id that is not an OID',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(sequence(integer(1), octetString(Uint8Array.of(1)))),
      ),
      /crlEntryExtensions id has tag 0x2, expected 0x6/,
    ],
    [
      'a critical flag that is an INTEGER',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(
          sequence(objectIdentifier('2.5.29.21'), integer(1), octetString(Uint8Array.of(1))),
        ),
      ),
      /crlEntryExtensions critical has tag 0x2, expected 0x1/,
    ],
    [
      'a critical flag of 0x01',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(
          sequence(
            objectIdentifier('2.5.29.21'),
            tlv(0x01, Uint8Array.of(1)),
            octetString(Uint8Array.of(1)),
          ),
        ),
      ),
      /crlEntryExtensions critical flag is not a DER BOOLEAN/,
    ],
    [
      'a critical flag of two bytes',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(
          sequence(
            objectIdentifier('2.5.29.21'),
            tlv(0x01, Uint8Array.of(0xff, 0xff)),
            octetString(Uint8Array.of(1)),
          ),
        ),
      ),
      /crlEntryExtensions critical flag is not a DER BOOLEAN/,
    ],
    [
      'an empty critical flag',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(
          sequence(
            objectIdentifier('2.5.29.21'),
            tlv(0x01, new Uint8Array()),
            octetString(Uint8Array.of(1)),
          ),
        ),
      ),
      /crlEntryExtensions critical flag is not a DER BOOLEAN/,
    ],
    [
      'an extension value that is an INTEGER',
      entryWith(
        integer(5),
        REVOKED_AT,
        sequence(sequence(objectIdentifier('2.5.29.21'), integer(1))),
      ),
      /crlEntryExtensions value has tag 0x2, expected 0x4/,
    ],
    [
      'an extension listed twice',
      entryWith(integer(5), REVOKED_AT, sequence(REASON, REASON)),
      /crlEntryExtensions holds 2\.5\.29\.21 twice/,
    ],
    [
      'an empty OID',
      certificateList([ALG, ISSUER, THIS_UPDATE], sequence(tlv(0x06, new Uint8Array()))),
      /an OID is empty/,
    ],
    [
      'an OID arc with a leading 0x80',
      certificateList(
        [ALG, ISSUER, THIS_UPDATE],
        sequence(tlv(0x06, Uint8Array.of(0x2a, 0x80, 0x01))),
      ),
      /an OID arc is not minimally encoded/,
    ],
    [
      'an OID that ends inside an arc',
      certificateList([ALG, ISSUER, THIS_UPDATE], sequence(tlv(0x06, Uint8Array.of(0x2a, 0x86)))),
      /an OID ends inside an arc/,
    ],
    [
      'an OID arc above 2^52',
      certificateList(
        [ALG, ISSUER, THIS_UPDATE],
        sequence(
          tlv(0x06, Uint8Array.of(0x2a, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00)),
        ),
      ),
      /an OID arc is too large/,
    ],
    [
      'a UTCTime without seconds',
      certificateList([ALG, ISSUER, utc('2506011000Z')]),
      /thisUpdate is not a DER time/,
    ],
    [
      'a UTCTime with an offset',
      certificateList([ALG, ISSUER, utc('250601100000+0000')]),
      /thisUpdate is not a DER time/,
    ],
    [
      'a GeneralizedTime with a fraction',
      certificateList([ALG, ISSUER, THIS_UPDATE, generalized('20250701100000.5Z')]),
      /nextUpdate is not a DER time/,
    ],
    [
      'a GeneralizedTime with a two-digit year',
      certificateList([ALG, ISSUER, THIS_UPDATE, generalized('250701100000Z')]),
      /nextUpdate is not a DER time/,
    ],
    [
      'a UTCTime with a four-digit year',
      certificateList([ALG, ISSUER, utc('20250601100000Z')]),
      /thisUpdate is not a DER time/,
    ],
    [
      'a UTCTime with letters',
      certificateList([ALG, ISSUER, utc('25060110000aZ')]),
      /thisUpdate is not a DER time/,
    ],
    [
      'the 30th of February',
      certificateList([ALG, ISSUER, utc('250230100000Z')]),
      /thisUpdate is not a valid date/,
    ],
    [
      'month 13',
      certificateList([ALG, ISSUER, utc('251301100000Z')]),
      /thisUpdate is not a valid date/,
    ],
    [
      'hour 24',
      certificateList([ALG, ISSUER, utc('250601240000Z')]),
      /thisUpdate is not a valid date/,
    ],
    [
      'minute 60',
      certificateList([ALG, ISSUER, utc('250601106000Z')]),
      /thisUpdate is not a valid date/,
    ],
    [
      'second 60',
      certificateList([ALG, ISSUER, utc('250601100060Z')]),
      /thisUpdate is not a valid date/,
    ],
  ];
  for (const [what, der, message] of refusals) {
    it(`refuses ${what}`, () => {
      assert.throws(() => readCrlDer(der), message);
    });
  }

  it('the well-formed control of the refusals reads', () => {
    assert.equal(readCrlDer(valid).revokedSerials.length, 2);
  });
});

describe('the strict certificate reader on hand-built certificates', () => {
  const SUBJECT = name('Test PCK leaf');
  const VALIDITY = sequence(THIS_UPDATE, NEXT_UPDATE);
  const SPKI = sequence(
    sequence(objectIdentifier('1.2.840.10045.2.1')),
    bitString(Uint8Array.of(4, 1, 2)),
  );
  const extension = (oid: string, value: number) =>
    sequence(objectIdentifier(oid), octetString(Uint8Array.of(value)));
  // The first OID byte packs two arcs (X.690 §8.19.4): each side of its 40 and 80 boundaries.
  const OIDS = ['0.9.1', '0.39.5', '1.0.5', '1.39.5', '2.0.7', '2.47.1'];
  const EXTENSIONS = explicit(3, sequence(...OIDS.map((oid, i) => extension(oid, i + 1))));
  const SERIAL = integer(Uint8Array.of(0x00, 0x80, 0x12));
  const certificate = (fields: Uint8Array[]) =>
    sequence(sequence(...fields), ALG, bitString(SIGNATURE));
  const fields = (...tail: Uint8Array[]) => [
    explicit(0, integer(2)),
    SERIAL,
    ALG,
    ISSUER,
    VALIDITY,
    SUBJECT,
    SPKI,
    ...tail,
  ];

  it('reads serial, issuer, subject and each extension by its dotted OID', () => {
    const der = certificate(fields(EXTENSIONS));
    const names = readCertificateNames(der);

    assert.equal(toHex(names.serial), '008012');
    assert.equal(toHex(names.issuer), toHex(ISSUER));
    assert.equal(toHex(names.subject), toHex(SUBJECT));
    OIDS.forEach((oid, i) => {
      assert.equal(
        toHex(readCertificateExtension(der, oid) ?? new Uint8Array()),
        toHex(Uint8Array.of(i + 1)),
        oid,
      );
    });
    assert.equal(readCertificateExtension(der, '0.40.5'), undefined);
  });

  it('reads a v1 certificate (no version, no extensions) and skips unique identifiers', () => {
    const v1 = certificate(fields().slice(1));
    assert.equal(toHex(readCertificateNames(v1).serial), '008012');
    assert.equal(readCertificateExtension(v1, '2.0.7'), undefined);

    for (const tag of [0x81, 0xa1, 0x82, 0xa2]) {
      const withIds = certificate(fields(tlv(tag, Uint8Array.of(0)), EXTENSIONS));
      assert.equal(toHex(readCertificateExtension(withIds, '1.0.5') ?? new Uint8Array()), '03');
    }
    const both = certificate(
      fields(tlv(0x81, Uint8Array.of(0)), tlv(0x82, Uint8Array.of(0)), EXTENSIONS),
    );
    assert.equal(toHex(readCertificateExtension(both, '0.9.1') ?? new Uint8Array()), '01');
  });

  const good = certificate(fields(EXTENSIONS));
  const refusals: ReadonlyArray<readonly [string, Uint8Array, RegExp]> = [
    [
      'a byte after the Certificate',
      concat(good, Uint8Array.of(0)),
      /bytes follow the Certificate/,
    ],
    [
      'a Certificate of two elements',
      sequence(sequence(...fields()), ALG),
      /Certificate holds 2 elements, not 3/,
    ],
    [
      'a tbsCertificate that is a SET',
      sequence(tlv(0x31, concat(...fields())), ALG, bitString(SIGNATURE)),
      /tbsCertificate has tag 0x31, expected 0x30/,
    ],
    [
      'a tbsCertificate with only a version',
      certificate([explicit(0, integer(2))]),
      /tbsCertificate has no serial number/,
    ],
    [
      'a serial number in an OCTET STRING',
      certificate([octetString(Uint8Array.of(1)), ...fields().slice(2)]),
      /serialNumber has tag 0x4, expected 0x2/,
    ],
    [
      'an empty serial number',
      certificate([tlv(0x02, new Uint8Array()), ...fields().slice(2)]),
      /the serial number is empty/,
    ],
    [
      'no signature algorithm',
      certificate(fields().slice(0, 2)),
      /tbsCertificate has no signature algorithm/,
    ],
    [
      'a signature algorithm that is not an AlgorithmIdentifier',
      certificate([...fields().slice(0, 2), sequence(), ...fields().slice(3)]),
      /tbsCertificate signature is not an AlgorithmIdentifier/,
    ],
    ['no validity and subject', certificate(fields().slice(0, 4)), /tbsCertificate is truncated/],
    ['no subject', certificate(fields().slice(0, 5)), /tbsCertificate is truncated/],
    [
      'an issuer that is a SET',
      certificate([...fields().slice(0, 3), tlv(0x31, new Uint8Array()), ...fields().slice(4)]),
      /issuer has tag 0x31, expected 0x30/,
    ],
    [
      'a validity that is a SET',
      certificate([
        ...fields().slice(0, 4),
        tlv(0x31, concat(THIS_UPDATE, NEXT_UPDATE)),
        ...fields().slice(5),
      ]),
      /validity has tag 0x31, expected 0x30/,
    ],
    [
      'a subject whose RDN is empty',
      certificate([...fields().slice(0, 5), sequence(tlv(0x31, new Uint8Array())), SPKI]),
      /an issuer RDN is empty/,
    ],
    [
      'no subjectPublicKeyInfo',
      certificate(fields().slice(0, 6)),
      /tbsCertificate has no subjectPublicKeyInfo/,
    ],
    [
      'a subjectPublicKeyInfo that is a BIT STRING',
      certificate([...fields().slice(0, 6), bitString(Uint8Array.of(4))]),
      /subjectPublicKeyInfo has tag 0x3, expected 0x30/,
    ],
    [
      'two elements in the extensions wrapper',
      certificate(
        fields(
          explicit(3, concat(sequence(extension('2.0.7', 1)), sequence(extension('2.0.8', 1)))),
        ),
      ),
      /extensions holds 2 elements, not 1/,
    ],
    ['empty extensions', certificate(fields(explicit(3, sequence()))), /extensions is empty/],
    [
      'an extension listed twice',
      certificate(fields(explicit(3, sequence(extension('2.0.7', 1), extension('2.0.7', 2))))),
      /extensions holds 2\.0\.7 twice/,
    ],
    [
      'an element after the extensions',
      certificate(fields(EXTENSIONS, integer(1))),
      /unexpected element in tbsCertificate/,
    ],
    [
      'a unique identifier after the extensions',
      certificate(fields(EXTENSIONS, tlv(0x81, Uint8Array.of(0)))),
      /unexpected element in tbsCertificate/,
    ],
  ];
  for (const [what, der, message] of refusals) {
    it(`refuses ${what}`, () => {
      assert.throws(() => readCertificateNames(der), message);
      assert.throws(() => readCertificateExtension(der, '2.0.7'), message);
    });
  }
});
