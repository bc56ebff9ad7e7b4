import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { parseQuote } from '../src/evidence/quote.js';
import { verifyAppIdentity } from '../src/evidence/rtmr3.js';
import type { ParsedQuote } from '../src/evidence/types.js';
import { decodeVersionedAttestation } from '../src/evidence/versioned-attestation.js';
import {
  applyPolicy,
  normalizePolicy,
  type PolicyFacts,
  policyWarnings,
} from '../src/policy/policy.js';
import type { Policy } from '../src/policy/types.js';

const FIXTURE = new URL('./fixtures/', import.meta.url);
const sample = decodeVersionedAttestation(
  new Uint8Array(readFileSync(new URL('dstack-attestation-v0/attestation.bin', FIXTURE))),
);
const quote = parseQuote(sample.quote);
const app = verifyAppIdentity(sample.runtimeEvents, quote.rtmr3);
const MRTD = quote.mrtd;
const APP_ID = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
const COMPOSE_HASH = 'c143116fef3940e7f776bfc0919c256232ae5338a6e948c96b711e0b2383483a';
const facts: PolicyFacts = { quote, tcbStatus: 'UpToDate', app };

const fails = (code: string, run: () => void, mentions: string[] = []) =>
  assert.throws(run, (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code);
    for (const text of mentions)
      assert.ok(error.message.includes(text), `${error.message} should mention ${text}`);
    return true;
  });

describe('normalizePolicy', () => {
  test('defaults: no allowlists, no debug, UpToDate and SWHardeningNeeded; frozen', () => {
    const policy = normalizePolicy();
    assert.deepEqual(policy, {
      allowedMrtds: [],
      allowedAppIds: [],
      allowedComposeHashes: [],
      allowedMeasurements: [],
      trustedKmsRoots: [],
      allowDebugMode: false,
      acceptableTcbStatuses: ['UpToDate', 'SWHardeningNeeded'],
    });
    assert.ok(Object.isFrozen(policy) && Object.isFrozen(policy.allowedMrtds));
  });

  test('hex is trimmed, lowercased, 0x-stripped and deduplicated', () => {
    const policy = normalizePolicy({
      allowedMrtds: [` 0x${MRTD.toUpperCase()} `, MRTD],
      allowedAppIds: [`0X${APP_ID}`],
      allowedComposeHashes: [COMPOSE_HASH.toUpperCase()],
    });
    assert.deepEqual(policy.allowedMrtds, [MRTD]);
    assert.deepEqual(policy.allowedAppIds, [APP_ID]);
    assert.deepEqual(policy.allowedComposeHashes, [COMPOSE_HASH]);
  });

  test('values of the wrong length or type are BAD_CONFIG naming the option', () => {
    fails('BAD_CONFIG', () => normalizePolicy({ allowedMrtds: [APP_ID] }), [
      'policy.allowedMrtds[0]',
      '48 bytes',
    ]);
    fails('BAD_CONFIG', () => normalizePolicy({ allowedAppIds: ['xyz'] }), [
      'policy.allowedAppIds[0]',
    ]);
    fails('BAD_CONFIG', () => normalizePolicy({ allowedComposeHashes: [MRTD] }), [
      'policy.allowedComposeHashes[0]',
    ]);
    fails('BAD_CONFIG', () => normalizePolicy({ allowedMrtds: MRTD } as never), [
      'policy.allowedMrtds',
    ]);
    fails('BAD_CONFIG', () => normalizePolicy({ allowDebugMode: 'yes' } as never), [
      'policy.allowDebugMode',
    ]);
  });

  test('unknown TCB status names and typos in option names are BAD_CONFIG', () => {
    fails(
      'BAD_CONFIG',
      () => normalizePolicy({ acceptableTcbStatuses: ['UpToDate', 'Fine'] } as Policy),
      ['policy.acceptableTcbStatuses[1]', 'Fine'],
    );
    fails('BAD_CONFIG', () => normalizePolicy({ acceptableTcbStatuses: [] }), [
      'policy.acceptableTcbStatuses',
    ]);
    fails('BAD_CONFIG', () => normalizePolicy({ allowedMrtd: [MRTD] } as never), [
      'policy.allowedMrtd',
    ]);
  });
});

describe('policyWarnings', () => {
  test('warns that any MRTD is accepted and that debug TDs are accepted', () => {
    const bootChain = { mrtd: MRTD, rtmr1: MRTD, rtmr2: MRTD };
    assert.equal(policyWarnings(normalizePolicy({ allowedMeasurements: [bootChain] })).length, 0);
    const warnings = policyWarnings(normalizePolicy({ allowDebugMode: true }));
    assert.equal(warnings.length, 2);
    assert.match(warnings[0]!, /allowedMrtds is empty/);
    assert.match(warnings[1]!, /allowDebugMode/);
  });
});

