import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { LeaderFollower } from '../src/cluster/leader-follower.js';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { type DnsServer, startDnsServer } from '../src/testing/cluster/dns-server.js';
import { createManifestSigner } from '../src/testing/cluster/manifest-signer.js';

const DOMAIN = 'cluster.test';
const signer = createManifestSigner();

describe('LeaderFollower against a DNS server on loopback', () => {
  let dns: DnsServer;
  before(async () => {
    dns = await startDnsServer();
  });
  after(() => dns.close());

  test('periodic lookups go on when the timer fires before the back-off ends by the clocks', async () => {
    // Node's timers run on the event loop's cached clock, which lags the
    // wall clock and performance.now() when the loop was busy: a back-off
    // timer can fire a little before the back-off ends by those clocks. Here
    // the clocks run 60 ms ahead during the failing lookup, so the timer fires
    // 60 ms "early". A follower that then skipped the lookup without a new
    // timer stopped re-reading the manifest for good (seen as a hung
    // cluster-pool test on a loaded CI machine).
    dns.setFault('servfail');
    const realDateNow = Date.now;
    const realPerformanceNow = performance.now.bind(performance);
    let ahead = 60;
    Date.now = () => realDateNow() + ahead;
    performance.now = () => realPerformanceNow() + ahead;
    const failures: RaTlsError[] = [];
    const failed = new EventEmitter();
    const follower = new LeaderFollower(
      {
        domain: DOMAIN,
        signer: signer.address,
        resolver: [dns.address],
        refreshEvery: '100ms',
        lookupTimeout: '1s',
      },
      {
        connectTimeoutMs: 1000,
        handshakeTimeoutMs: 1000,
        verify: () => Promise.reject(new RaTlsError('DISCOVERY_FAILED', 'not used')),
        changed: () => assert.fail('no leader was published'),
        failed: (error) => {
          ahead = 0;
          failures.push(error);
          failed.emit('failed');
        },
      },
    );
    try {
      await follower.refresh();
      assert.equal(failures.length, 1);
      const deadline = setTimeout(() => failed.emit('error', new Error('lookups stopped')), 5000);
      try {
        while (failures.length < 4) await once(failed, 'failed');
      } finally {
        clearTimeout(deadline);
      }
      for (const failure of failures) assert.ok(isRaTlsError(failure, 'DISCOVERY_FAILED'));
    } finally {
      follower.close();
      Date.now = realDateNow;
      performance.now = realPerformanceNow;
      dns.setFault('none');
    }
  });
});
