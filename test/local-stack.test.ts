import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import { DstackClient } from '@phala/dstack-sdk';
import pg from 'pg';
import { attestCertificate } from '../src/attest/attest-certificate.js';
import { isRaTlsError } from '../src/errors.js';
import { normalizePolicy } from '../src/policy/policy.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { createDstackIssuer } from '../src/testing/dstack-issuer.js';
import { type LocalStack, startLocalStack } from '../src/testing/local-stack.js';
import { type LocalPostgres, startPostgres } from '../src/testing/stack/postgres.js';

interface Credential {
  readonly key: string;
  readonly cert: string;
}

let stack: LocalStack;
let appCredential: Credential;
const warnings: string[] = [];

/** The app CVM's client certificate, asked of its guest agent as a dstack app would. */
async function agentCredential(endpoint: string): Promise<Credential> {
  const answer = await new DstackClient(endpoint).getTlsKey({
    subject: 'app',
    usageRaTls: true,
    usageServerAuth: false,
    usageClientAuth: true,
  });
  return { key: answer.key, cert: answer.certificate_chain.join('\n') };
}

/** A TLS connection from the first byte (no SSLRequest, docs/protocol.md §5), settled either way. */
function dial(
  port: number,
  credential: Credential | undefined,
  servername?: string,
): Promise<{ socket: TLSSocket; error?: Error }> {
  return new Promise((resolve) => {
    const socket = connectTls({
      host: '127.0.0.1',
      port,
      rejectUnauthorized: false,
      ...(servername === undefined ? {} : { servername }),
      ...(credential ?? {}),
    });
    socket.once('secureConnect', () => resolve({ socket }));
    socket.once('error', (error) => resolve({ socket, error }));
  });
}

/** Runs `sql` as the URL's role over an already-connected TLS socket handed to pg as its stream. */
async function queryOver(socket: TLSSocket, url: string, sql: string): Promise<pg.QueryResult> {
  // pg calls stream.connect() and waits for 'connect': announce the existing connection.
  Object.defineProperty(socket, 'connect', {
    value: () => {
      process.nextTick(() => socket.emit('connect'));
      return socket;
    },
  });
  const { username, password, pathname } = new URL(url);
  const client = new pg.Client({
    stream: () => socket,
    user: username,
    password,
    database: pathname.slice(1),
  });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

async function attestedQuery(url: string, sql: string): Promise<pg.QueryResult> {
  const { port } = new URL(url);
  const { socket, error } = await dial(Number(port), appCredential);
  assert.equal(error, undefined);
  return queryOver(socket, url, sql);
}

/** Sends a startup-sized message on a connection the sidecar should refuse, and waits for its end. */
async function refusedConnection(credential: Credential | undefined): Promise<void> {
  const { socket, error } = await dial(stack.sidecar.port, credential);
  if (error === undefined) {
    socket.on('error', () => {});
    socket.write(Buffer.alloc(64, 1));
    if (!socket.destroyed) await once(socket, 'close');
  }
}

/** True when nothing listens on 127.0.0.1:port any more. */
function refusesConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    let refused = false;
    const socket = connectTcp(port, '127.0.0.1');
    socket.once('connect', () => socket.destroy());
    socket.once('error', () => {
      refused = true;
    });
    // 'close' comes once the handle is released, so the probe itself leaves nothing behind.
    socket.once('close', () => resolve(refused));
  });
}

function activeResources(): string[] {
  return process.getActiveResourcesInfo().sort();
}

// First, while nothing else runs: lingering sockets of other tests would blur the handle count.
describe('starting and stopping', () => {
  test('five starts and stops in one process leave no handle, port or socket behind', async () => {
    // One Postgres for the five stacks (initdb is most of a start); the rest really restarts.
    const shared: LocalPostgres = await startPostgres();
    try {
      const resourcesBefore = activeResources();
      for (let round = 1; round <= 5; round++) {
        const local = await startLocalStack({
          postgres: { databaseUrl: shared.superuserUrl },
          guestAgentSocket: true,
          logger: () => {},
        });
        const credential = await agentCredential(local.dstackSocketPath!);
        const { socket, error } = await dial(local.sidecar.port, credential);
        assert.equal(error, undefined, `round ${round}`);
        const { rows } = await queryOver(socket, local.databaseUrl, 'SELECT 1 AS one');
        assert.deepEqual(rows, [{ one: 1 }]);
        const ports = [
          local.sidecar.port,
          local.gateway!.port,
          Number(new URL(local.dstackEndpoint).port),
          Number(new URL(local.pccsUrl).port),
        ];
        await local.stop();
        await local.stop();
        for (const port of ports) assert.ok(await refusesConnections(port), `port ${port} closed`);
      }
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(activeResources(), resourcesBefore);
    } finally {
      await shared.stop();
    }
  });

  test('a start that fails half-way releases what it had started', async () => {
    const shared = await startPostgres();
    try {
      const resourcesBefore = activeResources();
      await assert.rejects(
        startLocalStack({
          postgres: { databaseUrl: shared.superuserUrl },
          // The guest agent cannot listen here, after the PCCS has started.
          guestAgentSocket: '/nonexistent-directory/dstack.sock',
          logger: () => {},
        }),
        (error: unknown) =>
          isRaTlsError(error, 'LOCAL_STACK_FAILED') &&
          /could not start the client guest agent/.test(error.message),
      );
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(activeResources(), resourcesBefore);
    } finally {
      await shared.stop();
    }
  });
});

