import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { checkBinding, expectedReportData } from '../src/evidence/binding.js';
import { readRaTlsCertificate } from '../src/evidence/certificate.js';
import { parseQuote } from '../src/evidence/quote.js';
import { replayRtmr3, verifyAppIdentity } from '../src/evidence/rtmr3.js';
import type { RuntimeEvent } from '../src/evidence/types.js';
import { decodeVersionedAttestation } from '../src/evidence/versioned-attestation.js';
import {
  createRaTlsCertificate,
  generateRaTlsKeyPair,
  withReportData,
} from '../src/testing/ra-tls-certificate.js';
import { toHex } from '../src/util/bytes.js';

const FIXTURE = new URL('./fixtures/dstack-attestation-v0/', import.meta.url);
const sample = decodeVersionedAttestation(
  new Uint8Array(readFileSync(new URL('attestation.bin', FIXTURE))),
);
const SAMPLE_RTMR3 =
  'f28a1490ee924e9396c2ccf2d93ad536b83cbe159a1d45024d1fd7acdcc102145efcfcd0cfa209416446c70226affadf';

/** A certificate whose key the (patched) sample quote binds. */
function boundCertificate() {
  const keyPair = generateRaTlsKeyPair();
  const quote = withReportData(sample.quote, expectedReportData(keyPair.spki));
  const built = createRaTlsCertificate({
    privateKey: keyPair.privateKey,
    attestation: { quote, runtimeEvents: sample.runtimeEvents },
  });
  return { built, quote };
}

describe('expectedReportData', () => {
  test('is SHA-512 of "ratls-cert:" followed by the SPKI DER', () => {
    const spki = new Uint8Array([1, 2, 3]);
    const manual = createHash('sha512').update('ratls-cert:').update(spki).digest();
    assert.equal(toHex(expectedReportData(spki)), manual.toString('hex'));
  });
});

describe('checkBinding', () => {
  test('accepts a quote made for the certificate key', () => {
    const { built, quote } = boundCertificate();
    const certificate = readRaTlsCertificate(built.certificateDer);
    assert.doesNotThrow(() => checkBinding(certificate, parseQuote(quote)));
  });

  test('a captured quote re-wrapped in another key’s certificate is PUBKEY_MISMATCH', () => {
    const { quote } = boundCertificate();
    const attacker = createRaTlsCertificate({
      attestation: { quote, runtimeEvents: sample.runtimeEvents },
    });
    const certificate = readRaTlsCertificate(attacker.certificateDer);
    assert.throws(
      () => checkBinding(certificate, parseQuote(certificate.attestation.quote)),
      (error: unknown) =>
        isRaTlsError(error, 'PUBKEY_MISMATCH') && /another key/.test(error.message),
    );
  });

  test('an envelope whose report_data disagrees with its quote is PUBKEY_MISMATCH', () => {
    const keyPair = generateRaTlsKeyPair();
    const quote = withReportData(sample.quote, expectedReportData(keyPair.spki));
    const built = createRaTlsCertificate({
      privateKey: keyPair.privateKey,
      attestation: { quote, reportData: new Uint8Array(64).fill(1) },
    });
    const certificate = readRaTlsCertificate(built.certificateDer);
    assert.throws(
      () => checkBinding(certificate, parseQuote(quote)),
      (error: unknown) => isRaTlsError(error, 'PUBKEY_MISMATCH') && /envelope/.test(error.message),
    );
  });
});

describe('RTMR3 replay', () => {
  test('the sample’s runtime events replay to its quote’s RTMR3', () => {
    assert.equal(toHex(replayRtmr3(sample.runtimeEvents)), SAMPLE_RTMR3);
    assert.equal(parseQuote(sample.quote).rtmr3, SAMPLE_RTMR3);
  });

  test('no events replay to 48 zero bytes', () => {
    assert.equal(toHex(replayRtmr3([])), '00'.repeat(48));
  });

  test('verified events yield the app identity', () => {
    const app = verifyAppIdentity(sample.runtimeEvents, SAMPLE_RTMR3.toUpperCase());
    assert.equal(app.appId, '5bb4ff9a3837357f19dc176407a5709c62eb6c56');
    assert.equal(
      app.composeHash,
      'c143116fef3940e7f776bfc0919c256232ae5338a6e948c96b711e0b2383483a',
    );
    assert.equal(app.instanceId, '1691ed1b47506cad7d08834668691d88246f5b1f');
    assert.equal(
      app.osImageHash,
      'e61be43dd1cc6a6f5edefd7c51b608983780839b0000ce60dd99737dcffe09b9',
    );
    assert.equal(JSON.parse(app.keyProvider ?? '').name, 'kms');
    assert.equal(app.events.length, 9);
  });

  test('a tampered, dropped or reordered event is RTMR_MISMATCH', () => {
    const events = [...sample.runtimeEvents];
    const tampered = events.map(
      (event): RuntimeEvent =>
        event.event === 'compose-hash'
          ? { event: event.event, payload: new Uint8Array(32) }
          : event,
    );
    const dropped = events.slice(0, -1);
    const reordered = [events[1]!, events[0]!, ...events.slice(2)];
    for (const variant of [tampered, dropped, reordered]) {
      assert.throws(
        () => verifyAppIdentity(variant, SAMPLE_RTMR3),
        (error: unknown) =>
          isRaTlsError(error, 'RTMR_MISMATCH') && error.message.includes(SAMPLE_RTMR3),
      );
    }
  });

  test('events after system-ready cannot redefine the app', () => {
    const late: RuntimeEvent = { event: 'app-id', payload: new Uint8Array(20).fill(0xee) };
    const withoutBootAppId = sample.runtimeEvents.filter((event) => event.event !== 'app-id');
    const events = [...withoutBootAppId, late];
    const app = verifyAppIdentity(events, toHex(replayRtmr3(events)));
    assert.equal(app.appId, undefined);
    assert.equal(
      app.composeHash,
      'c143116fef3940e7f776bfc0919c256232ae5338a6e948c96b711e0b2383483a',
    );
  });
});
