import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { RaTlsClient } from '../src/connection/ra-tls-client.js';
import { pgConnectOptsRaTls, verifyServer } from '../src/connection/verify-server.js';
import { type ErrorCode, isRaTlsError, RaTlsError } from '../src/errors.js';
import { type AttestationFailedEvent, createPool } from '../src/pool/ra-tls-pool.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { createRaTlsCertificate, generateRaTlsKeyPair } from '../src/testing/ra-tls-certificate.js';
import type { SidecarMisbehaviour } from '../src/testing/stack/sidecar.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';
import { type PoolStack, raTlsCredentials, startPoolStack } from './pool-harness.js';

let stack: PoolStack;
before(async () => {
  stack = await startPoolStack();
});
after(() => stack.close());

function poolOptions(extra: Record<string, unknown> = {}) {
  return {
    connectionString: stack.dsn,
    verifier: stack.verifier,
    dstackEndpoint: stack.agent.endpoint,
    policy: { allowedMrtds: [stack.mrtd] },
    connectTimeout: '2s',
    handshakeTimeout: '1s',
    ...extra,
  };
}

/**
 * Not a byte reached Postgres over `connections`, which must not be empty:
 * `every()` over an empty list would pass without the client ever dialling.
 */
function assertNoBytesToPostgres(connections: readonly { bytesToUpstream: number }[]): void {
  assert.ok(connections.length >= 1, 'the client never reached the sidecar: nothing was checked');
  for (const connection of connections) assert.equal(connection.bytesToUpstream, 0);
}

/** Resolves once backend `pid` is running `query`, seen from a separate direct session. */
async function waitUntilRunning(pid: number, query: string): Promise<void> {
  const observer = new pg.Client({
    connectionString: stack.postgres.databaseUrl('teesql_readwrite'),
  });
  await observer.connect();
  try {
    for (let attempt = 0; attempt < 500; attempt++) {
      const { rows } = await observer.query(
        "select 1 from pg_stat_activity where pid = $1 and state = 'active' and query = $2",
        [pid, query],
      );
      if (rows.length === 1) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`backend ${pid} never showed ${JSON.stringify(query)} in pg_stat_activity`);
  } finally {
    await observer.end();
  }
}

describe('queries over attested connections', () => {
  test('a pool attests the sidecar, pins it, and runs CRUD through the verified socket', async () => {
    const pool = createPool(poolOptions());
    const attested: string[] = [];
    pool.on('attested', (report: { fingerprint: string }) => attested.push(report.fingerprint));
    try {
      assert.ok(pool instanceof pg.Pool);
      await pool.query('create table if not exists notes (id serial primary key, body text)');
      // A body of its own, so rows left by an earlier run or test cannot change the result.
      const body = `attested ${process.pid} ${Date.now()}`;
      await pool.query('insert into notes (body) values ($1)', [body]);
      const { rows } = await pool.query<{ body: string }>(
        'select body from notes where body = $1',
        [body],
      );
      assert.deepEqual(rows, [{ body }]);

      const client = await pool.connect();
      try {
        assert.ok(client instanceof RaTlsClient);
        assert.equal(
          (await client.query('select current_user as u')).rows[0].u,
          'teesql_readwrite',
        );
      } finally {
        client.release();
      }
      assert.equal(pool.attestation?.mrtd, stack.mrtd);
      assert.equal(pool.attestation?.tcbStatus, 'UpToDate');
      assert.ok(attested.length >= 1);
      assert.ok(attested.every((fingerprint) => fingerprint === pool.attestation?.fingerprint));
    } finally {
      await pool.end();
    }
  });
});

