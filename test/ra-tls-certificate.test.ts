import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { createRaTlsCertificate, generateRaTlsKeyPair } from '../src/testing/ra-tls-certificate.js';

test('every certificate the builder makes is valid DER, whatever its random serial', () => {
  // A serial whose first byte came out 0x00 (then < 0x80) was a non-minimal
  // INTEGER, which OpenSSL rejects ("illegal padding"): once in 256 certificates.
  const { privateKeyPem } = generateRaTlsKeyPair();
  for (let i = 0; i < 3000; i++) {
    const { certificatePem } = createRaTlsCertificate({ privateKey: privateKeyPem });
    const serial = new X509Certificate(certificatePem).serialNumber;
    assert.match(serial, /^[4-7][0-9A-F]/, `serial ${serial} is positive and minimal`);
  }
});
