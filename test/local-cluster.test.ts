import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { resolveLeader } from '../src/cluster/discovery.js';
import { type LocalCluster, startLocalCluster } from '../src/testing/cluster/local-cluster.js';

const query = async <T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> => {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
};

// A getter: TypeScript would keep an assertion's narrowing of `cluster.primary` across awaits.
const primaryIndex = (cluster: LocalCluster) => cluster.primary?.index;

describe('startLocalCluster: a primary and two hot standbys on streaming replication', () => {
  let cluster: LocalCluster;
  before(async () => {
    cluster = await startLocalCluster({ standbys: 2, synchronous: true, logger: () => {} });
  });
  after(() => cluster.stop());

  test('members have their own instance ids and sidecars; the manifest names the primary', async () => {
    const [primary, s1, s2] = cluster.members;
    assert.deepEqual(
      cluster.members.map((m) => m.role),
      ['primary', 'standby', 'standby'],
    );
    assert.equal(new Set(cluster.members.map((m) => m.instance)).size, 3);
    assert.equal(new Set(cluster.members.map((m) => m.sidecar.port)).size, 3);
    const leader = await resolveLeader(cluster.domain, {
      signer: cluster.clusterOptions.signer,
      resolver: cluster.clusterOptions.resolver,
    });
    assert.equal(leader.instance, primary!.instance);
    assert.equal(leader.port, primary!.sidecar.port);
    assert.equal(leader.epoch, 1);
    for (const standby of [s1!, s2!]) {
      const [row] = await query<{ recovery: boolean }>(
        standby.superuserUrl,
        'SELECT pg_is_in_recovery() AS recovery',
      );
      assert.equal(row!.recovery, true);
    }
  });

  test('a committed write is on the standbys (synchronous), and survives a failover', async () => {
    const [primary, s1, s2] = cluster.members;
    await query(
      primary!.superuserUrl,
      'CREATE TABLE replicated (n int); INSERT INTO replicated VALUES (1)',
    );
    for (const standby of [s1!, s2!]) {
      const [row] = await query<{ n: string }>(
        standby.superuserUrl,
        'SELECT count(*) AS n FROM replicated',
      );
      assert.equal(row!.n, '1');
    }
    await cluster.stopMember(0);
    assert.equal(primaryIndex(cluster), undefined);
    await cluster.promote(1);
    assert.equal(primaryIndex(cluster), 1);
    assert.equal(cluster.publishManifest(), 2);
    await query(s1!.superuserUrl, 'INSERT INTO replicated VALUES (2)');
    const [row] = await query<{ n: string; recovery: boolean }>(
      s2!.superuserUrl,
      'SELECT count(*) AS n, pg_is_in_recovery() AS recovery FROM replicated',
    );
    assert.deepEqual([row!.n, row!.recovery], ['2', true]);
    const leader = await resolveLeader(cluster.domain, {
      signer: cluster.clusterOptions.signer,
      resolver: cluster.clusterOptions.resolver,
    });
    assert.deepEqual([leader.instance, leader.epoch], [s1!.instance, 2]);
  });
});
