/**
 * The edges of a pool's attestation rules (src/pool/pool-attestation.ts) that
 * need no SQL: a real RaTlsPool (real pg-pool) whose connections reach a real
 * TLS server on loopback presenting RA-TLS certificates of the DCAP test
 * authority (docs/protocol.md §8), verified by the real pure-JS engine; the
 * server plays only Postgres's startup by hand (a logged-in, idle session).
 * The test moves the pool's clock and the sweep's interval timer, so which
 * connection is stale, and when the sweep runs, is exact. Cluster pools follow
 * two such servers named by a signed manifest on a loopback DNS server
 * (docs/protocol.md §7).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { after, before, beforeEach, describe, type TestContext, test } from 'node:test';
import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type pg from 'pg';
import type { AttestationReport } from '../src/attest/report.js';
import { RaTlsClient } from '../src/connection/ra-tls-client.js';
import { isRaTlsError } from '../src/errors.js';
import {
  type AttestationFailedEvent,
  createPool,
  type RaTlsPool,
  type RaTlsPoolOptions,
} from '../src/pool/ra-tls-pool.js';
import { SpanNames } from '../src/telemetry/tracing.js';
import type { TestAuthority } from '../src/testing/authority/test-authority.js';
import { startDnsServer } from '../src/testing/cluster/dns-server.js';
import { createManifestSigner } from '../src/testing/cluster/manifest-signer.js';
import type { SidecarCredentials } from '../src/testing/stack/sidecar.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';
import {
  authorityWithVerifier,
  GatedVerifier,
  raTlsCredentials,
  testClock,
} from './pool-harness.js';
import { hangLimit } from './support/hang-limit.js';
import { answerStartup } from './support/postgres-backend.js';
import { type RaTlsServer, startRaTlsServer } from './support/ra-tls-server.js';

type Client = pg.PoolClient & RaTlsClient;

const REATTEST_EVERY = 60_000;

// Started re-attestations, seen as their span starts (synchronously, inside the sweep's tick).
const started: string[] = [];
const recordStarts: SpanProcessor = {
  onStart: (span) => {
    started.push(span.name);
  },
  onEnd: () => {},
  forceFlush: async () => {},
  shutdown: async () => {},
};
const provider = new BasicTracerProvider({ spanProcessors: [recordStarts] });
trace.setGlobalTracerProvider(provider);
const reattestsStarted = () => started.filter((name) => name === SpanNames.REATTEST).length;

let authority: TestAuthority;
let dcap: RaTlsVerifier;
let mrtd: string;
let server: RaTlsServer;
/** What the server presents at first, and another certificate of the same TD. */
let certificateA: SidecarCredentials;
let certificateB: SidecarCredentials;
/** A certificate of a TD the pools' policy does not allow. */
let refusedCertificate: SidecarCredentials;
let clientCertificate: SidecarCredentials;

before(async () => {
  ({ authority, mrtd, dcap } = await authorityWithVerifier('pg-ra-tls pool attestation edges'));
  certificateA = raTlsCredentials(authority);
  certificateB = raTlsCredentials(authority);
  refusedCertificate = raTlsCredentials(authority, { mrtd: '11'.repeat(48) });
  clientCertificate = raTlsCredentials(authority, {}, {}, 'CN=pg-ra-tls client');
  server = await startRaTlsServer(certificateA, { onSecureConnection: answerStartup });
});

after(async () => {
  await server.close();
  await provider.shutdown();
});

beforeEach(() => {
  server.present(certificateA);
  started.length = 0;
});

const SECRET = 'b7'.repeat(32);
const dsn = (hosts = `127.0.0.1:${server.port}`) => `postgres://teesql_read:${SECRET}@${hosts}/db`;

/**
 * A pool of the server under the test root and MRTD, with its client
 * certificate and `clock` (pools of one clock share their verdicts, pools of
 * another do not); `extra` overrides any option. `end()` closes what a failed
 * test left checked out, then ends the pool.
 */
