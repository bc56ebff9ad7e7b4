/**
 * readPckInfo on quotes whose PCK chain is malformed: every structural check of
 * the chain and of the Intel SGX extension refuses with MALFORMED_QUOTE and
 * says which part is wrong, and a member that only looks like the FMSPC is
 * never taken for it. The quotes are the test authority's with the PCK chain
 * replaced (readPckInfo reads the chain, it does not verify it).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import {
  certificatePem,
  encodeCertificate,
  encodeName,
} from '../src/testing/authority/certificate.js';
import { integer, objectIdentifier, octetString, sequence } from '../src/testing/authority/der.js';
import { deriveP256Key } from '../src/testing/authority/keys.js';
import { SGX_EXTENSION_OID } from '../src/testing/authority/sgx-extension.js';
import { assembleQuote, encodeQeCertificationData } from '../src/testing/authority/tdx-quote.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { pckLeavesKept, readPckInfo } from '../src/verification/pck-info.js';

const SEED = new TextEncoder().encode('pck-info test');
const key = deriveP256Key(SEED, 'leaf');
const attestationKey = deriveP256Key(SEED, 'attestation');
const template = (await createTestAuthority()).issueQuote();
// A v4 quote: 48-byte header, 584-byte TD report body, then the signed auth data.
const HEADER = template.subarray(0, 48);
const BODY = template.subarray(48, 632);

const FMSPC_OID = `${SGX_EXTENSION_OID}.4`;
const FMSPC = Uint8Array.from([0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00]);

function quoteWithChain(pckChainPem: string): Uint8Array {
  return assembleQuote(
    HEADER,
    BODY,
    { key: attestationKey.privateKey, point: attestationKey.publicPoint },
    encodeQeCertificationData({
      attestationPoint: attestationKey.publicPoint,
      qeAuthData: new Uint8Array(32),
      pckKey: key.privateKey,
      pckChainPem,
    }),
  );
}

let serial = 1;
/** A PCK leaf issued by `issuerCn`, with `sgxExtension` (the extension value's DER) if given. */
function leaf(sgxExtension?: Uint8Array, issuerCn = 'Intel SGX PCK Platform CA'): string {
  const der = encodeCertificate(
    {
      serialNumber: Uint8Array.of(serial++ & 0x7f, serial >> 7),
      issuer: encodeName([['CN', issuerCn]]),
      subject: encodeName([['CN', 'Intel SGX PCK Certificate']]),
      notBefore: new Date('2024-01-01T00:00:00Z'),
      notAfter: new Date('2031-01-01T00:00:00Z'),
      publicKey: key.publicKey,
      subjectKeyId: key.keyId,
      authorityKeyId: key.keyId,
      ca: false,
      crlUrl: 'https://pccs.invalid/pckcrl',
      extraExtensions:
        sgxExtension === undefined
          ? []
          : [{ oid: SGX_EXTENSION_OID, critical: false, value: sgxExtension }],
    },
    key.privateKey,
  );
  return certificatePem(der);
}

const member = (oid: string, value: Uint8Array) => sequence(objectIdentifier(oid), value);
const ppid = member(`${SGX_EXTENSION_OID}.1`, octetString(new Uint8Array(16)));
const fmspc = member(FMSPC_OID, octetString(FMSPC));

/** A DER header whose length says `length`, whatever follows it. */
function header(tag: number, length: number): Uint8Array {
  return Uint8Array.of(tag, length);
}
const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

function malformed(pattern: RegExp, cause?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(isRaTlsError(error), String(error));
    assert.equal(error.code, 'MALFORMED_QUOTE', error.message);
    assert.match(error.message, pattern);
    if (cause) {
      assert.ok(error.cause instanceof Error, 'the refusal keeps what the reader found');
      assert.match(error.cause.message, cause);
    }
    return true;
  };
}