/**
 * The leaf certificate (DER) the sidecar of a stack without Postgres presents
 * to an attested app; resolves once the sidecar has judged the app and, with
 * nothing upstream, closed the connection.
 */
/** The leaf the sidecar presents and the certificates it sends after it (its KMS chain). */
interface PresentedChain {
  readonly leaf: Uint8Array;
  readonly issuers: readonly Uint8Array[];
}

async function serverCertificate(local: LocalStack): Promise<PresentedChain> {
  const credential = await agentCredential(local.dstackEndpoint);
  const { socket, error } = await dial(local.sidecar.port, credential);
  assert.equal(error, undefined);
  const presented = presentedChain(socket);
  socket.on('error', () => {});
  if (!socket.destroyed) await once(socket, 'close');
  return presented;
}

function presentedChain(socket: TLSSocket): PresentedChain {
  const leaf = socket.getPeerCertificate(true);
  const issuers: Uint8Array[] = [];
  for (let cert = leaf; cert.issuerCertificate !== cert; cert = cert.issuerCertificate) {
    issuers.push(new Uint8Array(cert.issuerCertificate.raw));
  }
  return { leaf: new Uint8Array(leaf.raw), issuers };
}

function attestUnder(local: LocalStack, presented: PresentedChain) {
  return attestCertificate(presented.leaf, {
    verifier: local.clientOptions.verifier,
    policy: normalizePolicy(local.clientOptions.policy),
    chain: presented.issuers,
  });
}

describe('stack options', () => {
  test('legacyCertificates and certificateLifetime shape what the sidecar presents', async () => {
    const local = await startLocalStack({
      postgres: false,
      gateway: false,
      legacyCertificates: true,
      certificateLifetime: '1h',
      logger: () => {},
    });
    try {
      const startedAt = Date.now();
      const report = await attestUnder(local, await serverCertificate(local));
      assert.equal(report.attestationFormat, 'legacy');
      assert.equal(report.mrtd, local.expected.mrtd);
      const remaining = report.certificate.notAfter.getTime() - startedAt;
      assert.ok(remaining > 0 && remaining <= 3_600_000, `${remaining} ms left`);
    } finally {
      await local.stop();
    }
  });

  test('a debug database TD is refused by clientOptions while the sidecar still admits the app', async () => {
    const local = await startLocalStack({
      postgres: false,
      gateway: false,
      debug: true,
      logger: () => {},
    });
    try {
      await assert.rejects(attestUnder(local, await serverCertificate(local)), {
        code: 'DEBUG_MODE',
        message: /Debug mode is enabled/,
      });
      // The app itself is not a debug TD: the sidecar verified it and went on to Postgres.
      assert.match(local.sidecar.stats.connections[0]?.reason ?? '', /^Postgres unreachable/);
    } finally {
      await local.stop();
    }
  });

  test('an out-of-date platform is refused by clientOptions with BAD_TCB_STATUS', async () => {
    const local = await startLocalStack({
      postgres: false,
      gateway: false,
      tcbStatus: 'OutOfDate',
      logger: () => {},
    });
    try {
      await assert.rejects(attestUnder(local, await serverCertificate(local)), (error: unknown) =>
        isRaTlsError(error, 'BAD_TCB_STATUS'),
      );
      assert.match(local.sidecar.stats.connections[0]?.reason ?? '', /^Postgres unreachable/);
    } finally {
      await local.stop();
    }
  });
});