function poolOf(extra: Partial<RaTlsPoolOptions> = {}, clock = testClock()) {
  const pool = createPool({
    connectionString: dsn(),
    verifier: dcap,
    policy: { allowedMrtds: [mrtd] },
    clientCertOverride: clientCertificate,
    reattestEvery: REATTEST_EVERY,
    now: clock.now,
    logger: () => {},
    ...extra,
  });
  const checkedOut = new Set<pg.PoolClient>();
  pool.on('acquire', (client) => checkedOut.add(client));
  pool.on('release', (_error, client) => checkedOut.delete(client));
  const end = async () => {
    for (const client of checkedOut) client.release(true);
    if (!pool.ending) await pool.end();
  };
  return { pool, clock, end };
}

/**
 * A pool whose one idle connection is due for re-attestation, with a verifier
 * that holds every call from now on; `end()` lets the verifier go, then ends the pool.
 */
async function dueWithVerifierHeld() {
  const verifier = new GatedVerifier(dcap);
  const { pool, clock, end: endPool } = poolOf({ verifier });
  const end = async () => {
    verifier.open();
    await endPool();
  };
  try {
    (await connect(pool)).release();
  } catch (error) {
    await end();
    throw error;
  }
  clock.advance(REATTEST_EVERY);
  verifier.hold();
  return { pool, verifier, end };
}

/** `clients` by their names in `named` ('?' for any other), sorted: what a test compares. */
function namesOf(clients: readonly unknown[], named: Record<string, unknown>): string[] {
  const name = (client: unknown) =>
    Object.entries(named).find(([, each]) => each === client)?.[0] ?? '?';
  return clients.map(name).sort();
}

const connect = (pool: RaTlsPool) => pool.connect() as Promise<Client>;
const activeTimers = () =>
  process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
const reportOf = (client: Client): AttestationReport => client.attestation!;

/** The clients the pool re-attested, in order. */
function reattestedClients(pool: RaTlsPool): RaTlsClient[] {
  const seen: RaTlsClient[] = [];
  pool.on('reattested', (_report, client) => seen.push(client));
  return seen;
}

describe('the options object', () => {
  test(
    'null, undefined or not an object: BAD_CONFIG naming the options, before any I/O',
    hangLimit,
    () => {
      for (const options of [null, undefined, 'postgres://x', 42]) {
        assert.throws(
          () => createPool(options as unknown as RaTlsPoolOptions),
          (error: unknown) => {
            assert.ok(isRaTlsError(error, 'BAD_CONFIG'), String(error));
            assert.equal(error.message, 'RaTlsPool needs an options object');
            assert.deepEqual(error.details, { option: 'options' });
            return true;
          },
          String(options),
        );
      }
    },
  );

  test(
    'a reattestTimeout that is no duration: BAD_CONFIG naming reattestTimeout',
    hangLimit,
    () => {
      assert.throws(
        () => poolOf({ reattestTimeout: 'soon' }),
        (error: unknown) => {
          assert.ok(isRaTlsError(error, 'BAD_CONFIG'), String(error));
          assert.deepEqual(error.details, { option: 'reattestTimeout' });
          assert.match(error.message, /reattestTimeout/);
          return true;
        },
      );
    },
  );
});

