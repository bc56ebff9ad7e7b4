import assert from 'node:assert/strict';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { LeaderChangedEvent } from '../src/cluster/leader-follower.js';
import { type ErrorCode, isRaTlsError } from '../src/errors.js';
import { createPool, type DiscoveryFailedEvent, type RaTlsPool } from '../src/pool/ra-tls-pool.js';
import { type LocalCluster, startLocalCluster } from '../src/testing/cluster/local-cluster.js';
import { createManifestSigner } from '../src/testing/cluster/manifest-signer.js';
import { createDstackIssuer } from '../src/testing/dstack-issuer.js';

const silent = () => {};

/** These pools look up every 100 ms, each lookup bounded by 1 s: a longer silence means lookups stopped. */
const LOOKUP_STALL_MS = 10_000;
const nextFailure = (pool: RaTlsPool) =>
  once(pool, 'discoveryFailed', { signal: AbortSignal.timeout(LOOKUP_STALL_MS) });

const countRows = async (url: string, table: string): Promise<Set<number>> => {
  const database = new URL(url);
  database.pathname = '/teesql';
  const client = new pg.Client({ connectionString: database.href });
  await client.connect();
  try {
    const { rows } = await client.query<{ id: number }>(`SELECT id FROM ${table}`);
    return new Set(rows.map((row) => row.id));
  } finally {
    await client.end();
  }
};

const clusterPool = (cluster: LocalCluster, extra: { refreshEvery?: string } = {}): RaTlsPool =>
  createPool({
    connectionString: cluster.connectionString,
    ...cluster.clientOptions,
    cluster: {
      ...cluster.clusterOptions,
      refreshEvery: extra.refreshEvery ?? '30s',
      lookupTimeout: '1s',
    },
    max: 10,
    logger: silent,
  });

/**
 * The `discoveryFailed` of the first lookup that began after `act`. The pool
 * looks up one at a time, so the lookup in flight when `act` runs (it read the
 * old records) reports first, at most once: the next failure is the new one's.
 */
const nextDiscoveryFailure = async (pool: RaTlsPool, act: () => void): Promise<ErrorCode> => {
  const events: DiscoveryFailedEvent[] = [];
  const onFailed = (event: DiscoveryFailedEvent) => events.push(event);
  pool.on('discoveryFailed', onFailed);
  try {
    act();
    while (events.length < 2) await nextFailure(pool);
  } finally {
    pool.off('discoveryFailed', onFailed);
  }
  const error = events[1]!.error;
  assert.ok(isRaTlsError(error));
  return error.code;
};

