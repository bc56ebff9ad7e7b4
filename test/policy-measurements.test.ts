import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { parseQuote } from '../src/evidence/quote.js';
import { verifyAppIdentity } from '../src/evidence/rtmr3.js';
import { decodeVersionedAttestation } from '../src/evidence/versioned-attestation.js';
import { applyPolicy, normalizePolicy, policyWarnings } from '../src/policy/policy.js';
import type { MeasurementSet } from '../src/policy/types.js';

// The real dstack V0 fixture: its quote's boot chain is what a production policy pins.
const sample = decodeVersionedAttestation(
  new Uint8Array(
    readFileSync(new URL('./fixtures/dstack-attestation-v0/attestation.bin', import.meta.url)),
  ),
);
const quote = parseQuote(sample.quote);
const app = verifyAppIdentity(sample.runtimeEvents, quote.rtmr3);
const facts = { quote, tcbStatus: 'UpToDate' as const, app };
const bootChain: MeasurementSet = {
  mrtd: quote.mrtd,
  rtmr0: quote.rtmr0,
  rtmr1: quote.rtmr1,
  rtmr2: quote.rtmr2,
};
const other = (hex: string) => (hex.startsWith('00') ? `11${hex.slice(2)}` : `00${hex.slice(2)}`);

const judge = (sets: readonly MeasurementSet[]) =>
  applyPolicy(facts, normalizePolicy({ allowedMeasurements: sets }));

function refusedFor(register: string, run: () => void): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isRaTlsError(error, 'MEASUREMENT_NOT_ALLOWED'), String(error));
    assert.equal(error.details.register, register);
    assert.match(error.message, new RegExp(`^${register} [0-9a-f]{96} `));
    assert.match(error.message, /policy\.allowedMeasurements/);
    return true;
  });
}

function badConfig(option: RegExp, run: () => void): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isRaTlsError(error, 'BAD_CONFIG'), String(error));
    assert.match(String(error.details.option), option);
    return true;
  });
}

describe('the real dstack fixture', () => {
  test('still decodes, and exposes RTMR0-2 and the key-provider event', () => {
    for (const register of ['rtmr0', 'rtmr1', 'rtmr2'] as const) {
      assert.match(quote[register], /^[0-9a-f]{96}$/);
      assert.notEqual(quote[register], '0'.repeat(96), `${register} is measured`);
    }
    assert.equal(new Set([quote.rtmr0, quote.rtmr1, quote.rtmr2]).size, 3);
    assert.ok(app.keyProvider !== undefined, 'the key-provider event replayed');
    assert.ok(JSON.parse(app.keyProvider) !== null, 'key-provider is JSON');
  });
});

describe('policy.allowedMeasurements', () => {
  test('the exact boot chain passes', () => {
    judge([bootChain]);
  });

  test('each register changed alone is refused, and the message names it', () => {
    refusedFor('MRTD', () => judge([{ ...bootChain, mrtd: other(quote.mrtd) }]));
    refusedFor('RTMR0', () => judge([{ ...bootChain, rtmr0: other(quote.rtmr0) }]));
    refusedFor('RTMR1', () => judge([{ ...bootChain, rtmr1: other(quote.rtmr1) }]));
    refusedFor('RTMR2', () => judge([{ ...bootChain, rtmr2: other(quote.rtmr2) }]));
  });

  test('a set without rtmr0 accepts another VM shape of the same image, and nothing else', () => {
    const { rtmr0: _shape, ...anyShape } = bootChain;
    judge([anyShape]);
    refusedFor('RTMR1', () => judge([{ ...anyShape, rtmr1: other(quote.rtmr1) }]));
  });

  test('one matching set among several passes; otherwise the closest set names the register', () => {
    judge([{ ...bootChain, mrtd: other(quote.mrtd) }, bootChain]);
    // Set #1 matches MRTD, RTMR0 and RTMR1: its RTMR2 is what differs, not set #0's MRTD.
    refusedFor('RTMR2', () =>
      judge([
        { ...bootChain, mrtd: other(quote.mrtd) },
        { ...bootChain, rtmr2: other(quote.rtmr2) },
      ]),
    );
  });

  test('mixed-case, 0x-prefixed and padded hex normalises', () => {
    const policy = normalizePolicy({
      allowedMeasurements: [
        {
          mrtd: ` 0x${bootChain.mrtd.toUpperCase()} `,
          rtmr0: `0X${bootChain.rtmr0}`,
          rtmr1: bootChain.rtmr1.toUpperCase(),
          rtmr2: bootChain.rtmr2,
        },
        bootChain,
      ],
    });
    assert.deepEqual(policy.allowedMeasurements, [bootChain]);
    assert.ok(Object.isFrozen(policy.allowedMeasurements));
    assert.ok(Object.isFrozen(policy.allowedMeasurements[0]));
    applyPolicy(facts, policy);
  });

  test('careless input is BAD_CONFIG, never "accept anything"', () => {
    badConfig(/^policy\.allowedMeasurements$/, () => normalizePolicy({ allowedMeasurements: [] }));
    badConfig(/^policy\.allowedMeasurements$/, () =>
      normalizePolicy({ allowedMeasurements: bootChain as never }),
    );
    const { rtmr1: _kernel, ...noKernel } = bootChain;
    badConfig(/\[0\]\.rtmr1$/, () => normalizePolicy({ allowedMeasurements: [noKernel as never] }));
    badConfig(/\[0\]\.rtrm1$/, () =>
      normalizePolicy({ allowedMeasurements: [{ ...bootChain, rtrm1: quote.rtmr1 } as never] }),
    );
    badConfig(/\[0\]\.mrtd$/, () =>
      normalizePolicy({ allowedMeasurements: [{ ...bootChain, mrtd: 'abcd' }] }),
    );
    badConfig(/\[1\]$/, () => normalizePolicy({ allowedMeasurements: [bootChain, null as never] }));
  });

  test('allowedMrtds keeps working beside it', () => {
    const policy = normalizePolicy({
      allowedMrtds: [other(quote.mrtd)],
      allowedMeasurements: [bootChain],
    });
    assert.throws(
      () => applyPolicy(facts, policy),
      (error: unknown) => isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  });
});

describe('honest defaults', () => {
  const weak = /without policy\.allowedMeasurements or policy\.trustedKmsRoots/;

  test('app-id, compose-hash or MRTD pins without a boot-chain or KMS pin warn', () => {
    for (const policy of [
      { allowedAppIds: [app.appId!] },
      { allowedComposeHashes: [app.composeHash!] },
      { allowedMrtds: [quote.mrtd], allowedAppIds: [app.appId!] },
    ]) {
      const warnings = policyWarnings(normalizePolicy(policy));
      assert.equal(
        warnings.filter((warning) => weak.test(warning)).length,
        1,
        JSON.stringify(policy),
      );
    }
  });

  test('no such warning once the boot chain or a KMS root is pinned', () => {
    const kmsRoot = 'ab'.repeat(32);
    for (const policy of [
      { allowedAppIds: [app.appId!], allowedMeasurements: [bootChain] },
      { allowedAppIds: [app.appId!], trustedKmsRoots: [kmsRoot] },
    ]) {
      assert.deepEqual(policyWarnings(normalizePolicy(policy)), [], JSON.stringify(policy));
    }
  });
});
