import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MAX_MANIFEST_BYTES,
  manifestBody,
  personalMessageHash,
  verifyManifest,
} from '../src/cluster/manifest.js';
import { type ErrorCode, isRaTlsError } from '../src/errors.js';
import { createManifestSigner } from '../src/testing/cluster/manifest-signer.js';
import { toHex } from '../src/util/bytes.js';

// docs/protocol.md §7 golden body.
const GOLDEN_BODY =
  'cluster=0xbd32b609057a1a4569558a571d535c8f1212b097;epoch=42;' +
  'leader_instance=ea23198e3419ebbb240571a29d0112d9bcbe69c0;' +
  'leader_url=https://ea23198e3419ebbb240571a29d0112d9bcbe69c0-5433.dstack-base-prod9.phala.network;' +
  'v=1;valid_until=1713312000';
const GOLDEN = {
  cluster: '0xbd32b609057a1a4569558a571d535c8f1212b097',
  epoch: 42,
  leader_instance: 'ea23198e3419ebbb240571a29d0112d9bcbe69c0',
  leader_url:
    'https://ea23198e3419ebbb240571a29d0112d9bcbe69c0-5433.dstack-base-prod9.phala.network',
  valid_until: 1713312000,
};
const AT_GOLDEN = new Date(1713312000_000 - 3_600_000);
const signer = createManifestSigner();
const other = createManifestSigner();

const refuses = (code: ErrorCode, run: () => unknown) =>
  assert.throws(run, (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });

describe('EIP-191 signatures', () => {
  test('a published Ethereum test vector: key, address, message hash and signature', () => {
    // web3.js accounts documentation: key 0x4c08…2318 signs "Some data".
    const known = createManifestSigner(
      '4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318',
    );
    assert.equal(known.address, '0x2c7536e3605d9c16a7a3d7b1898e529396a65c23');
    assert.equal(
      toHex(personalMessageHash('Some data')),
      '1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655',
    );
    assert.equal(
      known.signBody('Some data'),
      '0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c',
    );
  });
});

