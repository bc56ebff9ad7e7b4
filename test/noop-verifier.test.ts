import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { NoopVerifier } from '../src/verification/noop-verifier.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);

function quote(name: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(`${name}/quote.bin`, FIXTURES)));
}

describe('NoopVerifier', () => {
  it('warns loudly once when constructed and marks itself unverified', () => {
    const warnings: string[] = [];

    const verifier = new NoopVerifier({ logger: (message) => warnings.push(message) });

    assert.equal(verifier.name, 'noop');
    assert.equal(verifier.unverified, true);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /checks NO quote signature/);
    assert.match(warnings[0]!, /never in production\.$/);
  });

  it('reports the parsed values with tcbStatus Unknown, even for a quote whose signature is broken', async () => {
    const tampered = quote('intel-tdx-v4').slice();
    tampered[tampered.length - 200]! ^= 0xff;

    const result = await new NoopVerifier({ logger: () => {} }).verify(tampered);

    assert.equal(result.tcbStatus, 'Unknown');
    assert.equal(result.verifier, 'noop');
    assert.equal(
      result.mrtd,
      '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
    );
    assert.equal(result.isDebug, false);
    assert.deepEqual(Buffer.from(result.reportData), Buffer.from(tampered.subarray(568, 632)));
    assert.equal(result.validUntil, undefined);
    assert.deepEqual(result.advisoryIds, [], 'no advisories: nothing was evaluated');
    assert.ok(Object.isFrozen(result) && Object.isFrozen(result.advisoryIds));
  });

  it('still refuses what is not a TDX quote', async () => {
    const verifier = new NoopVerifier({ logger: () => {} });

    await assert.rejects(verifier.verify(quote('intel-sgx-v3')), (error: unknown) =>
      isRaTlsError(error, 'NOT_TDX'),
    );
    await assert.rejects(verifier.verify(new Uint8Array(12)), (error: unknown) =>
      isRaTlsError(error, 'MALFORMED_QUOTE'),
    );
  });

  it('reads the dstack quote (RTMR3 non-zero) as parsed', async () => {
    const result = await new NoopVerifier({ logger: () => {} }).verify(
      quote('dstack-attestation-v0'),
    );

    assert.equal(
      result.rtmr3,
      'f28a1490ee924e9396c2ccf2d93ad536b83cbe159a1d45024d1fd7acdcc102145efcfcd0cfa209416446c70226affadf',
    );
  });
});