describe('readPckInfo: the PCK chain', () => {
  it('reads the FMSPC and issuing CA of a well-formed leaf, whatever members precede the FMSPC', () => {
    // A member before the FMSPC that also holds 6 bytes must not be taken for it.
    const lookalike = member(`${SGX_EXTENSION_OID}.3`, octetString(new Uint8Array(6)));
    const info = readPckInfo(quoteWithChain(leaf(sequence(ppid, lookalike, fmspc))));
    assert.equal(info.fmspc, '00906ed50000');
    assert.equal(info.ca, 'platform');
    assert.equal(info.chain.length, 1);
    const processor = readPckInfo(
      quoteWithChain(leaf(sequence(fmspc), 'Intel SGX PCK Processor CA')),
    );
    assert.equal(processor.ca, 'processor');
  });

  it('refuses a quote whose certification data cannot be read', () => {
    const quote = quoteWithChain(leaf(sequence(fmspc)));
    assert.throws(
      () => readPckInfo(quote.subarray(0, 700)),
      malformed(/PCK certificate chain cannot be read .*certification data type 5/, /./),
    );
  });

  it('refuses a chain that is not valid PEM, and an empty one', () => {
    const bad = '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n';
    assert.throws(
      () => readPckInfo(quoteWithChain(bad)),
      malformed(/PCK certificate chain is not valid PEM \(.*not valid base64/, /not valid base64/),
    );
    assert.throws(
      () => readPckInfo(quoteWithChain('no certificate here\n')),
      malformed(/^The quote carries an empty PCK certificate chain$/),
    );
  });

  it('refuses a leaf without the SGX extension, or whose extension has no FMSPC', () => {
    const noFmspc = /^The quote's PCK certificate has no FMSPC in its Intel SGX extension$/;
    assert.throws(() => readPckInfo(quoteWithChain(leaf())), malformed(noFmspc));
    // A well-formed extension without the member: the walk ends at the end of
    // the extension and reads nothing past it.
    assert.throws(() => readPckInfo(quoteWithChain(leaf(sequence(ppid)))), malformed(noFmspc));
    assert.throws(() => readPckInfo(quoteWithChain(leaf(sequence()))), malformed(noFmspc));
  });

  it('takes only an OID naming the FMSPC, holding a 6-byte OCTET STRING, for the FMSPC', () => {
    const noFmspc = /has no FMSPC/;
    const fmspcOidBytes = objectIdentifier(FMSPC_OID).subarray(2);
    const cases: Array<[string, Uint8Array]> = [
      // The FMSPC OID's bytes, but as an OCTET STRING rather than an OID.
      ['OID as OCTET STRING', sequence(octetString(fmspcOidBytes), octetString(FMSPC))],
      ['value is an INTEGER', member(FMSPC_OID, integer(FMSPC))],
      ['5-byte value', member(FMSPC_OID, octetString(FMSPC.subarray(0, 5)))],
      ['7-byte value', member(FMSPC_OID, octetString(Uint8Array.of(...FMSPC, 0)))],
      ['another OID', member(`${SGX_EXTENSION_OID}.5`, octetString(FMSPC))],
    ];
    for (const [name, entry] of cases) {
      assert.throws(
        () => readPckInfo(quoteWithChain(leaf(sequence(entry)))),
        malformed(noFmspc),
        name,
      );
    }
  });

  it('refuses each structural fault of the SGX extension, naming it', () => {
    const cannotParse = /^The quote's PCK certificate cannot be parsed$/;
    const fmspcOid = objectIdentifier(FMSPC_OID);
    const value = octetString(FMSPC);
    const cases: Array<[Uint8Array, RegExp]> = [
      [octetString(FMSPC), /is not a SEQUENCE/],
      // The outer SEQUENCE ends inside its first member.
      [concat(header(0x30, 4), fmspc), /member overruns it/],
      // A member holding only its OID.
      [sequence(sequence(fmspcOid), fmspc), /member has no value/],
      // A member whose length ends inside its value.
      [
        sequence(concat(header(0x30, fmspcOid.length + 2), fmspcOid, value)),
        /value overruns its member/,
      ],
      // Not DER at all: the reader's own refusal is kept as the cause.
      [Uint8Array.of(0x30, 0x81), /./],
    ];
    for (const [extension, cause] of cases) {
      assert.throws(
        () => readPckInfo(quoteWithChain(leaf(extension))),
        malformed(cannotParse, cause),
        cause.source,
      );
    }
  });

  it('keeps the issuing CA of at most 16 leaves', () => {
    // Earlier tests of this file left some; each new leaf adds one up to the bound.
    const before = pckLeavesKept();
    assert.ok(before < 16);
    for (let index = 0; index < 20; index++) {
      readPckInfo(quoteWithChain(leaf(sequence(fmspc), `Intel SGX PCK Platform CA ${index}`)));
      assert.equal(pckLeavesKept(), Math.min(before + index + 1, 16), `after leaf ${index + 1}`);
    }
  });
});