describe('a bad server never receives a byte of Postgres', () => {
  const cases: { name: string; make: () => Promise<SidecarMisbehaviour>; code: ErrorCode }[] = [
    {
      name: 'a certificate without attestation',
      code: 'NO_ATTESTATION',
      make: async () => {
        const plain = createRaTlsCertificate({ subject: 'CN=impostor' });
        return { credentials: { key: plain.privateKeyPem, cert: plain.certificatePem } };
      },
    },
    {
      name: 'a genuine quote replayed in another key’s certificate',
      code: 'PUBKEY_MISMATCH',
      make: async () => {
        const genuine = stack.authority.issueQuote({
          reportData: new Uint8Array(64).fill(1),
        });
        const other = generateRaTlsKeyPair();
        const forged = createRaTlsCertificate({
          privateKey: other.privateKeyPem,
          attestation: { quote: genuine },
        });
        return { credentials: { key: forged.privateKeyPem, cert: forged.certificatePem } };
      },
    },
    {
      name: 'a debug TD',
      code: 'DEBUG_MODE',
      make: async () => ({ credentials: raTlsCredentials(stack.authority, { debug: true }) }),
    },
    {
      name: 'a TCB no level of the TCB info matches',
      code: 'BAD_TCB_STATUS',
      make: async () => ({
        credentials: raTlsCredentials(stack.authority, { teeTcbSvn: '00'.repeat(16) }),
      }),
    },
    {
      name: 'an MRTD outside allowedMrtds',
      code: 'MRTD_NOT_ALLOWED',
      make: async () => ({
        credentials: raTlsCredentials(stack.authority, { mrtd: 'ee'.repeat(48) }),
      }),
    },
    {
      name: 'a quote signed under another root of trust',
      code: 'QUOTE_INVALID',
      make: async () => {
        const foreign = await createTestAuthority({ seed: 'someone else' });
        return { credentials: raTlsCredentials(foreign) };
      },
    },
    {
      name: 'a server that stalls the handshake',
      code: 'HANDSHAKE_TIMEOUT',
      make: async () => ({ stallHandshake: true }),
    },
    {
      name: 'a server that hangs up during the handshake',
      code: 'HANDSHAKE_FAILED',
      make: async () => ({ closeDuringHandshake: true }),
    },
  ];

  for (const { name, make, code } of cases) {
    test(`${name}: pool.query() rejects with ${code}`, async () => {
      stack.sidecar.misbehave(await make());
      const pool = createPool(poolOptions());
      const failures: AttestationFailedEvent[] = [];
      pool.on('attestationFailed', (event: AttestationFailedEvent) => failures.push(event));
      const before = stack.sidecar.stats.connections.length;
      try {
        await assert.rejects(pool.query('select 1'), (error: unknown) => {
          assert.ok(isRaTlsError(error), `expected a RaTlsError, got ${String(error)}`);
          assert.equal(error.code, code, error.message);
          return true;
        });
        assert.equal(failures[0]?.error.code, code);
        const connections = stack.sidecar.stats.connections.slice(before);
        assert.ok(connections.length >= 1);
        for (const connection of connections) assert.equal(connection.bytesToUpstream, 0);
      } finally {
        stack.sidecar.reset();
        await pool.end();
      }
    });
  }
});

describe('a refused server leaves the pool healthy', () => {
  test('once the server is genuine again, the same pool queries without being recreated', async () => {
    const pool = createPool(poolOptions());
    try {
      stack.sidecar.misbehave({
        credentials: raTlsCredentials(stack.authority, { mrtd: 'ee'.repeat(48) }),
      });
      for (let attempt = 0; attempt < 3; attempt++) {
        await assert.rejects(pool.query('select 1'), (error: unknown) =>
          isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
        );
      }
      assert.equal(pool.totalCount, 0, 'no refused connection stays in the pool');

      stack.sidecar.reset();
      const { rows } = await pool.query('select 41 + 1 as answer');
      assert.deepEqual(rows, [{ answer: 42 }]);
      assert.equal(pool.totalCount, 1);
      assert.equal(pool.waitingCount, 0);
    } finally {
      stack.sidecar.reset();
      await pool.end();
    }
  });
});

describe('verification time is bounded', () => {
  test('a verifier that never answers is VERIFY_TIMEOUT, with 0 bytes to Postgres', async () => {
    const hanging: RaTlsVerifier = {
      name: 'hanging',
      verify: (_quote, verifyOptions) =>
        new Promise((_, reject) => {
          verifyOptions?.signal?.addEventListener('abort', () =>
            reject(verifyOptions.signal?.reason),
          );
        }),
    };
    const before = stack.sidecar.stats.connections.length;
    const pool = createPool(poolOptions({ verifier: hanging, verifyTimeout: '150ms' }));
    try {
      await assert.rejects(pool.query('select 1'), (error: unknown) =>
        isRaTlsError(error, 'VERIFY_TIMEOUT'),
      );
      const connections = stack.sidecar.stats.connections.slice(before);
      assertNoBytesToPostgres(connections);
    } finally {
      await pool.end();
    }
  });
});

describe('pg-pool timeouts', () => {
  test('connectionTimeoutMillis during attestation is CONNECT_TIMEOUT, not an untyped pg-pool error', async () => {
    stack.sidecar.misbehave({ stallHandshake: true });
    const before = stack.sidecar.stats.connections.length;
    // A client certificate of its own (no guest-agent round trip) and a budget
    // wide enough that the dial starts before pg-pool gives up, even on a busy
    // machine: otherwise no connection reaches the sidecar and nothing is checked.
    const pool = createPool(
      poolOptions({
        connectionTimeoutMillis: 1000,
        handshakeTimeout: '5s',
        clientCertOverride: raTlsCredentials(stack.authority),
      }),
    );
    try {
      await assert.rejects(pool.query('select 1'), (error: unknown) => {
        assert.ok(isRaTlsError(error, 'CONNECT_TIMEOUT'), String(error));
        assert.equal(
          error.message,
          `no attested connection to ${pool.settings.description} within ` +
            'connectionTimeoutMillis (1000 ms)',
        );
        // pg-pool's own timeout error, which carries ours (the attempt it ended).
        const poolError = error.cause;
        assert.ok(
          poolError instanceof Error && !(poolError instanceof RaTlsError),
          String(poolError),
        );
        assert.ok(poolError.cause instanceof RaTlsError, 'the ended attempt stays visible');
        return true;
      });
      assert.equal(pool.totalCount, 0);
      const connections = stack.sidecar.stats.connections.slice(before);
      assertNoBytesToPostgres(connections);
    } finally {
      stack.sidecar.reset();
      await pool.end();
    }
  });
});

