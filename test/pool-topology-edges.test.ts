/**
 * Where a pool dials (src/pool/pool-topology.ts), the edges the cluster and
 * multi-host tests leave out: option mistakes before any I/O, following a
 * leader only after attesting it, refusing a connection made to a replaced
 * leader, which errors re-read the manifest, a closed topology that stays
 * quiet, and a multi-host pool that pins no certificate. The cluster parts
 * run against a real DNS server and real RA-TLS servers on loopback (quotes
 * from the DCAP test authority, docs/protocol.md §8), without Postgres.
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { after, before, describe, type TestContext, test } from 'node:test';
import type { PoolClient } from 'pg';
import type { LeaderChangedEvent } from '../src/cluster/leader-follower.js';
import { AttestedConnector } from '../src/connection/attested-connector.js';
import { type ErrorCode, ErrorCodes, isRaTlsError, RaTlsError } from '../src/errors.js';
import { leaderMayHaveMoved, PoolTopology, resolvePoolTarget } from '../src/pool/pool-topology.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import type { TestAuthority } from '../src/testing/authority/test-authority.js';
import { type DnsServer, startDnsServer } from '../src/testing/cluster/dns-server.js';
import { type LocalCluster, startLocalCluster } from '../src/testing/cluster/local-cluster.js';
import { createManifestSigner } from '../src/testing/cluster/manifest-signer.js';
import type { DcapVerifier } from '../src/verification/dcap-verifier.js';
import { authorityWithVerifier, raTlsCredentials } from './pool-harness.js';
import { hangLimit } from './support/hang-limit.js';
import { type RaTlsServer, startRaTlsServer } from './support/ra-tls-server.js';

const silent = () => {};
const SECRET = 'ab'.repeat(32);
const SINGLE = `postgres://teesql_readwrite:${SECRET}@db.example:5433/teesql`;
const SIGNER = `0x${'11'.repeat(20)}`;

const badConfig = (message: RegExp, option: string) => (error: unknown) =>
  isRaTlsError(error, 'BAD_CONFIG') &&
  message.test(error.message) &&
  error.details['option'] === option &&
  !error.message.includes(SECRET);

describe('resolvePoolTarget: where a pool dials, decided before any I/O', () => {
  test('a cluster option that is not an object: BAD_CONFIG naming `cluster`', hangLimit, () => {
    for (const cluster of [null, 'cluster.example', 42]) {
      assert.throws(
        () => resolvePoolTarget({ connectionString: SINGLE, cluster: cluster as never }),
        badConfig(/^cluster must be \{ domain, signer, resolver\? \}$/, 'cluster'),
        String(cluster),
      );
    }
  });

  test('an unknown cluster key: BAD_CONFIG saying where and what was meant', hangLimit, () => {
    assert.throws(
      () =>
        resolvePoolTarget({
          connectionString: SINGLE,
          cluster: { domain: 'cluster.example', signer: SIGNER, refreshEvry: '1s' } as never,
        }),
      badConfig(
        /^cluster has no option "cluster\.refreshEvry": did you mean "cluster\.refreshEvery"\?$/,
        'cluster.refreshEvry',
      ),
    );
  });

  test(
    'cluster with a multi-host connection string: BAD_CONFIG, the manifest names the leader',
    hangLimit,
    () => {
      for (const connectionString of [
        `postgres://teesql_readwrite:${SECRET}@h1,h2/teesql`,
        `postgres://teesql_readwrite:${SECRET}@h1/teesql?target_session_attrs=read-write`,
      ]) {
        assert.throws(
          () =>
            resolvePoolTarget({
              connectionString,
              cluster: { domain: 'cluster.example', signer: SIGNER },
            }),
          badConfig(/^cluster and a multi-host connection string exclude each other/, 'cluster'),
        );
      }
    },
  );

  test(
    'cluster mode: the domain names the pool, the connection string gives the rest',
    hangLimit,
    () => {
      const cluster = { domain: 'cluster.example', signer: SIGNER };
      const target = resolvePoolTarget({ connectionString: SINGLE, cluster });
      assert.equal(target.cluster, cluster);
      assert.equal(target.hosts, undefined);
      assert.equal(target.settings.host, 'cluster.example');
      assert.equal(target.settings.port, 5433);
      assert.equal(target.settings.user, 'teesql_readwrite');
      assert.equal(target.settings.database, 'teesql');
    },
  );

  test('a multi-host string: the hosts are kept, the settings name the first', hangLimit, () => {
    const target = resolvePoolTarget({
      connectionString: `postgres://teesql_readwrite:${SECRET}@h1:5433,h2:6000/teesql`,
    });
    assert.equal(target.cluster, undefined);
    assert.deepEqual(target.hosts?.hosts, [
      { host: 'h1', port: 5433 },
      { host: 'h2', port: 6000 },
    ]);
    assert.equal(target.settings.host, 'h1');
    assert.equal(target.settings.port, 5433);
  });

  test('one server: neither', hangLimit, () => {
    const target = resolvePoolTarget({ connectionString: SINGLE });
    assert.equal(target.cluster, undefined);
    assert.equal(target.hosts, undefined);
    assert.equal(target.settings.host, 'db.example');
  });
});

test(
  'leaderMayHaveMoved: a refused write, a shutdown or a lost connection; not an ordinary SQL error',
  hangLimit,
  () => {
    const sqlError = (code: unknown) => Object.assign(new Error(`sqlstate ${code}`), { code });
    const moved = [
      sqlError('25006'), // read_only_sql_transaction: the leader became a standby
      sqlError('57P01'), // admin_shutdown
      sqlError('57P02'), // crash_shutdown
      sqlError('57P03'), // cannot_connect_now
      new RaTlsError('CONNECTION_LOST', 'the session was lost'),
      new Error('Connection terminated unexpectedly'),
      sqlError('ECONNRESET'),
      sqlError(57),
    ];
    for (const error of moved) assert.equal(leaderMayHaveMoved(error), true, error.message);
    // Every pg-ra-tls error: none of its codes looks like a SQLSTATE.
    for (const code of Object.keys(ErrorCodes) as ErrorCode[]) {
      assert.equal(leaderMayHaveMoved(new RaTlsError(code, 'failed')), true, code);
    }
    const ordinary = [sqlError('42601'), sqlError('23505'), sqlError('40001'), sqlError('0A000')];
    for (const error of ordinary) assert.equal(leaderMayHaveMoved(error), false, error.message);
  },
);

describe('PoolTopology in cluster mode (DNS and RA-TLS servers on loopback, no Postgres)', () => {
  let authority: TestAuthority;
  let verifier: DcapVerifier;
  let mrtd: string;
  let dns: DnsServer;
  const servers: RaTlsServer[] = [];
  const cleanups: (() => void)[] = [];
  const signer = createManifestSigner();
  let domains = 0;

  before(async () => {
    ({
      authority,
      mrtd,
      dcap: verifier,
    } = await authorityWithVerifier('pg-ra-tls pool topology edges'));
    dns = await startDnsServer();
    for (let i = 0; i < 2; i++) servers.push(await startRaTlsServer(raTlsCredentials(authority)));
  });
  after(async () => {
    for (const cleanup of cleanups) cleanup();
    await Promise.all(servers.map((server) => server.close()));
    await dns.close();
    verifier.close();
  });

  /** A topology of a fresh cluster domain (nothing recorded for it yet) and what it reported. */
  const clusterTopology = (cluster: { refreshEvery?: string } = {}) => {
    const domain = `c${++domains}.topology.test`;
    const options = {
      connectionString: SINGLE,
      verifier,
      policy: { allowedMrtds: [mrtd] },
      presentClientCertificate: false,
      logger: silent,
      cluster: {
        domain,
        signer: signer.address,
        resolver: [dns.address],
        lookupTimeout: '5s',
        refreshEvery: '30s',
        ...cluster,
      },
    };
    const connector = new AttestedConnector(options, 'none');
    const events = new EventEmitter();
    const topology = new PoolTopology(resolvePoolTarget(options), connector, {
      leaderChanged: (event) => events.emit('leaderChanged', event),
      discoveryFailed: (error) => events.emit('discoveryFailed', error),
    });
    cleanups.push(() => {
      topology.close();
      connector.close();
    });
    const publish = (epoch: number, server: RaTlsServer, instance: string, by = signer) =>
      dns.setTxt(`_teesql-leader.${domain}`, [
        by.sign({
          cluster: signer.address,
          epoch,
          leader_instance: instance,
          leader_url: `https://127.0.0.1:${server.port}`,
          valid_until: Math.floor(Date.now() / 1000) + 300,
        }),
      ]);
    return { domain, topology, events, publish };
  };

  test(
    'a new leader is attested before the pool moves; a connection to the old one is refused and retried at once',
    hangLimit,
    async () => {
      const { domain, topology, events, publish } = clusterTopology({ refreshEvery: '50ms' });
      const [a, b] = servers as [RaTlsServer, RaTlsServer];
      const instanceA = 'aa'.repeat(20);
      const instanceB = 'bb'.repeat(20);
      publish(1, a, instanceA);
      assert.equal(topology.unpinned, false);
      topology.start();
      const toA = await topology.endpoint!();
      assert.equal(toA.port, a.port);
      assert.equal(topology.replacedLeader(toA), undefined);

      // A manifest for epoch 2 signed by another key: reported, not followed.
      const failed = once(events, 'discoveryFailed') as Promise<[RaTlsError]>;
      publish(2, b, instanceB, createManifestSigner());
      const [forged] = await failed;
      assert.equal(forged.code, 'MANIFEST_SIGNER_MISMATCH');
      assert.equal(topology.replacedLeader(toA), undefined);

      const seenByB = b.connections;
      const changed = once(events, 'leaderChanged') as Promise<[LeaderChangedEvent]>;
      publish(2, b, instanceB);
      const [event] = await changed;
      assert.equal(event.previous?.instance, instanceA);
      assert.equal(event.current.instance, instanceB);
      assert.equal(event.report.mrtd, mrtd);
      assert.ok(b.connections > seenByB, 'the new leader was dialled and attested first');

      // A connection made to the old leader while the pool moved is refused…
      const refused = topology.replacedLeader(toA);
      assert.ok(isRaTlsError(refused, 'SERVER_CHANGED'));
      assert.equal(refused.details['reason'], 'leader-changed');
      assert.equal(
        refused.message,
        `the leader of cluster ${domain} changed while this connection was being made`,
      );
      // …and worth another connect without waiting for a lookup; another SERVER_CHANGED is not.
      assert.equal(await topology.worthAnotherConnect(refused), true);
      assert.equal(
        await topology.worthAnotherConnect(new RaTlsError('SERVER_CHANGED', 'another certificate')),
        false,
      );
      const toB = await topology.endpoint!();
      assert.equal(toB.port, b.port);
      assert.equal(topology.replacedLeader(toB), undefined);
    },
  );

  test(
    'a connection that went back with an error saying the leader may have moved re-reads the manifest at once',
    hangLimit,
    async () => {
      // Nothing recorded for the domain: every lookup fails, and says so.
      const { topology, events } = clusterTopology();
      const failed = once(events, 'discoveryFailed') as Promise<[RaTlsError]>;
      topology.released(Object.assign(new Error('read-only transaction'), { code: '25006' }));
      const [error] = await failed;
      assert.equal(error.code, 'DISCOVERY_FAILED');
    },
  );

  test(
    'a connection made while the manifest expired is refused, saying so (not that the leader changed)',
    hangLimit,
    async (t: TestContext) => {
      t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
      const { domain, topology, publish } = clusterTopology();
      publish(1, servers[0]!, 'aa'.repeat(20));
      topology.start();
      const target = await topology.endpoint!();
      assert.equal(topology.replacedLeader(target), undefined);
      t.mock.timers.tick(3_600_000);
      const refusal = topology.replacedLeader(target);
      assert.ok(isRaTlsError(refusal, 'SERVER_CHANGED'), String(refusal));
      assert.equal(
        refusal.message,
        `the leader manifest of cluster ${domain} expired while this connection was being made`,
      );
      assert.deepEqual(
        refusal.details,
        { reason: 'leader-changed' },
        'the checkout retries at once',
      );
    },
  );

  test('a closed topology looks nothing up any more', hangLimit, async () => {
    const { topology } = clusterTopology();
    topology.close();
    const queries = dns.queries;
    assert.equal(await topology.worthAnotherConnect(new Error('connection lost')), false);
    topology.released(new Error('connection lost'));
    assert.equal(topology.unbelievable(), undefined, 'nothing to wait for');
    assert.equal(dns.queries, queries);
  });
});