describe('a checkout', () => {
  test(
    'pg-pool sees it at once: a checkout beyond max is waiting as soon as connect() returns',
    hangLimit,
    async () => {
      const { pool, end } = poolOf({ max: 1 });
      try {
        const held = await connect(pool);
        const waiting = connect(pool);
        assert.equal(pool.waitingCount, 1);
        held.release();
        assert.equal(await waiting, held, 'the released connection serves the waiting checkout');
        held.release();
      } finally {
        await end();
      }
    },
  );

  test('after end(): POOL_ENDED saying the pool has been ended', hangLimit, async () => {
    const { pool } = poolOf();
    (await connect(pool)).release();
    await pool.end();
    await assert.rejects(connect(pool), (error: unknown) => {
      assert.ok(isRaTlsError(error, 'POOL_ENDED'), String(error));
      assert.equal(error.message, 'the pool has been ended: create a new pool');
      return true;
    });
  });

  test(
    'connect(callback), as pg-pool callers use it: the client and its release, or the error',
    hangLimit,
    async () => {
      const { pool, end } = poolOf();
      try {
        const [error, client, release] = await new Promise<unknown[]>((resolve) => {
          const returned = pool.connect((...args) => resolve(args));
          assert.equal(returned, undefined, 'the callback form returns nothing');
        });
        assert.equal(error, undefined);
        assert.ok(client instanceof RaTlsClient);
        assert.equal(release, (client as unknown as pg.PoolClient).release);
        (release as () => void)();
        assert.equal(pool.idleCount, 1, 'the release given returns the client to the pool');
        await pool.end();
        const [refusal, none] = await new Promise<unknown[]>((resolve) =>
          pool.connect((...args) => resolve(args)),
        );
        assert.ok(isRaTlsError(refusal, 'POOL_ENDED'), String(refusal));
        assert.equal(none, undefined);
      } finally {
        await end();
      }
    },
  );

  test(
    'end() during a re-attestation ends that checkout at once: POOL_ENDED, no retry',
    hangLimit,
    async () => {
      const { pool, verifier, end } = await dueWithVerifierHeld();
      try {
        const verifying = verifier.nextCall();
        const checkout = connect(pool);
        await verifying;
        const calls = verifier.entered;
        const ended = pool.end();
        await assert.rejects(checkout, (error: unknown) => {
          assert.ok(isRaTlsError(error, 'POOL_ENDED'), String(error));
          assert.equal(error.message, 'the pool was ended during attestation');
          return true;
        });
        await ended;
        assert.equal(verifier.entered, calls, 'no new connection was verified');
      } finally {
        await end();
      }
    },
  );

  test(
    'a connection judged under an older policy is re-verified without a probe handshake',
    hangLimit,
    async () => {
      const { pool, end } = poolOf();
      try {
        const first = await connect(pool);
        first.release();
        const reattested = reattestedClients(pool);
        const handshakes = server.connections;
        pool.updatePolicy({ allowedMrtds: [mrtd] });
        const again = await connect(pool);
        assert.equal(again, first);
        assert.deepEqual(reattested, [first], 'it was re-judged');
        assert.equal(server.connections, handshakes, 'the server was not dialled again');
        again.release();
      } finally {
        await end();
      }
    },
  );

  test(
    'a failed re-attestation closes the idle connections judged like it; a fresh idle one serves the retry',
    hangLimit,
    async () => {
      const { pool, clock, end } = poolOf();
      try {
        const stale = await connect(pool);
        const staleToo = await connect(pool);
        clock.advance(REATTEST_EVERY);
        const fresh = await connect(pool);
        assert.ok(reportOf(fresh).verifiedAt > reportOf(stale).verifiedAt, 'verified anew');
        // pg-pool hands out the connection released last first.
        fresh.release();
        staleToo.release();
        stale.release();
        const failures: AttestationFailedEvent[] = [];
        pool.on('attestationFailed', (event) => failures.push(event));
        // The probe of the stale connection meets a certificate the policy refuses.
        server.present(refusedCertificate);
        const served = await connect(pool);
        const named = { stale, staleToo, fresh };
        assert.deepEqual(
          failures.map((f) => [f.phase, f.error.code]),
          [['reattest', 'MRTD_NOT_ALLOWED']],
        );
        assert.deepEqual(namesOf([served], named), ['fresh']);
        assert.equal(pool.totalCount, 1, 'both stale connections are closed');
        served.release();
      } finally {
        await end();
      }
    },
  );
});