describe('RaTlsClient, verifyServer and pgConnectOptsRaTls', () => {
  test('cancelActiveQuery sends the CancelRequest over a new attested connection: the query fails 57014', async () => {
    const client = new RaTlsClient(poolOptions());
    await client.connect();
    try {
      const before = stack.sidecar.stats.connections.length;
      const sleeping = client.query('select pg_sleep(30)');
      const outcome = sleeping.then(
        () => 'finished',
        (error: { code?: string }) => error.code,
      );
      // Cancel only once the server runs the query: a cancel that arrives
      // earlier is a no-op, and the test would wait out pg_sleep(30).
      await waitUntilRunning(
        (client as unknown as { processID: number }).processID,
        'select pg_sleep(30)',
      );
      await client.cancelActiveQuery();
      assert.equal(await outcome, '57014');
      const [cancel] = stack.sidecar.stats.connections.slice(before);
      assert.equal(cancel?.bytesToUpstream, 16, 'one CancelRequest, through the sidecar');
      assert.deepEqual((await client.query('select 1 as alive')).rows, [{ alive: 1 }]);
    } finally {
      await client.end();
    }
  });

  test('a standalone RaTlsClient connects, exposes its attestation and ends', async () => {
    const client = new RaTlsClient(poolOptions());
    await client.connect();
    try {
      assert.equal((await client.query('select 41 + 1 as n')).rows[0].n, 42);
      assert.equal(client.attestation?.mrtd, stack.mrtd);
    } finally {
      await client.end();
    }
  });

  test('end() during attestation settles connect() with CONNECTION_ENDED and sends nothing', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered: () => void = () => {};
    const verifying = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const slow: RaTlsVerifier = {
      name: 'slow',
      verify: async (quote, options) => {
        entered();
        await gate;
        return stack.verifier.verify(quote, options);
      },
    };
    const before = stack.sidecar.stats.connections.length;
    const client = new RaTlsClient(poolOptions({ verifier: slow }));
    const connecting = client.connect();
    await verifying;
    await client.end();
    await assert.rejects(connecting, (error: unknown) => isRaTlsError(error, 'CONNECTION_ENDED'));
    release();
    const connections = stack.sidecar.stats.connections.slice(before);
    assertNoBytesToPostgres(connections);
  });

  test('verifyServer returns the report without a Postgres session', async () => {
    const before = stack.sidecar.stats.connections.length;
    const report = await verifyServer(`127.0.0.1:${stack.sidecar.port}`, {
      verifier: stack.verifier,
      dstackEndpoint: stack.agent.endpoint,
      policy: { allowedMrtds: [stack.mrtd] },
    });
    assert.equal(report.mrtd, stack.mrtd);
    const connections = stack.sidecar.stats.connections.slice(before);
    assertNoBytesToPostgres(connections);
  });

  test('pgConnectOptsRaTls hands a verified socket to a plain pg.Client, once', async () => {
    const config = await pgConnectOptsRaTls(stack.dsn, {
      verifier: stack.verifier,
      dstackEndpoint: stack.agent.endpoint,
    });
    assert.equal(config.ssl, false);
    assert.equal(config.attestation.mrtd, stack.mrtd);
    const client = new pg.Client(config);
    await client.connect();
    try {
      assert.equal((await client.query('select 1 as one')).rows[0].one, 1);
    } finally {
      await client.end();
    }
    assert.throws(
      () => new pg.Client(config),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') &&
        error.message ===
          'a pgConnectOptsRaTls config carries one verified socket and can be used once: call pgConnectOptsRaTls again for another connection',
    );
  });

  test("pgConnectOptsRaTls obeys the caller's signal: an aborted one dials nothing", async () => {
    const before = stack.sidecar.stats.connections.length;
    const reason = new Error('the caller gave up');
    await assert.rejects(
      pgConnectOptsRaTls(stack.dsn, {
        verifier: stack.verifier,
        dstackEndpoint: stack.agent.endpoint,
        signal: AbortSignal.abort(reason),
      }),
      (error: unknown) => error === reason || (error as { cause?: unknown }).cause === reason,
    );
    assert.equal(stack.sidecar.stats.connections.length, before, 'no connection was made');
  });
});
