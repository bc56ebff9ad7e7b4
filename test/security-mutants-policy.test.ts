/**
 * Tests that kill the mutants of src/policy that survived `npm run mutate`
 * (issue 10): each pins a behaviour of the policy a caller or an operator
 * relies on — which servers are refused, with which code, and what the
 * error says to change. Pure: the real dstack and Intel fixtures, no I/O.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import type { KmsChainFacts } from '../src/evidence/certificate-chain.js';
import { parseQuote } from '../src/evidence/quote.js';
import { verifyAppIdentity } from '../src/evidence/rtmr3.js';
import type { ParsedQuote } from '../src/evidence/types.js';
import { decodeVersionedAttestation } from '../src/evidence/versioned-attestation.js';
import { checkKmsChain, normalizeKmsRoots } from '../src/policy/kms-roots.js';
import { checkMeasurements, normalizeMeasurementSets } from '../src/policy/measurements.js';
import {
  applyPolicy,
  DEFAULT_ACCEPTABLE_TCB_STATUSES,
  normalizePolicy,
  type PolicyFacts,
  policyWarnings,
} from '../src/policy/policy.js';
import type { MeasurementSet, Policy } from '../src/policy/types.js';
import { sha256, toHex } from '../src/util/bytes.js';

const FIXTURES = new URL('./fixtures/', import.meta.url);
const sample = decodeVersionedAttestation(
  new Uint8Array(readFileSync(new URL('dstack-attestation-v0/attestation.bin', FIXTURES))),
);
const quote = parseQuote(sample.quote);
const app = verifyAppIdentity(sample.runtimeEvents, quote.rtmr3);
const facts: PolicyFacts = { quote, tcbStatus: 'UpToDate', app };
const bootChain: MeasurementSet = {
  mrtd: quote.mrtd,
  rtmr0: quote.rtmr0,
  rtmr1: quote.rtmr1,
  rtmr2: quote.rtmr2,
};
const other = (hex: string) => (hex.startsWith('00') ? `11${hex.slice(2)}` : `00${hex.slice(2)}`);

// A real self-signed root (Intel's SGX root CA, from the TDX v4 collateral's issuer chain).
const collateral = JSON.parse(
  readFileSync(new URL('intel-tdx-v4/collateral.json', FIXTURES), 'utf8'),
) as { tcb_info_issuer_chain: string };
const intelRootPem = collateral.tcb_info_issuer_chain
  .split(/(?=-----BEGIN CERTIFICATE-----)/)
  .map((block) => block.trim())
  .find((block) => {
    const certificate = new X509Certificate(block);
    return certificate.subject === certificate.issuer;
  })!;
const intelRoot = new X509Certificate(intelRootPem);
const intelRootDer = new Uint8Array(intelRoot.raw);
const intelRootSpki = toHex(
  sha256(new Uint8Array(intelRoot.publicKey.export({ type: 'spki', format: 'der' }))),
);

interface Expected {
  readonly code: string;
  readonly mentions?: readonly (string | RegExp)[];
  readonly absent?: readonly (string | RegExp)[];
  readonly details?: Record<string, unknown>;
}

function failsWith(run: () => unknown, expected: Expected): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, expected.code, error.message);
    for (const text of expected.mentions ?? []) {
      if (typeof text === 'string')
        assert.ok(error.message.includes(text), `"${error.message}" should mention ${text}`);
      else assert.match(error.message, text);
    }
    for (const text of expected.absent ?? []) {
      if (typeof text === 'string')
        assert.ok(!error.message.includes(text), `"${error.message}" should not mention ${text}`);
      else assert.doesNotMatch(error.message, text);
    }
    if (expected.details !== undefined) assert.deepEqual(error.details, expected.details);
    return true;
  });
}

describe('normalizePolicy: what is accepted and what is BAD_CONFIG', () => {
  test('null is no policy at all; a non-object or an array is BAD_CONFIG on "policy"', () => {
    assert.deepEqual(normalizePolicy(null as never), normalizePolicy({}));
    for (const bad of ['strict', 7, true, [{}]]) {
      failsWith(() => normalizePolicy(bad as never), {
        code: 'BAD_CONFIG',
        mentions: [/^policy must be an object\.$/],
        details: { option: 'policy' },
      });
    }
  });

  test('an unknown option names itself and the option probably meant', () => {
    failsWith(() => normalizePolicy({ allowedMrtd: [] } as never), {
      code: 'BAD_CONFIG',
      mentions: ['policy has no option "policy.allowedMrtd": did you mean "policy.allowedMrtds"?'],
      details: { option: 'policy.allowedMrtd', suggestion: 'policy.allowedMrtds' },
    });
  });

  test('an option far from every real one lists them all', () => {
    failsWith(() => normalizePolicy({ somethingElse: true } as never), {
      code: 'BAD_CONFIG',
      mentions: [
        'policy has no option "policy.somethingElse"; its options are acceptableTcbStatuses, allowDebugMode, allowedAppIds, allowedComposeHashes, allowedMeasurements, allowedMrtds',
        'trustedKmsRoots',
      ],
      details: { option: 'policy.somethingElse' },
    });
  });

  test('every documented option is accepted', () => {
    const policy = normalizePolicy({
      allowedMrtds: [quote.mrtd],
      allowedAppIds: [app.appId!],
      allowedComposeHashes: [app.composeHash!],
      allowedMeasurements: [bootChain],
      trustedKmsRoots: [intelRootSpki],
      allowDebugMode: true,
      acceptableTcbStatuses: ['OutOfDate'],
    });
    assert.deepEqual(policy.allowedMrtds, [quote.mrtd]);
    assert.deepEqual(policy.allowedAppIds, [app.appId]);
    assert.deepEqual(policy.allowedComposeHashes, [app.composeHash]);
    assert.deepEqual(policy.trustedKmsRoots, [intelRootSpki]);
    assert.equal(policy.allowDebugMode, true);
    assert.deepEqual(policy.acceptableTcbStatuses, ['OutOfDate']);
  });

  test('allowDebugMode false stays false; a non-boolean is BAD_CONFIG', () => {
    assert.equal(normalizePolicy({ allowDebugMode: false }).allowDebugMode, false);
    assert.equal(normalizePolicy({}).allowDebugMode, false);
    failsWith(() => normalizePolicy({ allowDebugMode: 1 } as never), {
      code: 'BAD_CONFIG',
      mentions: [/^policy\.allowDebugMode must be true or false\.$/],
      details: { option: 'policy.allowDebugMode' },
    });
  });

  test('a hex list that is not an array says what it must be', () => {
    failsWith(() => normalizePolicy({ allowedAppIds: 'ab'.repeat(20) } as never), {
      code: 'BAD_CONFIG',
      mentions: [/^policy\.allowedAppIds must be an array of 20-byte hex strings\.$/],
      details: { option: 'policy.allowedAppIds' },
    });
  });

  test('a bad hex entry names its index, the length, and what was given', () => {
    failsWith(() => normalizePolicy({ allowedAppIds: [app.appId!, 'zz'] }), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.allowedAppIds\[1\] must be 20 bytes of hex \(40 hex digits, 0x optional\), got "zz"\.$/,
      ],
      details: { option: 'policy.allowedAppIds[1]' },
    });
    failsWith(() => normalizePolicy({ allowedComposeHashes: [42] } as never), {
      code: 'BAD_CONFIG',
      mentions: [/got number\.$/, '64 hex digits'],
    });
    // A long value is cut, so a pasted blob cannot flood the log.
    const long = 'x'.repeat(500);
    failsWith(() => normalizePolicy({ allowedMrtds: [long] }), {
      code: 'BAD_CONFIG',
      mentions: [`got "${'x'.repeat(120)}…".`, '96 hex digits'],
    });
    failsWith(() => normalizePolicy({ allowedMrtds: ['y'.repeat(120)] }), {
      code: 'BAD_CONFIG',
      mentions: [`got "${'y'.repeat(120)}".`],
    });
  });

  test('TCB statuses are trimmed, deduplicated and frozen; an absent list is the default', () => {
    const policy = normalizePolicy({
      acceptableTcbStatuses: [' OutOfDate ', 'OutOfDate', 'UpToDate'] as never,
    });
    assert.deepEqual(policy.acceptableTcbStatuses, ['OutOfDate', 'UpToDate']);
    assert.ok(Object.isFrozen(policy.acceptableTcbStatuses));
    assert.equal(normalizePolicy({}).acceptableTcbStatuses, DEFAULT_ACCEPTABLE_TCB_STATUSES);
    assert.ok(Object.isFrozen(DEFAULT_ACCEPTABLE_TCB_STATUSES));
    assert.deepEqual([...DEFAULT_ACCEPTABLE_TCB_STATUSES], ['UpToDate', 'SWHardeningNeeded']);
  });

  test('a TCB status list that is not an array, or holds a non-status, is BAD_CONFIG', () => {
    failsWith(() => normalizePolicy({ acceptableTcbStatuses: 'UpToDate' } as never), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.acceptableTcbStatuses must be a non-empty array of TCB statuses \(UpToDate, SWHardeningNeeded, ConfigurationNeeded, /,
      ],
      details: { option: 'policy.acceptableTcbStatuses' },
    });
    failsWith(() => normalizePolicy({ acceptableTcbStatuses: [3] } as never), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.acceptableTcbStatuses\[0\] number is not a TCB status \(expected one of UpToDate, /,
      ],
      details: { option: 'policy.acceptableTcbStatuses[0]' },
    });
  });
});

describe('policyWarnings names exactly the weak pins', () => {
  const weak = (policy: Policy) =>
    policyWarnings(normalizePolicy(policy)).filter((warning) => /pinned without/.test(warning));

  test('each weak pin alone is named, with "is"', () => {
    for (const [option, policy] of [
      ['policy.allowedMrtds', { allowedMrtds: [quote.mrtd] }],
      ['policy.allowedAppIds', { allowedAppIds: [app.appId!] }],
      ['policy.allowedComposeHashes', { allowedComposeHashes: [app.composeHash!] }],
    ] as const) {
      const warnings = weak(policy);
      assert.equal(warnings.length, 1, option);
      assert.ok(
        warnings[0]!.startsWith(
          `${option} is pinned without policy.allowedMeasurements or policy.trustedKmsRoots: `,
        ),
        warnings[0],
      );
      assert.match(warnings[0]!, /Pin the boot chain \(MRTD \+ RTMR0-2\) or the KMS root\.$/);
      assert.ok(
        warnings[0]!.includes(
          'MRTD measures only the firmware, and app-id and compose-hash are written into RTMR3 by the booted OS, which nothing pins, so a foreign kernel',
        ),
        warnings[0],
      );
    }
  });

  test('several weak pins are listed together, with "are"', () => {
    const warnings = weak({
      allowedMrtds: [quote.mrtd],
      allowedAppIds: [app.appId!],
      allowedComposeHashes: [app.composeHash!],
    });
    assert.equal(warnings.length, 1);
    assert.ok(
      warnings[0]!.startsWith(
        'policy.allowedMrtds, policy.allowedAppIds, policy.allowedComposeHashes are pinned without',
      ),
      warnings[0],
    );
  });

  test('an MRTD pin silences "any MRTD is accepted" but not the weak-pin warning', () => {
    const warnings = policyWarnings(normalizePolicy({ allowedMrtds: [quote.mrtd] }));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^policy\.allowedMrtds is pinned without/);
  });

  test('no pin at all warns once, naming the options to pin; debug adds its own warning', () => {
    assert.deepEqual(policyWarnings(normalizePolicy({})), [
      'policy.allowedMrtds is empty: any MRTD (any firmware, any OS) is accepted; pin policy.allowedMeasurements or policy.trustedKmsRoots.',
    ]);
    const debug = policyWarnings(
      normalizePolicy({ allowDebugMode: true, allowedMeasurements: [bootChain] }),
    );
    assert.deepEqual(debug, [
      'policy.allowDebugMode is true: a debug TD, whose memory the host can read, is accepted; never use in production.',
    ]);
  });

  test('a KMS pin alone silences both pin warnings', () => {
    assert.deepEqual(policyWarnings(normalizePolicy({ trustedKmsRoots: [intelRootSpki] })), []);
    assert.deepEqual(
      policyWarnings(
        normalizePolicy({ allowedMrtds: [quote.mrtd], trustedKmsRoots: [intelRootSpki] }),
      ),
      [],
    );
  });
});

describe('applyPolicy: codes, messages and details', () => {
  test('without events, an empty app allowlist is no rule', () => {
    assert.doesNotThrow(() => applyPolicy({ quote, tcbStatus: 'UpToDate' }, normalizePolicy()));
  });

  test('a non-zero mr_signer_seam names the value in details and message', () => {
    const mrSignerSeam = `${'00'.repeat(47)}01`;
    failsWith(
      () => applyPolicy({ ...facts, quote: { ...quote, mrSignerSeam } }, normalizePolicy()),
      {
        code: 'SEAM_SIGNER_NOT_ZERO',
        mentions: [
          `mr_signer_seam is ${mrSignerSeam}, not all zero`,
          'No policy option allows this',
        ],
        details: { mrSignerSeam },
      },
    );
  });

  test('an all-zero mr_service_td (TD 1.5) passes; a non-zero one names itself', () => {
    const td15: ParsedQuote = { ...quote, bodyType: 'td15', mrServiceTd: '00'.repeat(48) };
    assert.doesNotThrow(() => applyPolicy({ ...facts, quote: td15 }, normalizePolicy()));
    const mrServiceTd = `80${'00'.repeat(47)}`;
    failsWith(() => applyPolicy({ ...facts, quote: { ...td15, mrServiceTd } }, normalizePolicy()), {
      code: 'SEAM_SIGNER_NOT_ZERO',
      mentions: [`mr_service_td is ${mrServiceTd}, not all zero: a service TD`],
      details: { mrServiceTd },
    });
  });

  test('a debug TD names td_attributes; verifierSaysDebug false does not make it debug', () => {
    const debug: ParsedQuote = { ...quote, isDebug: true };
    failsWith(() => applyPolicy({ ...facts, quote: debug }, normalizePolicy()), {
      code: 'DEBUG_MODE',
      mentions: [`(td_attributes ${quote.tdAttributes})`, 'policy.allowDebugMode'],
      details: { tdAttributes: quote.tdAttributes },
    });
    assert.doesNotThrow(() =>
      applyPolicy({ ...facts, verifierSaysDebug: false }, normalizePolicy()),
    );
  });

  test('MRTD_NOT_ALLOWED carries the MRTD; BAD_TCB_STATUS lists the accepted statuses', () => {
    failsWith(() => applyPolicy(facts, normalizePolicy({ allowedMrtds: [other(quote.mrtd)] })), {
      code: 'MRTD_NOT_ALLOWED',
      details: { mrtd: quote.mrtd },
    });
    failsWith(
      () =>
        applyPolicy(
          { ...facts, tcbStatus: 'Revoked' },
          normalizePolicy({ acceptableTcbStatuses: ['UpToDate', 'OutOfDate'] }),
        ),
      {
        code: 'BAD_TCB_STATUS',
        mentions: [
          'TCB status Revoked is not in policy.acceptableTcbStatuses (UpToDate, OutOfDate)',
        ],
        details: { tcbStatus: 'Revoked' },
      },
    );
    // unverified: false is a real verifier: the status rule applies.
    failsWith(
      () => applyPolicy({ ...facts, tcbStatus: 'Revoked', unverified: false }, normalizePolicy()),
      {
        code: 'BAD_TCB_STATUS',
      },
    );
  });

  test('app rules: details name the value; APP_IDENTITY_UNVERIFIED says which event is missing', () => {
    failsWith(() => applyPolicy(facts, normalizePolicy({ allowedAppIds: ['cd'.repeat(20)] })), {
      code: 'APP_NOT_ALLOWED',
      mentions: [`app-id ${app.appId} is not in policy.allowedAppIds`],
      details: { appId: app.appId },
    });
    failsWith(
      () => applyPolicy(facts, normalizePolicy({ allowedComposeHashes: ['ef'.repeat(32)] })),
      {
        code: 'COMPOSE_HASH_NOT_ALLOWED',
        mentions: [`compose-hash ${app.composeHash} is not in policy.allowedComposeHashes`],
        details: { composeHash: app.composeHash },
      },
    );
    failsWith(
      () =>
        applyPolicy(
          { quote, tcbStatus: 'UpToDate' },
          normalizePolicy({ allowedComposeHashes: [app.composeHash!] }),
        ),
      {
        code: 'APP_IDENTITY_UNVERIFIED',
        mentions: [
          'policy.allowedComposeHashes is set',
          'no verified compose-hash runtime event (no runtime events)',
          'Remove policy.allowedComposeHashes',
          'records compose-hash',
        ],
        details: { option: 'policy.allowedComposeHashes' },
      },
    );
    failsWith(
      () =>
        applyPolicy(
          { ...facts, app: { ...app, appId: undefined } },
          normalizePolicy({ allowedAppIds: [app.appId!] }),
        ),
      {
        code: 'APP_IDENTITY_UNVERIFIED',
        mentions: ['no verified app-id runtime event (no app-id event)'],
        details: { option: 'policy.allowedAppIds' },
      },
    );
  });
});

describe('allowedMeasurements: normalisation and the closest set', () => {
  test('a set without rtmr0 is kept apart from the same set with rtmr0', () => {
    const { rtmr0: _shape, ...anyShape } = bootChain;
    const sets = normalizeMeasurementSets([anyShape, bootChain, anyShape]);
    assert.equal(sets.length, 2);
    assert.deepEqual(sets[0], anyShape);
    assert.equal('rtmr0' in sets[0]!, false);
    assert.deepEqual(sets[1], bootChain);
  });

  test('a missing or bad register says which and what was given', () => {
    const { rtmr2: _initrd, ...noInitrd } = bootChain;
    failsWith(() => normalizeMeasurementSets([noInitrd]), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.allowedMeasurements\[0\]\.rtmr2 must be 48 bytes of hex \(96 hex digits, 0x optional\), got nothing; only rtmr0 may be left out\.$/,
      ],
      details: { option: 'policy.allowedMeasurements[0].rtmr2' },
    });
    failsWith(() => normalizeMeasurementSets([{ ...bootChain, rtmr0: 'abc' }]), {
      code: 'BAD_CONFIG',
      mentions: [/got "abc"\.$/],
      absent: ['only rtmr0 may be left out'],
    });
    failsWith(() => normalizeMeasurementSets([{ ...bootChain, rtmr1: 7 }]), {
      code: 'BAD_CONFIG',
      mentions: [/got number; only rtmr0 may be left out\.$/],
    });
    failsWith(() => normalizeMeasurementSets([{ ...bootChain, mrtd: 'q'.repeat(300) }]), {
      code: 'BAD_CONFIG',
      mentions: [`got "${'q'.repeat(120)}…"`],
    });
    failsWith(() => normalizeMeasurementSets([{ ...bootChain, mrtd: 'q'.repeat(120) }]), {
      code: 'BAD_CONFIG',
      mentions: [`got "${'q'.repeat(120)}";`],
    });
  });

  test('non-objects and unknown registers are BAD_CONFIG saying what is expected', () => {
    failsWith(() => normalizeMeasurementSets([[bootChain.mrtd]]), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.allowedMeasurements\[0\] must be an object \{ mrtd, rtmr0\?, rtmr1, rtmr2 \}\.$/,
      ],
    });
    failsWith(() => normalizeMeasurementSets(['x']), { code: 'BAD_CONFIG' });
    failsWith(() => normalizeMeasurementSets([5]), {
      code: 'BAD_CONFIG',
      mentions: [/^policy\.allowedMeasurements\[0\] must be an object/],
    });
    failsWith(() => normalizeMeasurementSets([{ ...bootChain, rtmr3: bootChain.mrtd }]), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.allowedMeasurements\[0\]\.rtmr3 is not a boot register \(expected mrtd, rtmr0, rtmr1, rtmr2\)\.$/,
      ],
    });
    failsWith(() => normalizeMeasurementSets('x'), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.allowedMeasurements must be a non-empty array of \{ mrtd, rtmr0\?, rtmr1, rtmr2 \} \(omit the option/,
      ],
    });
  });

  test('one set: the message names the register, what it measures, both values, and no set number', () => {
    const kernel = other(quote.rtmr1);
    failsWith(
      () => checkMeasurements(quote, normalizeMeasurementSets([{ ...bootChain, rtmr1: kernel }])),
      {
        code: 'MEASUREMENT_NOT_ALLOWED',
        mentions: [
          `RTMR1 ${quote.rtmr1} (the kernel) differs from policy.allowedMeasurements, which expects ${kernel}: `,
          'the server booted another boot chain',
        ],
        absent: ['closest set'],
        details: {
          register: 'RTMR1',
          setIndex: 0,
          mrtd: quote.mrtd,
          rtmr0: quote.rtmr0,
          rtmr1: quote.rtmr1,
          rtmr2: quote.rtmr2,
        },
      },
    );
    for (const [register, name, what] of [
      ['mrtd', 'MRTD', 'the firmware'],
      ['rtmr0', 'RTMR0', 'the firmware configuration (VM shape)'],
      ['rtmr2', 'RTMR2', 'the kernel command line and initrd'],
    ] as const) {
      const sets = normalizeMeasurementSets([{ ...bootChain, [register]: other(quote[register]) }]);
      failsWith(() => checkMeasurements(quote, sets), {
        code: 'MEASUREMENT_NOT_ALLOWED',
        mentions: [`${name} ${quote[register]} (${what}) differs`],
      });
    }
  });

  test('among equally close sets the first is named; a later, closer set wins', () => {
    const firstMrtd = other(quote.mrtd);
    const secondMrtd = `22${quote.mrtd.slice(2)}`;
    const sets = normalizeMeasurementSets([
      { ...bootChain, mrtd: firstMrtd },
      { ...bootChain, mrtd: secondMrtd },
    ]);
    failsWith(() => checkMeasurements(quote, sets), {
      code: 'MEASUREMENT_NOT_ALLOWED',
      mentions: [`(closest set #0), which expects ${firstMrtd}`],
    });
    const closer = normalizeMeasurementSets([
      { ...bootChain, mrtd: firstMrtd },
      { ...bootChain, rtmr0: other(quote.rtmr0) },
      { ...bootChain, mrtd: secondMrtd },
    ]);
    failsWith(() => checkMeasurements(quote, closer), {
      code: 'MEASUREMENT_NOT_ALLOWED',
      mentions: ['RTMR0', '(closest set #1)'],
    });
  });

  test('a set that leaves rtmr0 out matches whatever RTMR0 the server has', () => {
    const { rtmr0: _shape, ...anyShape } = bootChain;
    const shifted: ParsedQuote = { ...quote, rtmr0: other(quote.rtmr0) };
    assert.doesNotThrow(() => checkMeasurements(shifted, normalizeMeasurementSets([anyShape])));
    failsWith(() => checkMeasurements(shifted, normalizeMeasurementSets([bootChain])), {
      code: 'MEASUREMENT_NOT_ALLOWED',
      mentions: ['RTMR0'],
    });
  });
});

describe('trustedKmsRoots: pins and the KMS rule', () => {
  test('a root as DER bytes, as PEM, or as its SPKI SHA-256 is the same pin', () => {
    assert.deepEqual(normalizeKmsRoots([intelRootDer]), [intelRootSpki]);
    assert.deepEqual(normalizeKmsRoots([intelRootPem]), [intelRootSpki]);
    assert.deepEqual(normalizeKmsRoots([intelRootPem, intelRootDer, intelRootSpki]), [
      intelRootSpki,
    ]);
    assert.ok(Object.isFrozen(normalizeKmsRoots([intelRootSpki])));
    assert.deepEqual(normalizeKmsRoots(undefined), []);
  });

  test('a bad pin names its index and what was given', () => {
    failsWith(() => normalizeKmsRoots([intelRootSpki, null]), {
      code: 'BAD_CONFIG',
      mentions: [
        /^policy\.trustedKmsRoots\[1\] must be one certificate \(PEM text or DER bytes\) or a 64-hex SPKI SHA-256, got null\.$/,
      ],
      details: { option: 'policy.trustedKmsRoots[1]' },
    });
    failsWith(() => normalizeKmsRoots([12]), { code: 'BAD_CONFIG', mentions: [/got number\.$/] });
    failsWith(() => normalizeKmsRoots(['k'.repeat(200)]), {
      code: 'BAD_CONFIG',
      mentions: [`got "${'k'.repeat(80)}…".`],
    });
    failsWith(() => normalizeKmsRoots(['k'.repeat(80)]), {
      code: 'BAD_CONFIG',
      mentions: [`got "${'k'.repeat(80)}".`],
    });
    failsWith(() => normalizeKmsRoots(intelRootSpki), {
      code: 'BAD_CONFIG',
      mentions: [/^policy\.trustedKmsRoots must be a non-empty array of KMS root certificates/],
      details: { option: 'policy.trustedKmsRoots' },
    });
  });

  const verified = (rootSpkiSha256: string, appId: string): KmsChainFacts => ({
    verified: true,
    rootSpkiSha256,
    appId,
  });

  test('no pin: no rule, whatever the chain', () => {
    assert.doesNotThrow(() =>
      checkKmsChain({ verified: false, reason: 'anything' }, undefined, []),
    );
    assert.doesNotThrow(() => checkKmsChain(undefined, undefined, []));
  });

  test('an unverified chain is KMS_NOT_TRUSTED with its reason and the root it ended in', () => {
    failsWith(
      () =>
        checkKmsChain(
          { verified: false, reason: 'the leaf is odd', lastSpkiSha256: intelRootSpki },
          app,
          [intelRootSpki],
        ),
      {
        code: 'KMS_NOT_TRUSTED',
        mentions: ['proves no KMS: the leaf is odd. Only a CVM a pinned dstack KMS authorised'],
        details: { lastSpkiSha256: intelRootSpki },
      },
    );
    failsWith(() => checkKmsChain({ verified: false, reason: 'r' }, app, [intelRootSpki]), {
      code: 'KMS_NOT_TRUSTED',
      details: {},
    });
    failsWith(() => checkKmsChain(undefined, app, [intelRootSpki]), {
      code: 'KMS_NOT_TRUSTED',
      mentions: ['no certificate chain was captured'],
      details: {},
    });
  });

  test('a foreign root, a missing app-id and a different app-id each say so', () => {
    const foreign = 'cd'.repeat(32);
    failsWith(() => checkKmsChain(verified(foreign, app.appId!), app, [intelRootSpki]), {
      code: 'KMS_NOT_TRUSTED',
      mentions: [
        `ends in the KMS root with SPKI SHA-256 ${foreign}, which is not in policy.trustedKmsRoots`,
        'another KMS issued its keys. Add that root only if it is your KMS.',
      ],
      details: { kmsRoot: foreign },
    });
    failsWith(
      () =>
        checkKmsChain(verified(intelRootSpki, app.appId!), { ...app, appId: undefined }, [
          intelRootSpki,
        ]),
      {
        code: 'APP_IDENTITY_UNVERIFIED',
        mentions: [`compare with the app CA's claim ${app.appId}`],
        details: { option: 'policy.trustedKmsRoots', kmsAppId: app.appId },
      },
    );
    failsWith(
      () => checkKmsChain(verified(intelRootSpki, app.appId!), undefined, [intelRootSpki]),
      {
        code: 'APP_IDENTITY_UNVERIFIED',
      },
    );
    const claimed = '0b'.repeat(20);
    failsWith(() => checkKmsChain(verified(intelRootSpki, claimed), app, [intelRootSpki]), {
      code: 'APP_ID_MISMATCH',
      mentions: [
        `app CA for app-id ${claimed}, but its verified RTMR3 events say app-id ${app.appId}`,
        'the OS claims an app the KMS did not give it keys for. Do not connect.',
      ],
      details: { kmsAppId: claimed, appId: app.appId },
    });
    assert.doesNotThrow(() =>
      checkKmsChain(verified(intelRootSpki, app.appId!), app, [foreign, intelRootSpki]),
    );
  });
});