describe('applyPolicy', () => {
  test('accepts the sample under a policy pinning its MRTD, app-id and compose-hash', () => {
    const policy = normalizePolicy({
      allowedMrtds: [MRTD],
      allowedAppIds: [APP_ID],
      allowedComposeHashes: [COMPOSE_HASH],
    });
    assert.doesNotThrow(() => applyPolicy(facts, policy));
  });

  test('an MRTD outside the allowlist is MRTD_NOT_ALLOWED', () => {
    const policy = normalizePolicy({ allowedMrtds: ['ab'.repeat(48)] });
    fails('MRTD_NOT_ALLOWED', () => applyPolicy(facts, policy), [MRTD, 'policy.allowedMrtds']);
  });

  test('an app-id or compose-hash outside its allowlist is refused', () => {
    fails(
      'APP_NOT_ALLOWED',
      () => applyPolicy(facts, normalizePolicy({ allowedAppIds: ['cd'.repeat(20)] })),
      [APP_ID, 'policy.allowedAppIds'],
    );
    fails(
      'COMPOSE_HASH_NOT_ALLOWED',
      () => applyPolicy(facts, normalizePolicy({ allowedComposeHashes: ['ef'.repeat(32)] })),
      [COMPOSE_HASH, 'policy.allowedComposeHashes'],
    );
  });

  test('an app allowlist without verified events is APP_IDENTITY_UNVERIFIED', () => {
    const noEvents: PolicyFacts = { quote, tcbStatus: 'UpToDate' };
    fails(
      'APP_IDENTITY_UNVERIFIED',
      () => applyPolicy(noEvents, normalizePolicy({ allowedAppIds: [APP_ID] })),
      ['policy.allowedAppIds'],
    );
    const noComposeEvent: PolicyFacts = { ...facts, app: { ...app, composeHash: undefined } };
    fails(
      'APP_IDENTITY_UNVERIFIED',
      () => applyPolicy(noComposeEvent, normalizePolicy({ allowedComposeHashes: [COMPOSE_HASH] })),
      ['compose-hash'],
    );
  });

  test('a debug TD is DEBUG_MODE unless allowDebugMode is set', () => {
    const debug: PolicyFacts = { ...facts, quote: { ...quote, isDebug: true } };
    fails('DEBUG_MODE', () => applyPolicy(debug, normalizePolicy()), ['policy.allowDebugMode']);
    fails('DEBUG_MODE', () =>
      applyPolicy({ ...facts, verifierSaysDebug: true }, normalizePolicy()),
    );
    assert.doesNotThrow(() => applyPolicy(debug, normalizePolicy({ allowDebugMode: true })));
  });

  test('an unacceptable TCB status is BAD_TCB_STATUS, skipped only for an unverified verifier', () => {
    const outOfDate: PolicyFacts = { ...facts, tcbStatus: 'OutOfDate' };
    fails('BAD_TCB_STATUS', () => applyPolicy(outOfDate, normalizePolicy()), [
      'OutOfDate',
      'policy.acceptableTcbStatuses',
    ]);
    assert.doesNotThrow(() =>
      applyPolicy(outOfDate, normalizePolicy({ acceptableTcbStatuses: ['OutOfDate'] })),
    );
    assert.doesNotThrow(() => applyPolicy({ ...outOfDate, unverified: true }, normalizePolicy()));
    const unverifiedWrongMrtd: PolicyFacts = { ...outOfDate, unverified: true };
    fails('MRTD_NOT_ALLOWED', () =>
      applyPolicy(unverifiedWrongMrtd, normalizePolicy({ allowedMrtds: ['ab'.repeat(48)] })),
    );
  });

  test('a non-zero mr_signer_seam, or mr_service_td in TD 1.5, is SEAM_SIGNER_NOT_ZERO even with a lax policy', () => {
    const lax = normalizePolicy({
      allowDebugMode: true,
      acceptableTcbStatuses: ['Revoked', 'UpToDate'],
    });
    const signer: ParsedQuote = { ...quote, mrSignerSeam: `01${'00'.repeat(47)}` };
    fails('SEAM_SIGNER_NOT_ZERO', () => applyPolicy({ ...facts, quote: signer }, lax), [
      'mr_signer_seam',
    ]);
    const service: ParsedQuote = {
      ...quote,
      bodyType: 'td15',
      mrServiceTd: `${'00'.repeat(47)}02`,
    };
    fails('SEAM_SIGNER_NOT_ZERO', () => applyPolicy({ ...facts, quote: service }, lax), [
      'mr_service_td',
    ]);
  });
});