describe('a pool following the leader of a local replicated cluster', () => {
  let cluster: LocalCluster;
  before(async () => {
    cluster = await startLocalCluster({ standbys: 2, synchronous: true, logger: silent });
  });
  after(() => cluster.stop());

  test('connects to the manifest leader only, attested like any connection', async () => {
    const pool = clusterPool(cluster);
    try {
      const [leader, s1, s2] = cluster.members;
      const { rows } = await pool.query<{ recovery: boolean }>(
        'SELECT pg_is_in_recovery() AS recovery',
      );
      assert.equal(rows[0]!.recovery, false);
      assert.ok(leader!.sidecar.stats.established > 0);
      assert.equal(s1!.sidecar.stats.accepted, 0);
      assert.equal(s2!.sidecar.stats.accepted, 0);
      assert.ok(pool.attestation !== undefined);
    } finally {
      await pool.end();
    }
  });

  test('manifest attacks and DNS failures are refused with their code; the pool does not move', async () => {
    const pool = clusterPool(cluster, { refreshEvery: '100ms' });
    const [leader, , standby] = cluster.members;
    try {
      await pool.query('SELECT 1');
      const pinned = pool.attestation!.fingerprint;
      const standbySeen = standby!.sidecar.stats.accepted;
      const name = `_teesql-leader.${cluster.domain}`;
      const genuine = cluster.signedManifest({ epoch: cluster.epoch });
      const next = cluster.epoch + 1;
      const attacker = createManifestSigner();
      const toStandby = { leader: 2, epoch: next };
      const forged = attacker.sign({
        cluster: cluster.signer.address,
        epoch: next,
        leader_instance: standby!.instance,
        leader_url: standby!.leaderUrl,
        valid_until: Math.floor(Date.now() / 1000) + 300,
      });
      const cases: [ErrorCode, () => void][] = [
        ['MANIFEST_SIGNER_MISMATCH', () => cluster.dns.setTxt(name, [forged])],
        [
          'MANIFEST_SIGNER_MISMATCH',
          () =>
            cluster.dns.setTxt(name, [
              genuine
                .replace(leader!.leaderUrl, standby!.leaderUrl)
                .replace(/epoch=\d+/, `epoch=${next}`),
            ]),
        ],
        [
          'MANIFEST_INVALID',
          () => cluster.dns.setTxt(name, [`${cluster.signedManifest(toStandby)};x=1`]),
        ],
        [
          'MANIFEST_EXPIRED',
          () =>
            cluster.dns.setTxt(name, [cluster.signedManifest({ ...toStandby, validUntil: 1000 })]),
        ],
        [
          'MANIFEST_EPOCH_ROLLBACK',
          () => cluster.dns.setTxt(name, [cluster.signedManifest({ leader: 2, epoch: 0 })]),
        ],
        [
          'MANIFEST_INVALID',
          () => cluster.dns.setTxt(name, [Array.from({ length: 10 }, () => 'b'.repeat(255))]),
        ],
        [
          'DISCOVERY_FAILED',
          () => {
            cluster.dns.setTxt(name, [genuine]);
            cluster.dns.setFault('servfail');
          },
        ],
        [
          'DISCOVERY_FAILED',
          () => {
            cluster.dns.setFault('none');
            cluster.dns.setDelay(5000);
          },
        ],
      ];
      for (const [code, act] of cases) {
        assert.equal(await nextDiscoveryFailure(pool, act), code);
        // Still served by the leader it had; nothing went to the standby.
        await pool.query('SELECT 1');
        assert.equal(pool.attestation!.fingerprint, pinned);
        assert.equal(standby!.sidecar.stats.accepted, standbySeen);
      }
    } finally {
      cluster.dns.setDelay(0);
      cluster.dns.setFault('none');
      cluster.dns.setTxt(`_teesql-leader.${cluster.domain}`, [
        cluster.signedManifest({ epoch: cluster.epoch }),
      ]);
      await pool.end();
    }
  });

  test('a manifest naming a member that fails policy: its code, 0 bytes to Postgres', async () => {
    const pool = clusterPool(cluster, { refreshEvery: '100ms' });
    const standby = cluster.members[2]!;
    try {
      await pool.query('SELECT 1');
      const pinned = pool.attestation!.fingerprint;
      const impostor = createDstackIssuer({
        authority: cluster.stack.authority,
        identity: { ...cluster.stack.expected, mrtd: 'ee'.repeat(48) },
      });
      const issued = await impostor.issueTlsKey({ usageRaTls: true, usageServerAuth: true });
      const seen = standby.sidecar.stats.accepted;
      standby.sidecar.misbehave({
        credentials: { key: issued.key, cert: issued.certificateChain.join('\n') },
      });
      const code = await nextDiscoveryFailure(pool, () => {
        cluster.dns.setTxt(`_teesql-leader.${cluster.domain}`, [
          cluster.signedManifest({ leader: 2, epoch: cluster.epoch + 1 }),
        ]);
      });
      assert.equal(code, 'MRTD_NOT_ALLOWED');
      const attempts = standby.sidecar.stats.connections.filter((c) => c.id > seen);
      assert.ok(attempts.length > 0, 'the candidate leader was dialled');
      assert.equal(
        attempts.reduce((sum, c) => sum + c.bytesToUpstream, 0),
        0,
      );
      await pool.query('SELECT 1');
      assert.equal(pool.attestation!.fingerprint, pinned);
    } finally {
      standby.sidecar.reset();
      cluster.dns.setTxt(`_teesql-leader.${cluster.domain}`, [
        cluster.signedManifest({ epoch: cluster.epoch }),
      ]);
      await pool.end();
    }
  });

  test('DNS down: the current leader serves until its manifest expires, then MANIFEST_EXPIRED', async () => {
    const name = `_teesql-leader.${cluster.domain}`;
    // A manifest valid for two more seconds, read by a pool that allows no skew.
    const validUntil = Math.floor(Date.now() / 1000) + 2;
    cluster.dns.setTxt(name, [cluster.signedManifest({ epoch: cluster.epoch, validUntil })]);
    const pool = createPool({
      connectionString: cluster.connectionString,
      ...cluster.clientOptions,
      cluster: { ...cluster.clusterOptions, refreshEvery: '100ms', lookupTimeout: '1s', skew: 0 },
      logger: silent,
    });
    try {
      await pool.query('SELECT 1');
      cluster.dns.setFault('servfail');
      // Lookups fail; until valid_until the leader keeps serving.
      assert.equal(await nextDiscoveryFailure(pool, () => {}), 'DISCOVERY_FAILED');
      if (Date.now() / 1000 <= validUntil) await pool.query('SELECT 1');
      while (Date.now() / 1000 <= validUntil) await nextFailure(pool);
      await assert.rejects(pool.query('SELECT 1'), (error: unknown) =>
        isRaTlsError(error, 'MANIFEST_EXPIRED'),
      );
      // DNS back with a fresh manifest: the pool serves again.
      cluster.dns.setFault('none');
      cluster.dns.setTxt(name, [cluster.signedManifest({ epoch: cluster.epoch })]);
      const { rows } = await pool.query<{ ok: number }>('SELECT 1 AS ok');
      assert.equal(rows[0]!.ok, 1);
    } finally {
      cluster.dns.setFault('none');
      cluster.dns.setTxt(name, [cluster.signedManifest({ epoch: cluster.epoch })]);
      await pool.end();
    }
  });

  test('the cluster option passes through Kysely', async () => {
    const { Kysely, sql } = await import('kysely');
    const { raTlsDialect } = await import('../integrations/kysely/index.js');
    const db = new Kysely<Record<string, never>>({
      dialect: raTlsDialect({
        connectionString: cluster.connectionString,
        ...cluster.clientOptions,
        cluster: cluster.clusterOptions,
        logger: silent,
      }),
    });
    try {
      const { rows } = await sql<{
        standby: boolean;
      }>`SELECT pg_is_in_recovery() AS standby`.execute(db);
      assert.deepEqual(rows, [{ standby: false }]);
    } finally {
      await db.destroy();
    }
  });

  test('failover under load: 20 callers follow the new leader; no acknowledged write is lost', async () => {
    const pool = clusterPool(cluster);
    const [, newLeader, other] = cluster.members;
    await pool.query('CREATE TABLE failover_writes (id int PRIMARY KEY, at_epoch int)');
    const acknowledged: number[] = [];
    const errors: unknown[] = [];
    let nextId = 0;
    let stopping = false;
    let publishedAt = Number.POSITIVE_INFINITY;
    let firstWriteAfterPublish: number | undefined;
    const caller = async () => {
      while (!stopping) {
        const id = nextId++;
        try {
          await pool.query('INSERT INTO failover_writes VALUES ($1, $2)', [id, cluster.epoch]);
          acknowledged.push(id);
          const now = performance.now();
          if (now > publishedAt && firstWriteAfterPublish === undefined)
            firstWriteAfterPublish = now;
        } catch (error) {
          errors.push(error);
          // Back off on the next event-loop turn only: callers retry at once, as an app would.
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
    };
    const callers = Array.from({ length: 20 }, () => caller());
    try {
      while (acknowledged.length < 100) await new Promise((resolve) => setImmediate(resolve));
      const moved = once(pool, 'leaderChanged') as Promise<[LeaderChangedEvent]>;
      const stoppedAt = performance.now();
      await cluster.stopMember(0);
      const promotingAt = performance.now();
      await cluster.promote(1);
      assert.equal(
        newLeader!.sidecar.stats.accepted,
        0,
        'nothing dialled the standby before the manifest named it',
      );
      publishedAt = performance.now();
      cluster.publishManifest();
      const [event] = await moved;
      assert.equal(event.current.instance, newLeader!.instance);
      const before = acknowledged.length;
      while (acknowledged.length < before + 100)
        await new Promise((resolve) => setImmediate(resolve));
      stopping = true;
      await Promise.all(callers);
      console.log(
        `failover: leader stopped → first write on the new leader ${Math.round((firstWriteAfterPublish ?? Number.NaN) - stoppedAt)} ms ` +
          `(stop ${Math.round(promotingAt - stoppedAt)} ms, promotion ${Math.round(publishedAt - promotingAt)} ms, ` +
          `manifest published → first write ${Math.round((firstWriteAfterPublish ?? Number.NaN) - publishedAt)} ms); ` +
          `${acknowledged.length} writes acknowledged, ${errors.length} failed during the switch ` +
          `(${[...new Set(errors.map((error) => (error as { code?: string }).code))].join(', ')})`,
      );
      const stored = await countRows(newLeader!.superuserUrl, 'failover_writes');
      const lost = acknowledged.filter((id) => !stored.has(id));
      assert.deepEqual(lost, [], 'acknowledged writes missing on the new leader');
      // The other standby never carried a session: no write reached a non-leader.
      assert.equal(other!.sidecar.stats.bytesToUpstream, 0);
      // Typed: pg-ra-tls's code (a lost connection is CONNECTION_LOST, not pg's plain
      // "Connection terminated unexpectedly") or Postgres's own SQLSTATE.
      for (const error of errors) {
        assert.ok(
          isRaTlsError(error) || error instanceof pg.DatabaseError,
          `untyped error during the switch: ${String(error)}`,
        );
      }
    } finally {
      stopping = true;
      await Promise.allSettled(callers);
      await pool.end();
    }
  });

  test('Drizzle and Prisma over cluster pools write to the leader and follow the next failover', async () => {
    const { drizzle } = await import('../integrations/drizzle/index.js');
    const { prismaAdapter } = await import('../integrations/prisma/index.js');
    const { sql } = await import('drizzle-orm');
    // Whoever leads now (after the failover above, member 1) and a standby streaming from it.
    const leader = cluster.primary!;
    const next = cluster.members.find((member) => member.role === 'standby')!;
    const options = {
      connectionString: cluster.connectionString,
      ...cluster.clientOptions,
      cluster: { ...cluster.clusterOptions, refreshEvery: '100ms', lookupTimeout: '1s' },
      logger: silent,
    };
    const db = drizzle({ connection: options });
    const prismaPool = createPool(options);
    for (const pool of [db.$client, prismaPool]) pool.on('error', silent);
    const prisma = await prismaAdapter(prismaPool).connect();
    const insert = async (epoch: number) => {
      await db.execute(sql`INSERT INTO cluster_orms VALUES ('drizzle', ${epoch})`);
      await prisma.executeRaw({
        sql: 'INSERT INTO cluster_orms VALUES ($1, $2)',
        args: ['prisma', epoch],
        argTypes: [
          { scalarType: 'string', arity: 'scalar' },
          { scalarType: 'int', arity: 'scalar' },
        ],
      });
    };
    try {
      await db.execute(sql`CREATE TABLE cluster_orms (via text, epoch int)`);
      await insert(cluster.epoch);
      for (const pool of [db.$client, prismaPool]) {
        assert.equal(pool.attestation?.app?.instanceId, leader.instance);
      }

      // Not events.once: it would reject on the `error` the pools emit for their lost idle connections.
      const moved = [db.$client, prismaPool].map(
        (pool) => new Promise<LeaderChangedEvent>((resolve) => pool.once('leaderChanged', resolve)),
      );
      await cluster.stopMember(leader.index);
      await cluster.promote(next.index);
      const epoch = cluster.publishManifest();
      for (const event of await Promise.all(moved)) {
        assert.equal(event.current.instance, next.instance);
        assert.equal(event.current.epoch, epoch);
      }
      await insert(epoch);
      for (const pool of [db.$client, prismaPool]) {
        assert.equal(pool.attestation?.app?.instanceId, next.instance);
      }
      const database = new URL(next.superuserUrl);
      database.pathname = '/teesql';
      const direct = new pg.Client({ connectionString: database.href });
      await direct.connect();
      try {
        const { rows } = await direct.query(
          'SELECT via, epoch FROM cluster_orms ORDER BY epoch, via',
        );
        assert.deepEqual(rows, [
          { via: 'drizzle', epoch: epoch - 1 },
          { via: 'prisma', epoch: epoch - 1 },
          { via: 'drizzle', epoch },
          { via: 'prisma', epoch },
        ]);
      } finally {
        await direct.end();
      }
    } finally {
      await prisma.dispose();
      await prismaPool.end();
      await db.$client.end();
    }
  });
});

test('cluster option mistakes: BAD_CONFIG before any I/O', () => {
  const base = {
    connectionString: `postgres://teesql_readwrite:${'ab'.repeat(32)}@x/teesql`,
    dstackEndpoint: 'http://127.0.0.1:9',
  };
  const signer = `0x${'11'.repeat(20)}`;
  for (const cluster of [
    'cluster.example',
    { domain: 'not a domain', signer },
    { domain: 'cluster.example', signer: '0x12' },
    { domain: 'cluster.example', signer, refreshEvery: 'often' },
  ]) {
    assert.throws(
      () => createPool({ ...base, cluster: cluster as never, logger: silent }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
    );
  }
  assert.throws(
    () =>
      createPool({
        connectionString: `postgres://teesql_readwrite:${'ab'.repeat(32)}@h1,h2/teesql`,
        cluster: { domain: 'cluster.example', signer },
        logger: silent,
      }),
    (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
  );
});