describe('a server change closes the idle connections it made obsolete', () => {
  test(
    'reverify: those to the certificate left at once, not those to the one pinned again',
    hangLimit,
    async () => {
      const { pool, clock, end } = poolOf({ onServerChange: 'reverify' });
      try {
        const onA = await connect(pool);
        server.present(certificateB);
        const onB = await connect(pool);
        const onBToo = await connect(pool);
        assert.notEqual(reportOf(onB).fingerprint, reportOf(onA).fingerprint);
        clock.advance(REATTEST_EVERY);
        // The server goes back to the first certificate; pg-pool hands out onB first.
        server.present(certificateA);
        onBToo.release();
        onA.release();
        onB.release();
        const changes: string[] = [];
        pool.on('serverChanged', (event) => changes.push(event.fingerprint));
        // onB's probe sees the first certificate again: verified, pinned, onB superseded.
        const served = await connect(pool);
        assert.deepEqual(changes, [reportOf(onA).fingerprint]);
        assert.deepEqual(namesOf([served], { onA, onB, onBToo }), ['onA'], 'pinned again: used');
        assert.equal(pool.idleCount, 0, 'onBToo was closed at the change, not kept idle');
        assert.equal(pool.totalCount, 1);
        served.release();
      } finally {
        await end();
      }
    },
  );
});

describe('a server change seen by a new connection', () => {
  test(
    'forgets the probe of the certificate left: a stale connection to the new one is probed again, not flipped back',
    hangLimit,
    async () => {
      const otherServer = await startRaTlsServer(certificateB, {
        onSecureConnection: answerStartup,
      });
      const clock = testClock();
      const { pool, end } = poolOf({}, clock);
      const other = poolOf({ connectionString: dsn(`127.0.0.1:${otherServer.port}`) }, clock);
      try {
        const onA = await connect(pool);
        clock.advance(REATTEST_EVERY / 2);
        // Another pool of the same clock verifies the second certificate: the verdict is shared.
        (await connect(other.pool)).release();
        clock.advance(REATTEST_EVERY / 2);
        onA.release();
        const probed = await connect(pool);
        assert.equal(probed, onA, 'stale: probed (the server presents A) and re-verified');
        server.present(certificateB);
        const onB = await connect(pool);
        assert.notEqual(reportOf(onB).fingerprint, reportOf(onA).fingerprint, 'pinned anew');
        const changes: string[] = [];
        pool.on('serverChanged', (event) => changes.push(event.fingerprint));
        onB.release();
        // onB's report (the shared verdict) is stale; the probe that saw A is not yet.
        clock.advance(REATTEST_EVERY / 2 + 1000);
        const again = await connect(pool);
        assert.equal(again, onB, 'the server, probed again, presents B');
        assert.deepEqual(changes, []);
        again.release();
        probed.release();
      } finally {
        await other.end();
        await end();
        await otherServer.close();
      }
    },
  );
});

describe('the background sweep', () => {
  test(
    're-attests the stale idle connections to the pinned certificate, together, closes superseded ones, keeps fresh ones',
    hangLimit,
    async (t: TestContext) => {
      t.mock.timers.enable({ apis: ['setInterval'] });
      const { pool, clock, end } = poolOf();
      try {
        const superseded = await connect(pool);
        server.present(certificateB);
        const stale = await connect(pool);
        const staleToo = await connect(pool);
        clock.advance(REATTEST_EVERY);
        const fresh = await connect(pool);
        for (const client of [superseded, stale, staleToo, fresh]) client.release();
        const reattested = reattestedClients(pool);
        const handshakes = server.connections;

        t.mock.timers.tick(REATTEST_EVERY / 2);
        assert.equal(pool.idleCount, 4, 'no sweep before reattestEvery');
        t.mock.timers.tick(REATTEST_EVERY / 2);
        assert.equal(pool.idleCount, 3, 'the superseded connection is closed at once');
        // Settled by its event, or by closing a connection it should have kept.
        await new Promise<void>((resolve) => {
          pool.once('reattested', () => resolve());
          pool.once('attestationFailed', () => resolve());
          pool.on('remove', (client) => {
            if (client !== superseded) resolve();
          });
        });
        assert.deepEqual(namesOf(reattested, { stale, staleToo, fresh, superseded }), [
          'stale',
          'staleToo',
        ]);
        assert.equal(pool.idleCount, 3);
        assert.equal(server.connections, handshakes + 1, 'one probe for both');
      } finally {
        await end();
      }
    },
  );

  test(
    'one sweep at a time: a tick while a re-attestation is in flight starts none',
    hangLimit,
    async (t: TestContext) => {
      t.mock.timers.enable({ apis: ['setInterval'] });
      const { pool, verifier, end } = await dueWithVerifierHeld();
      try {
        const verifying = verifier.nextCall();
        t.mock.timers.tick(REATTEST_EVERY);
        assert.equal(reattestsStarted(), 1);
        await verifying;
        t.mock.timers.tick(REATTEST_EVERY);
        assert.equal(reattestsStarted(), 1, 'the second tick found the sweep busy');
        const reattested = once(pool, 'reattested');
        verifier.open();
        await reattested;
        assert.equal(pool.idleCount, 1);
      } finally {
        await end();
      }
    },
  );

  test('none once the pool refused the server (reject)', hangLimit, async (t: TestContext) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const { pool, clock, end } = poolOf({ onServerChange: 'reject' });
    try {
      const held = await connect(pool);
      server.present(certificateB);
      await assert.rejects(connect(pool), (error: unknown) =>
        isRaTlsError(error, 'SERVER_CHANGED'),
      );
      held.release();
      clock.advance(REATTEST_EVERY);
      t.mock.timers.tick(REATTEST_EVERY);
      assert.equal(reattestsStarted(), 0);
    } finally {
      await end();
    }
  });
});