describe('verifyManifest', () => {
  test('the golden manifest of docs/protocol.md §7: canonical body, leader, https → 443', () => {
    const txt = signer.sign(GOLDEN);
    assert.equal(txt.slice(0, txt.indexOf(';sig=')), GOLDEN_BODY);
    const manifest = verifyManifest(txt, { signer: signer.address, now: AT_GOLDEN });
    assert.equal(
      manifestBody(Object.fromEntries(txt.split(';').map((f) => f.split('=', 2)))),
      GOLDEN_BODY,
    );
    assert.deepEqual(
      { ...manifest },
      {
        cluster: GOLDEN.cluster,
        instance: GOLDEN.leader_instance,
        leaderUrl: GOLDEN.leader_url,
        host: 'ea23198e3419ebbb240571a29d0112d9bcbe69c0-5433.dstack-base-prod9.phala.network',
        port: 443,
        epoch: 42,
        validUntil: 1713312000,
        signer: signer.address,
      },
    );
  });

  test('wire order does not matter, the signer may be given in any case, v may be 0/1', () => {
    const shuffled = signer.sign(GOLDEN, {
      order: ['valid_until', 'leader_url', 'v', 'epoch', 'cluster', 'leader_instance'],
      recoveryForm: 'raw',
    });
    assert.ok(shuffled.startsWith('valid_until='));
    const manifest = verifyManifest(shuffled, {
      signer: signer.address.toUpperCase().replace('0X', '0x'),
      now: AT_GOLDEN,
    });
    assert.equal(manifest.epoch, 42);
  });

  test('chunks of one TXT record are concatenated; an explicit port wins', () => {
    const txt = signer.sign({ ...GOLDEN, leader_url: 'https://leader.example:5433' });
    const chunks = [txt.slice(0, 100), txt.slice(100, 255), Buffer.from(txt.slice(255))];
    const manifest = verifyManifest(chunks, { signer: signer.address, now: AT_GOLDEN });
    assert.deepEqual([manifest.host, manifest.port], ['leader.example', 5433]);
  });

  test('another signer, a tampered body: MANIFEST_SIGNER_MISMATCH', () => {
    refuses('MANIFEST_SIGNER_MISMATCH', () =>
      verifyManifest(other.sign(GOLDEN), { signer: signer.address, now: AT_GOLDEN }),
    );
    const tampered = signer.sign(GOLDEN).replace('epoch=42', 'epoch=43');
    refuses('MANIFEST_SIGNER_MISMATCH', () =>
      verifyManifest(tampered, { signer: signer.address, now: AT_GOLDEN }),
    );
    const redirected = signer.sign(GOLDEN).replace(GOLDEN.leader_url, 'https://attacker.example');
    refuses('MANIFEST_SIGNER_MISMATCH', () =>
      verifyManifest(redirected, { signer: signer.address, now: AT_GOLDEN }),
    );
  });

  test('an extra field is refused even when the signature covers it', () => {
    refuses('MANIFEST_INVALID', () =>
      verifyManifest(signer.sign({ ...GOLDEN, region: 'eu' }), {
        signer: signer.address,
        now: AT_GOLDEN,
      }),
    );
  });

  test('malformed manifests: MANIFEST_INVALID, never a crash', () => {
    const good = signer.sign(GOLDEN);
    const cases = [
      '',
      'garbage',
      good.replace(/;sig=.*/, ''),
      `${good};epoch=42`,
      good.replace(/sig=0x[0-9a-f]{4}/, 'sig=0xzz'),
      good.replace(/(sig=0x[0-9a-f]{128})[0-9a-f]{2}/, '$11d'),
      good.replace(/sig=0x[0-9a-f]{64}/, `sig=0x${'f'.repeat(64)}`),
      `${good};`,
      good.replace('cluster=', 'cluster =\u00e9'),
      signer.sign({ ...GOLDEN, v: '2' }),
      signer.sign({ ...GOLDEN, epoch: '-1' }),
      signer.sign({ ...GOLDEN, epoch: '042' }),
      signer.sign({ ...GOLDEN, valid_until: 'soon' }),
      signer.sign({ ...GOLDEN, cluster: '0x1234' }),
      signer.sign({ ...GOLDEN, leader_instance: 'not-hex' }),
      signer.sign({ ...GOLDEN, leader_url: 'http://leader.example' }),
      signer.sign({ ...GOLDEN, leader_url: 'postgres://leader.example:5433' }),
      signer.sign({ ...GOLDEN, leader_url: 'https://user:pw@leader.example' }),
      signer.sign({ ...GOLDEN, leader_url: 'https://leader.example/path' }),
      'x'.repeat(MAX_MANIFEST_BYTES + 1),
      Array.from({ length: 300 }, () => 'x'.repeat(255)),
    ];
    for (const txt of cases) {
      refuses('MANIFEST_INVALID', () =>
        verifyManifest(txt, { signer: signer.address, now: AT_GOLDEN }),
      );
    }
  });

  test('valid_until with a 60 s skew allowance by default, configurable', () => {
    const txt = signer.sign(GOLDEN);
    const at = (seconds: number) => new Date((GOLDEN.valid_until + seconds) * 1000);
    assert.equal(verifyManifest(txt, { signer: signer.address, now: at(60) }).epoch, 42);
    refuses('MANIFEST_EXPIRED', () => verifyManifest(txt, { signer: signer.address, now: at(61) }));
    refuses('MANIFEST_EXPIRED', () =>
      verifyManifest(txt, { signer: signer.address, now: at(1), skew: 0 }),
    );
  });

  test('an epoch below one already seen: MANIFEST_EPOCH_ROLLBACK', () => {
    const txt = signer.sign(GOLDEN);
    assert.equal(
      verifyManifest(txt, { signer: signer.address, now: AT_GOLDEN, minEpoch: 42 }).epoch,
      42,
    );
    refuses('MANIFEST_EPOCH_ROLLBACK', () =>
      verifyManifest(txt, { signer: signer.address, now: AT_GOLDEN, minEpoch: 43 }),
    );
  });

  test('bad options: BAD_CONFIG', () => {
    const txt = signer.sign(GOLDEN);
    refuses('BAD_CONFIG', () => verifyManifest(txt, { signer: '0x1234' }));
    refuses('BAD_CONFIG', () =>
      verifyManifest(txt, { signer: signer.address, skew: -1, now: AT_GOLDEN }),
    );
  });
});