describe('one running stack', () => {
  before(async () => {
    stack = await startLocalStack({ logger: (line) => warnings.push(line) });
    appCredential = await agentCredential(stack.dstackEndpoint);
  });

  after(async () => {
    await stack?.stop();
  });

  test('an attested app reaches Postgres through the sidecar with its guest agent certificate', async () => {
    const before = stack.sidecar.stats.established;
    const { rows } = await attestedQuery(
      stack.databaseUrl,
      "SELECT current_user AS who, current_database() AS db, 'ok' AS status",
    );
    assert.deepEqual(rows, [{ who: 'teesql_readwrite', db: 'teesql', status: 'ok' }]);
    assert.equal(stack.sidecar.stats.established, before + 1);
  });

  test('the gateway routes the <appId>-5433s name to the sidecar and the query runs', async () => {
    assert.ok(stack.gateway !== undefined && stack.gatewayUrl !== undefined);
    assert.equal(stack.gatewayServername, `${stack.expected.appId}-5433s.dstack.localhost`);
    const { socket, error } = await dial(
      stack.gateway.port,
      appCredential,
      stack.gatewayServername,
    );
    assert.equal(error, undefined);
    const { rows } = await queryOver(socket, stack.gatewayUrl, 'SELECT 40 + 2 AS answer');
    assert.deepEqual(rows, [{ answer: 42 }]);
    assert.deepEqual(stack.gateway.stats.routedServerNames, [stack.gatewayServername]);
  });

  test('the certificate the sidecar presents passes attestation under clientOptions', async () => {
    const { socket, error } = await dial(stack.sidecar.port, appCredential);
    assert.equal(error, undefined);
    const { leaf, issuers } = presentedChain(socket);
    socket.destroy();
    const report = await attestCertificate(leaf, {
      verifier: stack.clientOptions.verifier,
      policy: normalizePolicy(stack.clientOptions.policy),
      chain: issuers,
    });
    assert.equal(report.mrtd, stack.expected.mrtd);
    assert.equal(report.app?.appId, stack.expected.appId);
    assert.equal(report.app?.composeHash, stack.expected.composeHash);
    // The policy pins the boot chain and the KMS root the sidecar's chain ends in.
    assert.deepEqual(
      [report.rtmr0, report.rtmr1, report.rtmr2],
      [stack.expected.rtmr0, stack.expected.rtmr1, stack.expected.rtmr2],
    );
    assert.deepEqual(report.kms, {
      rootSpkiSha256: stack.expected.kmsRoot,
      appId: stack.expected.appId,
      pinned: true,
    });
    // The pinned policy has no warning; the report says only that a test root judged it.
    assert.equal(report.testRoot, true);
    assert.deepEqual(report.warnings, [
      "Verifier dcap:js checked the quote against a TEST root of trust, not Intel's: this proves nothing about real TDX hardware.",
    ]);
    assert.equal(report.tcbStatus, 'UpToDate');
    assert.equal(stack.clientOptions.dstackEndpoint, stack.dstackEndpoint);
    // The test root is loud: the sidecar's verifier logged its warning through the logger.
    assert.ok(warnings.some((line) => line.includes('custom root CA')));
  });

  test('clientOptions trust this stack only: a certificate from another test root is refused', async () => {
    const strangerAuthority = await createTestAuthority();
    const stranger = createDstackIssuer({
      authority: strangerAuthority,
      identity: {
        mrtd: stack.expected.mrtd,
        appId: stack.expected.appId,
        composeHash: stack.expected.composeHash,
      },
    });
    const { leafDer } = await stranger.issueTlsKey({ usageRaTls: true, usageServerAuth: true });
    await assert.rejects(
      attestCertificate(leafDer, {
        verifier: stack.clientOptions.verifier,
        policy: normalizePolicy(stack.clientOptions.policy),
      }),
      (error: unknown) => isRaTlsError(error, 'QUOTE_INVALID'),
    );
  });

  test('a client without a certificate is refused and not one byte reaches Postgres', async () => {
    const before = stack.sidecar.stats;
    await refusedConnection(undefined);
    const after = stack.sidecar.stats;
    const connection = after.connections[after.connections.length - 1]!;
    assert.equal(connection.state, 'refused');
    assert.equal(connection.reason, 'no client certificate');
    assert.equal(connection.bytesToUpstream, 0);
    assert.equal(after.established, before.established);
    assert.equal(after.bytesToUpstream, before.bytesToUpstream);
  });

  test('clients whose attestation fails the sidecar policy are refused before Postgres', async () => {
    const client = stack.expectedClient;
    const cases = [
      { name: 'a debug TD', identity: { ...client, debug: true }, why: /Debug mode is enabled/ },
      {
        name: 'a foreign MRTD',
        identity: { ...client, mrtd: 'ee'.repeat(48) },
        why: /MRTD e{96} is not in policy\.allowedMrtds/,
      },
      {
        name: 'another app (the database CVM itself)',
        identity: stack.expected,
        why: /app-id [0-9a-f]{40} is not in policy\.allowedAppIds/,
      },
    ];
    for (const { name, identity, why } of cases) {
      const issuer = createDstackIssuer({ authority: stack.authority, identity });
      const issued = await issuer.issueTlsKey({ usageRaTls: true, usageClientAuth: true });
      const before = stack.sidecar.stats;
      await refusedConnection({ key: issued.key, cert: issued.certificateChain.join('\n') });
      const after = stack.sidecar.stats;
      const connection = after.connections[after.connections.length - 1]!;
      assert.equal(connection.state, 'refused', name);
      assert.match(connection.reason ?? '', /^client certificate rejected: /, name);
      assert.match(connection.reason ?? '', why, name);
      assert.equal(connection.bytesToUpstream, 0, name);
      assert.equal(after.bytesToUpstream, before.bytesToUpstream, name);
      assert.equal(after.established, before.established, name);
    }
  });

  test('teesql_read can SELECT what teesql_readwrite wrote but cannot INSERT', async () => {
    await attestedQuery(
      stack.databaseUrl,
      "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'hello')",
    );
    const readUrl = stack.databaseUrlFor('teesql_read');
    assert.match(readUrl, /^postgres:\/\/teesql_read:[0-9a-f]{64}@127\.0\.0\.1:\d+\/teesql$/);
    const { rows } = await attestedQuery(readUrl, 'SELECT body FROM notes');
    assert.deepEqual(rows, [{ body: 'hello' }]);
    await assert.rejects(
      attestedQuery(readUrl, "INSERT INTO notes VALUES (2, 'nope')"),
      // 42501 insufficient_privilege: Postgres itself refused, not the client.
      { code: '42501', message: /permission denied for table notes/ },
    );
  });

  test('a wrong cluster secret is refused by Postgres with "password authentication failed"', async () => {
    const url = new URL(stack.databaseUrl);
    url.password = url.password === 'ab'.repeat(32) ? 'cd'.repeat(32) : 'ab'.repeat(32);
    await assert.rejects(
      attestedQuery(url.toString(), 'SELECT 1'),
      // 28P01 invalid_password
      { code: '28P01', message: /password authentication failed for user "teesql_readwrite"/ },
    );
  });

  test('createPool with the stack URL and clientOptions runs a query', async () => {
    const pool = createPool({ connectionString: stack.databaseUrl, ...stack.clientOptions });
    try {
      const { rows } = await pool.query('SELECT 1 AS one');
      assert.deepEqual(rows, [{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });

  test('createPool through the gateway: the URL alone routes by SNI (hostaddr keeps TCP on loopback)', async () => {
    assert.ok(stack.gateway !== undefined && stack.gatewayUrl !== undefined);
    const routedBefore = stack.gateway.stats.routed;
    const pool = createPool({ connectionString: stack.gatewayUrl, ...stack.clientOptions });
    try {
      const { rows } = await pool.query('SELECT 2 AS two');
      assert.deepEqual(rows, [{ two: 2 }]);
      assert.equal(stack.gateway.stats.routed, routedBefore + 1);
    } finally {
      await pool.end();
    }
  });

  test('without Postgres the sidecar still attests clients, then finds nothing upstream', async () => {
    const bare = await startLocalStack({ postgres: false, gateway: false, logger: () => {} });
    try {
      assert.equal(bare.postgres, undefined);
      assert.equal(bare.gateway, undefined);
      assert.equal(bare.gatewayUrl, undefined);
      const credential = await agentCredential(bare.dstackEndpoint);
      const { socket, error } = await dial(bare.sidecar.port, credential);
      assert.equal(error, undefined);
      socket.on('error', () => {});
      if (!socket.destroyed) await once(socket, 'close');
      const [connection] = bare.sidecar.stats.connections;
      assert.equal(connection?.state, 'refused');
      assert.match(connection?.reason ?? '', /^Postgres unreachable/);
    } finally {
      await bare.stop();
    }
  });
});

test('await using stops the stack at the end of its scope', async () => {
  let escaped: LocalStack | undefined;
  {
    await using stack = await startLocalStack({ postgres: false, gateway: false });
    escaped = stack;
    assert.ok(stack.sidecar.port > 0);
  }
  // Stopping again is idempotent and resolves at once when already stopped.
  await escaped.stop();
  const sidecarPort = escaped.sidecar.port;
  const socket = connectTcp(sidecarPort, '127.0.0.1');
  const [error] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
  assert.equal(error.code, 'ECONNREFUSED', 'the sidecar no longer listens');
});