describe('connectionTimeoutMillis bounds a whole checkout, retries on other hosts included', () => {
  async function listening(server: Server): Promise<number> {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  }

  test(
    'a host that refuses: the next host serves the checkout (with or without a limit)',
    hangLimit,
    async () => {
      const closed = createServer();
      const refusing = await listening(closed);
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      for (const connectionTimeoutMillis of [5000, 0]) {
        const { pool, end } = poolOf({
          connectionString: dsn(`127.0.0.1:${refusing},127.0.0.1:${server.port}`),
          connectionTimeoutMillis,
        });
        try {
          const timers = activeTimers();
          const client = await connect(pool);
          assert.equal(client.endpoint?.port, server.port, String(connectionTimeoutMillis));
          assert.equal(activeTimers(), timers, 'the checkout leaves no timer of its limit behind');
          client.release();
        } finally {
          await end();
        }
      }
    },
  );

  test(
    'a host that stalls until pg-pool gives up leaves no time for the next: CONNECT_TIMEOUT; the late connection is pooled',
    hangLimit,
    async () => {
      const sockets = new Set<Socket>();
      const stalling = createServer((socket) => {
        sockets.add(socket);
        socket.on('error', () => {});
      });
      const port = await listening(stalling);
      // The next host's certificate is verified already (a pool of the same clock shares the
      // verdict), so its connection arrives well within pg-pool's own limit, only too late.
      const clock = testClock();
      const warm = poolOf({}, clock);
      (await connect(warm.pool)).release();
      await warm.end();
      const { pool, end } = poolOf(
        {
          connectionString: dsn(`127.0.0.1:${port},127.0.0.1:${server.port}`),
          connectionTimeoutMillis: 2000,
          handshakeTimeout: '10s',
        },
        clock,
      );
      try {
        const lateReturn = once(pool, 'release');
        await assert.rejects(connect(pool), (error: unknown) => {
          assert.ok(isRaTlsError(error, 'CONNECT_TIMEOUT'), String(error));
          assert.equal(
            error.message,
            `no attested connection to ${pool.settings.description} within connectionTimeoutMillis (2000 ms)`,
          );
          return true;
        });
        await lateReturn;
        assert.equal(pool.idleCount, 1, 'the connection that came too late waits in the pool');
        assert.equal(pool.totalCount, 1);
      } finally {
        await end();
        for (const socket of sockets) socket.destroy();
        await new Promise<void>((resolve) => stalling.close(() => resolve()));
      }
    },
  );
});