describe('a multi-host pool over two sidecars of one Postgres, each with its own certificate', () => {
  let cluster: LocalCluster;
  before(async () => {
    cluster = await startLocalCluster({ standbys: 0, logger: silent });
  });
  after(() => cluster.stop());

  test(
    'pins no certificate: after the first host fails, the second serves even with onServerChange reject',
    hangLimit,
    async () => {
      const first = cluster.stack.sidecar;
      const second = cluster.members[0]!.sidecar;
      const credentials = new URL(cluster.connectionString);
      const pool = createPool({
        connectionString: `postgres://${credentials.username}:${credentials.password}@127.0.0.1:${first.port},127.0.0.1:${second.port}/teesql`,
        ...cluster.clientOptions,
        onServerChange: 'reject',
        max: 2,
        logger: silent,
      });
      const changes: unknown[] = [];
      pool.on('serverChanged', (change) => changes.push(change));
      const clients: PoolClient[] = [];
      try {
        const established = first.stats.established;
        clients.push(await pool.connect());
        assert.equal(first.stats.established, established + 1);
        first.misbehave({ closeDuringHandshake: true });
        const seen = second.stats.established;
        clients.push(await pool.connect());
        assert.equal(second.stats.established, seen + 1);
        const { rows } = await clients[1]!.query<{ ok: number }>('SELECT 1 AS ok');
        assert.deepEqual(rows, [{ ok: 1 }]);
        assert.deepEqual(changes, []);
      } finally {
        first.reset();
        for (const client of clients) client.release();
        await pool.end();
      }
    },
  );
});
