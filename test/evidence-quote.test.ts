import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { parseQuote, quoteReportDataOffset } from '../src/evidence/quote.js';
import { toHex } from '../src/util/bytes.js';

const fixture = (name: string): Uint8Array =>
  new Uint8Array(readFileSync(new URL(`./fixtures/${name}/quote.bin`, import.meta.url)));
const ZERO_48 = '00'.repeat(48);

describe('parseQuote on real quotes', () => {
  test('a TDX v4 quote yields the measurements Intel hardware produced', () => {
    const quote = parseQuote(fixture('intel-tdx-v4'));
    assert.equal(quote.version, 4);
    assert.equal(quote.bodyType, 'td10');
    assert.equal(quote.teeType, 0x81);
    assert.equal(
      quote.mrtd,
      '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
    );
    assert.equal(
      quote.rtmr0,
      '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0',
    );
    assert.equal(quote.rtmr3, ZERO_48);
    assert.equal(quote.tdAttributes, '0000001000000000');
    assert.equal(quote.isDebug, false);
    assert.equal(quote.mrSignerSeam, ZERO_48);
    assert.equal(quote.mrServiceTd, undefined);
  });

  test('report_data is read from bytes 568..632 of a v4 quote', () => {
    const bytes = fixture('intel-tdx-v4');
    const quote = parseQuote(bytes);
    assert.equal(quoteReportDataOffset(4), 568);
    assert.equal(toHex(quote.reportData), toHex(bytes.subarray(568, 632)));
  });

  test('the second v4 quote, from another platform, parses independently', () => {
    const quote = parseQuote(fixture('intel-tdx-v4-b'));
    assert.equal(quote.version, 4);
    assert.equal(quote.isDebug, false);
    assert.equal(quote.mrSignerSeam, ZERO_48);
    assert.match(quote.mrtd, /^[0-9a-f]{96}$/);
  });

  test('a v5 quote carries a TD report 1.5 with tee_tcb_svn2 and mr_service_td', () => {
    const bytes = fixture('intel-tdx-v5');
    const quote = parseQuote(bytes);
    assert.equal(quote.version, 5);
    assert.equal(quote.bodyType, 'td15');
    assert.equal(quote.mrServiceTd, ZERO_48);
    assert.match(quote.teeTcbSvn2 ?? '', /^[0-9a-f]{32}$/);
    assert.equal(toHex(quote.reportData), toHex(bytes.subarray(574, 638)));
  });

  test('an SGX quote is refused as not TDX', () => {
    assert.throws(
      () => parseQuote(fixture('intel-sgx-v3')),
      (error: unknown) => isRaTlsError(error, 'NOT_TDX') && /SGX/.test(error.message),
    );
  });

  test("the dstack sample's quote has the documented MRTD and RTMR3", () => {
    const quote = parseQuote(fixture('dstack-attestation-v0'));
    assert.equal(
      quote.mrtd,
      'e53236d44a074bc78e784cdfa1a2c858a5f6b53afc1b60d8f079662314978b64241b646d8498dd767d5ea48e1e115822',
    );
    assert.equal(
      quote.rtmr3,
      'f28a1490ee924e9396c2ccf2d93ad536b83cbe159a1d45024d1fd7acdcc102145efcfcd0cfa209416446c70226affadf',
    );
  });
});

describe('parseQuote on broken quotes', () => {
  test('a quote cut inside the TD report is malformed', () => {
    assert.throws(
      () => parseQuote(fixture('intel-tdx-v4').subarray(0, 300)),
      (error: unknown) => isRaTlsError(error, 'MALFORMED_QUOTE') && /truncated/.test(error.message),
    );
  });

  test('a signature length running past the end is malformed', () => {
    const bytes = fixture('intel-tdx-v4');
    new DataView(bytes.buffer).setUint32(632, 0xffffff00, true);
    assert.throws(
      () => parseQuote(bytes),
      (error: unknown) => isRaTlsError(error, 'MALFORMED_QUOTE'),
    );
  });

  test('a v5 body descriptor whose size disagrees with its type is malformed', () => {
    const bytes = fixture('intel-tdx-v5');
    new DataView(bytes.buffer).setUint32(50, 584, true);
    assert.throws(
      () => parseQuote(bytes),
      (error: unknown) => isRaTlsError(error, 'MALFORMED_QUOTE'),
    );
  });

  test('an unknown quote version is malformed and a non-TDX TEE type is not TDX', () => {
    const v7 = fixture('intel-tdx-v4');
    v7[0] = 7;
    assert.throws(
      () => parseQuote(v7),
      (error: unknown) => isRaTlsError(error, 'MALFORMED_QUOTE'),
    );
    const sev = fixture('intel-tdx-v4');
    sev[4] = 0x42;
    assert.throws(
      () => parseQuote(sev),
      (error: unknown) => isRaTlsError(error, 'NOT_TDX'),
    );
  });

  test('the debug bit of td_attributes marks a debug TD', () => {
    const bytes = fixture('intel-tdx-v4');
    bytes[48 + 120] = bytes[48 + 120]! | 0x01;
    assert.equal(parseQuote(bytes).isDebug, true);
  });
});
