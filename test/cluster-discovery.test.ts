import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { resolveLeader } from '../src/cluster/discovery.js';
import { type ErrorCode, isRaTlsError } from '../src/errors.js';
import { type DnsServer, startDnsServer } from '../src/testing/cluster/dns-server.js';
import { createManifestSigner } from '../src/testing/cluster/manifest-signer.js';

const DOMAIN = 'cluster.test';
const NAME = `_teesql-leader.${DOMAIN}`;
const signer = createManifestSigner();
const attacker = createManifestSigner();
const fields = (epoch: number, host = 'leader.example:5433') => ({
  cluster: '0xbd32b609057a1a4569558a571d535c8f1212b097',
  epoch,
  leader_instance: 'ea23198e3419ebbb240571a29d0112d9bcbe69c0',
  leader_url: `https://${host}`,
  valid_until: Math.floor(Date.now() / 1000) + 600,
});

const rejectsWith = async (code: ErrorCode, run: () => Promise<unknown>) =>
  assert.rejects(run, (error: unknown) => {
    assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });

describe('resolveLeader against a DNS server on loopback', () => {
  let dns: DnsServer;
  let options: { signer: string; resolver: string[]; timeout: number };
  before(async () => {
    dns = await startDnsServer();
    options = { signer: signer.address, resolver: [dns.address], timeout: 3000 };
  });
  after(() => dns.close());

  test('returns the leader of the signed manifest', async () => {
    dns.setFault('none');
    dns.setTxt(NAME, [signer.sign(fields(7))]);
    const leader = await resolveLeader(DOMAIN, options);
    assert.deepEqual(
      [leader.host, leader.port, leader.instance, leader.epoch],
      ['leader.example', 5433, 'ea23198e3419ebbb240571a29d0112d9bcbe69c0', 7],
    );
  });

  test('a forged record listed first is skipped for the genuine one (answer over TCP)', async () => {
    dns.setFault('none');
    // Two manifests exceed 512 bytes: the UDP answer is truncated and the resolver retries on TCP.
    dns.setTxt(NAME, [attacker.sign(fields(99, 'attacker.example')), signer.sign(fields(8))]);
    const leader = await resolveLeader(DOMAIN, options);
    assert.equal(leader.host, 'leader.example');
    assert.equal(leader.epoch, 8);
  });

  test('only forged, tampered, extended, expired or rolled-back records: their code', async () => {
    dns.setFault('none');
    const cases: [ErrorCode, string, number?][] = [
      ['MANIFEST_SIGNER_MISMATCH', attacker.sign(fields(9))],
      ['MANIFEST_SIGNER_MISMATCH', signer.sign(fields(9)).replace('epoch=9', 'epoch=10')],
      ['MANIFEST_INVALID', signer.sign({ ...fields(9), note: 'x' })],
      ['MANIFEST_EXPIRED', signer.sign({ ...fields(9), valid_until: 1_000_000 })],
      ['MANIFEST_EPOCH_ROLLBACK', signer.sign(fields(9)), 10],
    ];
    for (const [code, txt, minEpoch] of cases) {
      dns.setTxt(NAME, [txt]);
      await rejectsWith(code, () =>
        resolveLeader(DOMAIN, { ...options, ...(minEpoch === undefined ? {} : { minEpoch }) }),
      );
    }
  });

  test('an oversized record split into many chunks: MANIFEST_INVALID', async () => {
    dns.setFault('none');
    dns.setTxt(NAME, [Array.from({ length: 12 }, () => 'a'.repeat(255))]);
    await rejectsWith('MANIFEST_INVALID', () => resolveLeader(DOMAIN, options));
  });

  test('no record, SERVFAIL, a black hole and a slow server: DISCOVERY_FAILED', async () => {
    dns.setTxt(NAME, []);
    await rejectsWith('DISCOVERY_FAILED', () => resolveLeader(DOMAIN, options));
    dns.setTxt(NAME, [signer.sign(fields(11))]);
    dns.setFault('servfail');
    await rejectsWith('DISCOVERY_FAILED', () => resolveLeader(DOMAIN, options));
    dns.setFault('silent');
    await rejectsWith('DISCOVERY_FAILED', () =>
      resolveLeader(DOMAIN, { ...options, timeout: 300 }),
    );
    dns.setFault('none');
    dns.setDelay(2000);
    await rejectsWith('DISCOVERY_FAILED', () =>
      resolveLeader(DOMAIN, { ...options, timeout: 300 }),
    );
    dns.setDelay(0);
    assert.equal((await resolveLeader(DOMAIN, options)).epoch, 11);
  });

  test('a DNS server that is down: DISCOVERY_FAILED', async () => {
    const down = await startDnsServer();
    const address = down.address;
    await down.close();
    await rejectsWith('DISCOVERY_FAILED', () =>
      resolveLeader(DOMAIN, { ...options, resolver: [address], timeout: 1000 }),
    );
  });

  test('bad options: BAD_CONFIG before any lookup', async () => {
    const before = dns.queries;
    await rejectsWith('BAD_CONFIG', () => resolveLeader('not a domain', options));
    await rejectsWith('BAD_CONFIG', () => resolveLeader('10.0.0.1', options));
    await rejectsWith('BAD_CONFIG', () => resolveLeader(DOMAIN, { ...options, signer: 'me' }));
    await rejectsWith('BAD_CONFIG', () =>
      resolveLeader(DOMAIN, { ...options, resolver: ['not-an-ip'] }),
    );
    assert.equal(dns.queries, before);
  });
});
