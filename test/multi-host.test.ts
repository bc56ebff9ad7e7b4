import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { parseHostList } from '../src/cluster/multi-host.js';
import { type ErrorCode, isRaTlsError } from '../src/errors.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { type LocalCluster, startLocalCluster } from '../src/testing/cluster/local-cluster.js';

const SECRET = 'ab'.repeat(32);

describe('parseHostList', () => {
  test('a URL host list with target_session_attrs and load_balance_hosts', () => {
    const list = parseHostList(
      `postgres://teesql_readwrite:${SECRET}@h1:5433,[::1]:6000,h3/teesql?target_session_attrs=read-write&load_balance_hosts=random&application_name=x`,
    );
    assert.ok(list !== undefined);
    assert.deepEqual(list.hosts, [
      { host: 'h1', port: 5433 },
      { host: '::1', port: 6000 },
      { host: 'h3', port: undefined },
    ]);
    assert.equal(list.targetSessionAttrs, 'read-write');
    assert.equal(list.loadBalanceHosts, 'random');
    assert.equal(
      list.connectionString,
      `postgres://teesql_readwrite:${SECRET}@h1:5433/teesql?application_name=x`,
    );
  });

  test('the keyword form: one port for all, or one per host', () => {
    const shared = parseHostList(`host=h1,h2 port=5433 user=teesql_read password=${SECRET}`);
    assert.deepEqual(shared?.hosts, [
      { host: 'h1', port: 5433 },
      { host: 'h2', port: 5433 },
    ]);
    assert.equal(shared?.targetSessionAttrs, 'any');
    const each = parseHostList(
      `host=h1,h2 port=5433,6000 dbname=teesql target_session_attrs=standby password='a b'`,
    );
    assert.deepEqual(each?.hosts, [
      { host: 'h1', port: 5433 },
      { host: 'h2', port: 6000 },
    ]);
    assert.equal(each?.targetSessionAttrs, 'standby');
    assert.equal(each?.connectionString, `host=h1 dbname=teesql password='a b' port=5433`);
  });

  test('one host without the parameters is not a host list', () => {
    assert.equal(parseHostList(`postgres://u:${SECRET}@h1:5433/db`), undefined);
    assert.equal(parseHostList('host=h1 port=5433 target_session_attrs=any'), undefined);
    assert.equal(parseHostList(undefined), undefined);
  });

  test('bad values: BAD_CONFIG naming the parameter, never the password', () => {
    const cases = [
      `postgres://u:${SECRET}@h1,h2/db?target_session_attrs=leader`,
      `postgres://u:${SECRET}@h1,h2/db?load_balance_hosts=roundrobin`,
      `postgres://u:${SECRET}@h1:99999,h2/db`,
      `postgres://u:${SECRET}@h1,,h2/db`,
      `host=h1,h2,h3 port=1,2 password=${SECRET}`,
      `host=h1,h2 hostaddr=1.1.1.1,2.2.2.2 password=${SECRET}`,
    ];
    for (const dsn of cases) {
      assert.throws(
        () => parseHostList(dsn),
        (error: unknown) => isRaTlsError(error, 'BAD_CONFIG') && !error.message.includes(SECRET),
        dsn,
      );
    }
  });
});