describe('a cluster pool', () => {
  const DOMAIN = 'pool-attestation.cluster.test';

  /** Two members (certificates A and B) behind a manifest on a loopback DNS server; `publish` names the leader. */
  async function clusterOf() {
    const signer = createManifestSigner();
    const dns = await startDnsServer();
    const members = [
      await startRaTlsServer(certificateA, { onSecureConnection: answerStartup }),
      await startRaTlsServer(certificateB, { onSecureConnection: answerStartup }),
    ];
    const publish = (epoch: number, leader: 0 | 1) =>
      dns.setTxt(`_teesql-leader.${DOMAIN}`, [
        signer.sign({
          cluster: signer.address,
          epoch,
          leader_instance: `${leader}`.repeat(40),
          leader_url: `https://127.0.0.1:${members[leader]!.port}`,
          valid_until: Math.floor(Date.now() / 1000) + 600,
        }),
      ]);
    publish(1, 0);
    return {
      members,
      dns,
      publish,
      // Only a lookup the pool asks for moves it within a test.
      options: {
        connectionString: dsn(DOMAIN),
        cluster: {
          domain: DOMAIN,
          signer: signer.address,
          resolver: [dns.address],
          refreshEvery: '1h',
        },
      },
      close: async () => {
        for (const member of members) await member.close();
        await dns.close();
      },
    };
  }

  /**
   * connectionTimeoutMillis of the tests that bound a checkout: below the 2 s
   * after which the resolver gives up on a slow DNS answer.
   */
  const LIMIT = 1_000;

  /**
   * A pool of `cluster` limited to LIMIT whose certificate verdicts are already
   * known (shared from a pool without a limit, on the same clock), so that its
   * first connection on a busy machine takes a handshake, not a verification.
   */
  async function limitedPoolOf(cluster: Awaited<ReturnType<typeof clusterOf>>) {
    const clock = testClock();
    for (const member of cluster.members) {
      const warm = poolOf({ connectionString: dsn(`127.0.0.1:${member.port}`) }, clock);
      try {
        (await connect(warm.pool)).release();
      } finally {
        await warm.end();
      }
    }
    return poolOf({ ...cluster.options, connectionTimeoutMillis: LIMIT }, clock);
  }

  /** The follower reads the manifest at most once per 100 ms; no event marks the gap's end. */
  const lookupGap = () => new Promise((resolve) => setTimeout(resolve, 150));

  test(
    'a connection released with an error makes it look for the leader again; the move closes idle connections to the old one',
    hangLimit,
    async () => {
      const cluster = await clusterOf();
      const { pool, end } = poolOf(cluster.options);
      try {
        const lost = await connect(pool);
        const idle = await connect(pool);
        assert.equal(idle.endpoint?.port, cluster.members[0]!.port);
        idle.release();
        cluster.publish(2, 1);
        const moved = once(pool, 'leaderChanged');
        await lookupGap();
        lost.release(new Error('Connection terminated unexpectedly'));
        await moved;
        assert.equal(pool.idleCount, 0, 'the idle connection to the old leader is closed at once');
        const next = await connect(pool);
        assert.equal(next.endpoint?.port, cluster.members[1]!.port);
        next.release();
      } finally {
        await end();
        await cluster.close();
      }
    },
  );

  test(
    'a connection to a leader replaced while it was being attested is refused; the checkout gets the new one',
    hangLimit,
    async () => {
      const cluster = await clusterOf();
      const verifier = new GatedVerifier(dcap);
      const { pool, clock, end } = poolOf({ ...cluster.options, verifier });
      try {
        const held = await connect(pool);
        // The old leader's verdict expires: the next connection to it is verified anew, held here.
        clock.advance(REATTEST_EVERY);
        verifier.hold();
        const verifying = verifier.nextCall();
        const checkout = connect(pool);
        await verifying;
        verifier.passNewCalls();
        const changes: string[] = [];
        pool.on('serverChanged', (event) => changes.push(event.fingerprint));
        cluster.publish(2, 1);
        const moved = once(pool, 'leaderChanged');
        await lookupGap();
        held.release(new Error('Connection terminated unexpectedly'));
        await moved;
        verifier.open();
        const client = await checkout;
        assert.equal(client.endpoint?.port, cluster.members[1]!.port);
        assert.deepEqual(changes, [], 'the old leader is not pinned again');
        assert.equal(pool.attestation?.fingerprint, reportOf(client).fingerprint);
        client.release();
      } finally {
        verifier.open();
        await end();
        await cluster.close();
      }
    },
  );

  test(
    'once the manifest has expired and cannot be read again, no idle connection to that leader is kept',
    hangLimit,
    async (t: TestContext) => {
      // Only the wall clock the manifest's validity is judged by is the test's.
      t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
      const cluster = await clusterOf();
      const { pool, end } = poolOf(cluster.options);
      try {
        (await connect(pool)).release();
        assert.equal(pool.idleCount, 1);
        cluster.dns.setFault('servfail');
        t.mock.timers.tick(3_600_000);
        await assert.rejects(connect(pool), (error: unknown) => {
          assert.ok(isRaTlsError(error, 'MANIFEST_EXPIRED'), String(error));
          return true;
        });
        assert.equal(pool.idleCount, 0);
        assert.equal(pool.totalCount, 0);
      } finally {
        await end();
        await cluster.close();
      }
    },
  );

  test(
    'while the manifest is unexpired, pg-pool sees a checkout at once, as with a plain pool',
    hangLimit,
    async () => {
      const cluster = await clusterOf();
      const { pool, end } = poolOf({ ...cluster.options, max: 1 });
      try {
        const held = await connect(pool);
        const waiting = connect(pool);
        assert.equal(pool.waitingCount, 1);
        held.release();
        assert.equal(await waiting, held);
        held.release();
      } finally {
        await end();
        await cluster.close();
      }
    },
  );

  test(
    'a leader gone and a manifest re-read slower than connectionTimeoutMillis: the dial’s error at the limit, no other dial',
    hangLimit,
    async () => {
      const cluster = await clusterOf();
      const { pool, end } = await limitedPoolOf(cluster);
      try {
        (await connect(pool)).release(true);
        await cluster.members[0]!.close();
        // The manifest names another leader, but its answer comes after the limit
        // (and before the resolver's own timeout, so the re-read succeeds).
        cluster.publish(2, 1);
        await lookupGap();
        cluster.dns.setDelay(LIMIT + 500);
        const dialed = cluster.members[1]!.connections;
        await assert.rejects(connect(pool), (error: unknown) => {
          assert.ok(isRaTlsError(error, 'CONNECT_FAILED'), String(error));
          return true;
        });
        assert.equal(
          cluster.members[1]!.connections,
          dialed,
          'no time was left to dial the new leader',
        );
      } finally {
        await end();
        await cluster.close();
      }
    },
  );

  test(
    'an expired manifest whose re-read is slower than connectionTimeoutMillis: CONNECT_TIMEOUT within the limit',
    hangLimit,
    async (t: TestContext) => {
      t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
      const cluster = await clusterOf();
      // Long enough for a verification on a busy machine; the lookup's own
      // timeout is longer than the DNS server's delay, so only the limit ends the wait.
      const { pool, end } = await limitedPoolOf(cluster);
      try {
        (await connect(pool)).release();
        await lookupGap();
        // The re-read's answer comes after the limit (and before the resolver's own timeout).
        cluster.dns.setDelay(LIMIT + 500);
        t.mock.timers.tick(3_600_000);
        const started = performance.now();
        await assert.rejects(connect(pool), (error: unknown) => {
          assert.ok(isRaTlsError(error, 'CONNECT_TIMEOUT'), String(error));
          assert.match(error.message, /within connectionTimeoutMillis \(1000 ms\)/);
          return true;
        });
        const elapsed = performance.now() - started;
        assert.ok(
          elapsed < LIMIT + 3_000,
          `the checkout took ${elapsed} ms, its limit is ${LIMIT} ms`,
        );
        assert.equal(pool.idleCount, 0, 'nothing says the old leader still leads');
      } finally {
        await end();
        await cluster.close();
      }
    },
  );
});