describe('multi-host pools against a primary and two standbys', () => {
  let cluster: LocalCluster;
  let blackHole: { port: number; close: () => Promise<void> };
  before(async () => {
    cluster = await startLocalCluster({ standbys: 2, logger: () => {} });
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      // Accepts and never answers: a host that swallows packets.
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    blackHole = {
      port: (server.address() as { port: number }).port,
      close: () => {
        for (const socket of sockets) socket.destroy();
        return new Promise((resolve) => server.close(() => resolve()));
      },
    };
  });
  after(async () => {
    await blackHole.close();
    await cluster.stop();
  });

  /** A host list of members (indexes) and the black hole (-1). */
  const urlFor = (members: number[], parameters: string) => {
    const hosts = members
      .map((index) =>
        index < 0
          ? `127.0.0.1:${blackHole.port}`
          : `127.0.0.1:${cluster.members[index]!.sidecar.port}`,
      )
      .join(',');
    const credentials = new URL(cluster.connectionString);
    return `postgres://${credentials.username}:${credentials.password}@${hosts}/teesql?${parameters}`;
  };
  const served = async (members: number[], parameters: string) => {
    const pool = createPool({
      connectionString: urlFor(members, parameters),
      ...cluster.clientOptions,
      handshakeTimeout: '1s',
      logger: () => {},
    });
    try {
      const { rows } = await pool.query<{ port: number; standby: boolean }>(
        'SELECT inet_server_port() AS port, pg_is_in_recovery() AS standby',
      );
      const port = rows[0]!.port;
      return cluster.members.findIndex((m) => new URL(m.superuserUrl).port === String(port));
    } finally {
      await pool.end();
    }
  };
  const refused = async (members: number[], parameters: string): Promise<ErrorCode[]> => {
    const pool = createPool({
      connectionString: urlFor(members, parameters),
      ...cluster.clientOptions,
      handshakeTimeout: '1s',
      logger: () => {},
    });
    try {
      await pool.query('SELECT 1');
    } catch (error) {
      assert.ok(isRaTlsError(error, 'NO_HOST_AVAILABLE'), String(error));
      return (error.details['hosts'] as { code: ErrorCode }[]).map((h) => h.code);
    } finally {
      await pool.end();
    }
    assert.fail('expected NO_HOST_AVAILABLE');
  };

  test('target_session_attrs picks the first host of the right kind', async () => {
    assert.equal(await served([1, 0, 2], 'target_session_attrs=any'), 1);
    assert.equal(await served([1, 2, 0], 'target_session_attrs=read-write'), 0);
    assert.equal(await served([0, 2], 'target_session_attrs=read-only'), 2);
    assert.equal(await served([1, 0], 'target_session_attrs=primary'), 0);
    assert.equal(await served([0, 1], 'target_session_attrs=standby'), 1);
    assert.equal(await served([0, 2, 1], 'target_session_attrs=prefer-standby'), 2);
    assert.equal(await served([0], 'target_session_attrs=prefer-standby'), 0);
  });

  test('no host of the right kind: NO_HOST_AVAILABLE lists each host with its code', async () => {
    assert.deepEqual(await refused([0], 'target_session_attrs=standby'), [
      'SESSION_ATTRS_MISMATCH',
    ]);
    assert.deepEqual(await refused([-1, 1, 2], 'target_session_attrs=read-write'), [
      'HANDSHAKE_TIMEOUT',
      'SESSION_ATTRS_MISMATCH',
      'SESSION_ATTRS_MISMATCH',
    ]);
  });

  test('a black-holed host listed first costs one timeout; the others stay usable', async () => {
    const pool = createPool({
      connectionString: urlFor([-1, 0], 'target_session_attrs=read-write'),
      ...cluster.clientOptions,
      handshakeTimeout: '1s',
      max: 4,
      logger: () => {},
    });
    try {
      const results = await Promise.all(
        Array.from({ length: 8 }, () =>
          pool.query<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby'),
        ),
      );
      assert.ok(results.every((r) => r.rows[0]!.standby === false));
    } finally {
      await pool.end();
    }
  });

  test('load_balance_hosts=random spreads connections over the hosts', async () => {
    const before = cluster.members.map((m) => m.sidecar.stats.established);
    const pool = createPool({
      connectionString: urlFor([0, 1, 2], 'load_balance_hosts=random'),
      ...cluster.clientOptions,
      max: 12,
      logger: () => {},
    });
    try {
      const clients = await Promise.all(Array.from({ length: 12 }, () => pool.connect()));
      for (const client of clients) client.release();
      const used = cluster.members.filter((m, i) => m.sidecar.stats.established > before[i]!);
      assert.ok(used.length >= 2, `all 12 connections went to one host`);
    } finally {
      await pool.end();
    }
  });
});
