/**
 * What a RaTlsClient makes of its session's failures, against a real TLS
 * server with a real test-root attestation that plays the Postgres side of
 * the protocol by hand (the few backend messages each case needs): an error
 * Postgres sends at startup stays Postgres's, a hang-up or a broken socket is
 * CONNECTION_LOST (naming where, carrying pg's error), a later query says why
 * the client is unusable, and end() during attestation ends the attempt with
 * the socket closed. The happy paths run on real Postgres elsewhere
 * (connection-lost, integration-pg); these are the edges a real server will
 * not produce on demand.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { resolveConnectionSettings } from '../src/config/connection-settings.js';
import { AttestedConnector } from '../src/connection/attested-connector.js';
import { inspectServer } from '../src/connection/inspect-server.js';
import { RaTlsClient, type RaTlsClientHooks } from '../src/connection/ra-tls-client.js';
import { closeSharedDefaults } from '../src/connection/shared-defaults.js';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import type { TestAuthority } from '../src/testing/authority/test-authority.js';
import { type GuestAgent, startGuestAgent } from '../src/testing/stack/guest-agent.js';
import type { DcapVerifier } from '../src/verification/dcap-verifier.js';
import type {
  RaTlsVerifier,
  VerificationResult,
  VerifyOptions,
} from '../src/verification/verifier.js';
import {
  authorityWithVerifier,
  ClientCertIssuer,
  raTlsCredentials,
  waitFor,
} from './pool-harness.js';
import { backend, backendMessage } from './support/postgres-backend.js';
import { type RaTlsServer, startRaTlsServer } from './support/ra-tls-server.js';

/** How the server answers pg's startup message in the current test. */
type Startup = 'ready' | 'auth-error' | 'hang-up';
let startup: Startup = 'ready';
/** Data events the server has seen: the startup message, then queries. */
let received = 0;

const AUTH_FAILED = 'password authentication failed for user "teesql_read"';
const authError = backendMessage(
  'E',
  Buffer.from(`SFATAL\0VFATAL\0C28P01\0M${AUTH_FAILED}\0\0`, 'latin1'),
);

/** The first bytes of each connection: a startup message, or a CancelRequest. */
const firstChunks: Buffer[] = [];

/** What the server does with a query: leave it unanswered, or hang up (end its side). */
let onQuery: 'ignore' | 'hang-up' = 'ignore';

function playPostgres(socket: TLSSocket): void {
  socket.on('data', () => received++);
  socket.once('data', (chunk: Buffer) => {
    firstChunks.push(chunk);
    socket.on('data', () => {
      if (onQuery === 'hang-up') socket.end();
    });
    if (startup === 'hang-up') socket.destroy();
    else if (startup === 'auth-error') socket.end(authError);
    else {
      socket.write(
        Buffer.concat([backend.authenticationOk, backend.backendKey, backend.readyForQuery]),
      );
    }
  });
}

let server: RaTlsServer;
let dcap: DcapVerifier;
let mrtd: string;
let authority: TestAuthority;
const connectors: AttestedConnector[] = [];

before(async () => {
  ({ authority, mrtd, dcap } = await authorityWithVerifier('pg-ra-tls client session tests'));
  server = await startRaTlsServer(raTlsCredentials(authority), {
    requestCert: true,
    onSecureConnection: playPostgres,
  });
});

after(async () => {
  for (const connector of connectors) connector.close();
  await server.close();
});

/** A connector of its own (no verdict shared with another test), closed after the file. */
function connectorFor(verifier: RaTlsVerifier, allowedMrtds = [mrtd]): AttestedConnector {
  const connector = new AttestedConnector(
    { verifier, policy: { allowedMrtds }, presentClientCertificate: false, logger: () => {} },
    'none',
  );
  connectors.push(connector);
  return connector;
}

function client(verifier: RaTlsVerifier = dcap): RaTlsClient {
  return new RaTlsClient({ connectionString: dsn(), connector: connectorFor(verifier) });
}

const dsn = () => `postgres://teesql_read:${'a3'.repeat(32)}@127.0.0.1:${server.port}/db`;

/** The CONNECTION_LOST a session failure becomes: where, what to do, pg's error as cause. */
function assertLost(
  error: unknown,
  cause: (cause: unknown) => boolean,
): asserts error is RaTlsError {
  assert.ok(isRaTlsError(error, 'CONNECTION_LOST'), `CONNECTION_LOST expected: ${String(error)}`);
  assert.ok(cause(error.cause), `cause: ${String(error.cause)}`);
  assert.ok(!isRaTlsError(error.cause), 'the cause is what pg or the socket reported');
  assert.match(
    error.message,
    new RegExp(`^the connection to 127\\.0\\.0\\.1:${server.port} was lost \\(`),
  );
  assert.match(error.message, /retry on a new connection/);
  assert.deepEqual(error.details, { host: '127.0.0.1', port: server.port });
}

describe('RaTlsClient session failures', () => {
  test('an error Postgres sends at startup stays its own; a later query is refused naming it', async () => {
    startup = 'auth-error';
    const session = client();
    try {
      const error = await session.connect().then(
        () => assert.fail('connect must fail'),
        (failure: unknown) => failure,
      );
      assert.ok(!isRaTlsError(error), `Postgres's error is not re-typed: ${String(error)}`);
      assert.equal((error as { code?: string }).code, '28P01');
      // pg itself would queue this query for ever: the session never became ready.
      await assert.rejects(session.query('select 1'), (refused: unknown) => {
        assert.ok(isRaTlsError(refused, 'CONNECTION_ENDED'), String(refused));
        assert.equal(
          refused.message,
          `this client's connect() to 127.0.0.1:${server.port} failed (${AUTH_FAILED}) and it ` +
            'sends no queries; create a new client (RaTlsPool does so for each checkout)',
        );
        assert.equal(refused.cause, error, 'the cause is what failed the connect');
        assert.deepEqual(refused.details, { host: '127.0.0.1', port: server.port });
        return true;
      });
    } finally {
      startup = 'ready';
      await session.end().catch(() => {});
    }
  });

  test('a server that hangs up after attestation is CONNECTION_LOST naming where, with pg’s error', async () => {
    startup = 'hang-up';
    const session = client();
    try {
      const error = await session.connect().then(
        () => assert.fail('connect must fail'),
        (failure: unknown) => failure,
      );
      assertLost(
        error,
        (cause) => cause instanceof Error && cause.message === 'Connection terminated unexpectedly',
      );
      await assert.rejects(session.query('select 1'), (refused: unknown) => {
        assert.ok(isRaTlsError(refused, 'CONNECTION_ENDED'), String(refused));
        assert.equal(refused.cause, error);
        return true;
      });
    } finally {
      startup = 'ready';
      await session.end().catch(() => {});
    }
  });

  test('queries queued before a connect() that is refused fail with it, nothing sent', async () => {
    const session = new RaTlsClient({
      connectionString: dsn(),
      connector: connectorFor(dcap, ['00'.repeat(48)]),
    });
    const before = received;
    // pg allows queries before connect(): it sends them once the session is ready.
    const queued = session.query('select 1');
    const refused = await session.connect().then(
      () => assert.fail('the policy refuses this server'),
      (failure: unknown) => failure,
    );
    assert.ok(isRaTlsError(refused, 'MRTD_NOT_ALLOWED'), String(refused));
    await assert.rejects(queued, (error: unknown) => {
      assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'), String(error));
      assert.match(error.message, /connect\(\) to 127\.0\.0\.1:\d+ failed \(/);
      assert.equal(error.cause, refused);
      return true;
    });
    assert.equal(received, before, 'not a byte of Postgres was sent');
    await session.end();
  });

  for (const code of ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED']) {
    test(`a socket that breaks with ${code} is CONNECTION_LOST, one error for the query and the event`, async () => {
      const session = client();
      await session.connect();
      try {
        const emitted = once(session, 'error') as Promise<[unknown]>;
        // Written and never answered: in flight when the socket breaks.
        const pending = session.query('select 1').then(
          () => assert.fail('the query must fail'),
          (failure: unknown) => failure,
        );
        const before = received;
        await waitFor(() => received > before, 'the query written');
        const broken = Object.assign(new Error(`socket ${code}`), { code });
        (session as unknown as { connection: { stream: TLSSocket } }).connection.stream.destroy(
          broken,
        );
        const [event] = await emitted;
        assertLost(event, (cause) => cause === broken);
        assert.equal(await pending, event, 'pg reports one loss twice: the same RaTlsError');
        await assert.rejects(session.query('select 2'), (refused: unknown) => {
          assert.ok(isRaTlsError(refused, 'CONNECTION_LOST'), String(refused));
          assert.equal(
            refused.message,
            `this connection to 127.0.0.1:${server.port} was lost earlier (socket ${code}) and ` +
              'sends no more queries; release it with release(true) and retry on a new connection',
          );
          assert.equal(refused.cause, broken, 'the socket’s error, not the typed one');
          assert.deepEqual(refused.details, { host: '127.0.0.1', port: server.port });
          return true;
        });
      } finally {
        await session.end().catch(() => {});
      }
    });
  }

  test('a server that hangs up mid-query: the query and the error event get one CONNECTION_LOST', async () => {
    const session = client();
    await session.connect();
    onQuery = 'hang-up';
    try {
      const emitted = once(session, 'error') as Promise<[unknown]>;
      const pending = session.query('select 1').then(
        () => assert.fail('the query must fail'),
        (failure: unknown) => failure,
      );
      const [event] = await emitted;
      assertLost(
        event,
        (cause) => cause instanceof Error && cause.message === 'Connection terminated unexpectedly',
      );
      assert.equal(
        (event as RaTlsError).message,
        `the connection to 127.0.0.1:${server.port} was lost (Connection terminated ` +
          'unexpectedly): the server closed it or went away, as in a leader switch; retry on ' +
          'a new connection (a statement in flight may or may not have committed)',
      );
      assert.equal(await pending, event, 'pg reports one loss twice: the same RaTlsError');
    } finally {
      onQuery = 'ignore';
      await session.end().catch(() => {});
    }
  });

  test('a second connect() is refused; so is one while the first is running', async () => {
    const session = client();
    const first = session.connect();
    const refusedOnce = (error: unknown) => {
      assert.ok(isRaTlsError(error, 'BAD_CONFIG'), String(error));
      assert.equal(
        error.message,
        'a RaTlsClient connects only once: create a new client (or use RaTlsPool)',
      );
      return true;
    };
    await assert.rejects(session.connect(), refusedOnce);
    await first;
    await assert.rejects(session.connect(), refusedOnce);
    await session.end();
  });

  test('an unknown option is named with the class it was given to', () => {
    assert.throws(
      () => new RaTlsClient({ connectionString: dsn(), verifyTimout: '1s' } as never),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') &&
        /^RaTlsClient has no option "verifyTimout"/.test(error.message),
    );
  });

  test('a socket error that is not a loss reaches the caller as it is', async () => {
    const session = client();
    await session.connect();
    try {
      const emitted = once(session, 'error') as Promise<[unknown]>;
      const broken = Object.assign(new Error('bad record mac'), { code: 'EPROTO' });
      (session as unknown as { connection: { stream: TLSSocket } }).connection.stream.destroy(
        broken,
      );
      const [event] = await emitted;
      assert.equal(event, broken);
    } finally {
      await session.end().catch(() => {});
    }
  });

  test('a query after end() is CONNECTION_ENDED, naming the connection and what to do', async () => {
    const session = client();
    await session.connect();
    await session.end();
    await assert.rejects(session.query('select 1'), (refused: unknown) => {
      assert.ok(isRaTlsError(refused, 'CONNECTION_ENDED'), String(refused));
      assert.equal(
        refused.message,
        `this connection to 127.0.0.1:${server.port} was ended (end() or release(true)) and ` +
          'sends no more queries; check out a new connection from the pool',
      );
      assert.deepEqual(refused.details, { host: '127.0.0.1', port: server.port });
      return true;
    });
  });

  test('end() during attestation ends connect() with CONNECTION_ENDED and closes the socket', async () => {
    let entered!: () => void;
    const verifying = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow: RaTlsVerifier = {
      name: 'held',
      async verify(quote: Uint8Array, options?: VerifyOptions): Promise<VerificationResult> {
        entered();
        await held;
        return dcap.verify(quote, options);
      },
    };
    const session = client(slow);
    const opened = server.connections;
    const before = received;
    const connecting = session.connect();
    await verifying;
    await session.end();
    release();
    await assert.rejects(connecting, (error: unknown) => {
      assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'), String(error));
      assert.equal(
        error.message,
        'client.end() was called before the server was attested; the connection was not used',
      );
      return true;
    });
    assert.equal(server.connections, opened + 1);
    await waitFor(() => server.open === 0, 'the attested socket closed');
    assert.equal(received, before, 'not a byte of Postgres was sent');
  });
});

describe('the client certificate a standalone client or one-shot check presents', () => {
  let agent: GuestAgent;
  before(async () => {
    agent = await startGuestAgent({ issuer: new ClientCertIssuer(authority) });
  });
  after(async () => {
    closeSharedDefaults();
    await agent.close();
  });
  const tlsKeyRequests = () => agent.requests.filter((request) => request.method === 'GetTlsKey');
  const standalone = { verifier: () => dcap, policy: () => ({ allowedMrtds: [mrtd] }) };

  test('clients without an identity of their own share the process’s guest-agent certificate', async () => {
    const subjects = server.clientSubjects.length;
    const options = () => ({
      connectionString: dsn(),
      verifier: standalone.verifier(),
      policy: standalone.policy(),
      dstackEndpoint: agent.endpoint,
      logger: () => {},
    });
    const clients = [new RaTlsClient(options()), new RaTlsClient(options())];
    try {
      for (const each of clients) await each.connect();
      assert.equal(tlsKeyRequests().length, 1, 'one certificate for the process, not one each');
      assert.deepEqual(
        server.clientSubjects.slice(subjects).map((subject) => /CN=pg-ra-tls client/.test(subject)),
        [true, true],
      );
      // One given explicitly is presented instead of the shared one.
      const own = raTlsCredentials(authority, {}, {}, 'CN=own client certificate');
      const explicit = new RaTlsClient({ ...options(), clientCertOverride: own });
      clients.push(explicit);
      await explicit.connect();
      assert.equal(server.clientSubjects.at(-1), 'CN=own client certificate');
      assert.equal(tlsKeyRequests().length, 1);
    } finally {
      for (const each of clients) await each.end().catch(() => {});
    }
  });

  test('inspectServer uses the process’s guest-agent certificate, not one of its own per call', async () => {
    // It hangs up before the server completes its side of the handshake, so what
    // it presents is seen at the guest agent: one certificate for every check.
    const target = `127.0.0.1:${server.port}`;
    const base = {
      verifier: standalone.verifier(),
      policy: standalone.policy(),
      dstackEndpoint: agent.endpoint,
      logger: () => {},
    };
    const inspect = async (options: Parameters<typeof inspectServer>[1]) => {
      const inspection = await inspectServer(target, options);
      assert.equal(inspection.error, undefined, String(inspection.error));
    };
    await inspect(base);
    const requests = tlsKeyRequests().length;
    assert.ok(requests >= 1, 'the first check fetched the shared certificate');
    await inspect(base);
    const own = raTlsCredentials(authority, {}, {}, 'CN=own inspection certificate');
    await inspect({ ...base, clientCertOverride: own });
    await inspect({ ...base, presentClientCertificate: false });
    assert.equal(tlsKeyRequests().length, requests, 'no check fetched a certificate of its own');
  });
});

describe('the hooks a pool binds to its clients', () => {
  function bound(
    hooks: RaTlsClientHooks,
    endpoint?: () => Promise<{
      host: string;
      port: number;
      connectTimeoutMs: number;
      handshakeTimeoutMs: number;
    }>,
    verifier: RaTlsVerifier = dcap,
  ): RaTlsClient {
    return new RaTlsClient(undefined as never, {
      settings: resolveConnectionSettings({ connectionString: dsn() }),
      connector: connectorFor(verifier),
      hooks,
      ...(endpoint === undefined ? {} : { endpoint }),
    });
  }
  const failedWith = (promise: Promise<unknown>) =>
    promise.then(
      () => assert.fail('connect must fail'),
      (error: unknown) => error,
    );
  const ENDED =
    'client.end() was called before the server was attested; the connection was not used';

  test('end() while the pool looks up where to dial: nothing is dialled', async () => {
    let resolveEndpoint!: () => void;
    const looked = new Promise<void>((resolve) => {
      resolveEndpoint = resolve;
    });
    const client = bound({}, async () => {
      await looked;
      return {
        host: '127.0.0.1',
        port: server.port,
        connectTimeoutMs: 2000,
        handshakeTimeoutMs: 2000,
      };
    });
    const dialled = server.connections;
    const connecting = failedWith(client.connect());
    await client.end();
    resolveEndpoint();
    const error = await connecting;
    assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'), String(error));
    assert.equal(error.message, ENDED);
    assert.equal(server.connections, dialled, 'no connection was opened');
  });

  test('pg-pool destroying the placeholder stream (connectionTimeoutMillis) ends the attestation', async () => {
    const before = received;
    let verifying!: () => void;
    const entered = new Promise<void>((resolve) => {
      verifying = resolve;
    });
    // Verifies until the attempt is abandoned, as behind a stalled collateral service.
    const stalled: RaTlsVerifier = {
      name: 'stalled',
      verify: (_quote, options) =>
        new Promise((_resolve, reject) => {
          verifying();
          options?.signal?.addEventListener('abort', () => reject(options.signal?.reason));
        }),
    };
    const client = bound({}, undefined, stalled);
    const connecting = failedWith(client.connect());
    await entered;
    // What pg-pool's connection timeout does: destroy client.connection.stream,
    // which is still pg's placeholder while the server is being attested.
    (client as unknown as { connection: { stream: TLSSocket } }).connection.stream.destroy();
    const error = await connecting;
    assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'), String(error));
    assert.equal(
      error.message,
      'the connection was destroyed before the server was attested (connectionTimeoutMillis?)',
    );
    await waitFor(() => server.open === 0, 'the attested socket closed');
    assert.equal(received, before, 'not a byte of Postgres was sent');
  });

  test('end() called as the verdict is admitted: the attested socket is closed unused', async () => {
    const before = received;
    const client: RaTlsClient = bound({
      admit: (_report, admitted) => {
        assert.equal(admitted, client, 'the pool judges this very client');
        void admitted.end();
        return undefined;
      },
    });
    const error = await failedWith(client.connect());
    assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'), String(error));
    assert.equal(error.message, ENDED);
    await waitFor(() => server.open === 0, 'the attested socket closed');
    assert.equal(received, before, 'not a byte of Postgres was sent');
  });

  test('a refusal by the attested hook closes the socket before pg writes a byte', async () => {
    const before = received;
    const refusal = new RaTlsError('SERVER_CHANGED', 'refused by the pool');
    let failed: unknown[] = [];
    const client = bound({
      attested: () => {
        throw refusal;
      },
      failed: (who, error) => {
        failed = [who, error];
      },
    });
    assert.equal(await failedWith(client.connect()), refusal);
    assert.deepEqual(failed, [client, refusal], 'the pool hears which client failed and why');
    await waitFor(() => server.open === 0, 'the attested socket closed');
    assert.equal(received, before, 'not a byte of Postgres was sent');
  });

  test('a client the ready hook refuses is ended and its connect() fails', async () => {
    const refusal = new RaTlsError('SERVER_CHANGED', 'not ready');
    const client = bound({
      ready: async () => {
        throw refusal;
      },
    });
    assert.equal(await failedWith(client.connect()), refusal);
    await waitFor(() => server.open === 0, 'the session closed');
  });

  test('cancelActiveQuery obeys the pool: a refusal sends nothing, an admitted server gets the key', async () => {
    let refusal: RaTlsError | undefined;
    const admitted: unknown[] = [];
    const client: RaTlsClient = bound({
      refusal: () => refusal,
      admit: (report, who) => {
        admitted.push([report.fingerprint, who]);
        return undefined;
      },
    });
    await client.connect();
    try {
      refusal = new RaTlsError('SERVER_CHANGED', 'the pool refuses this server now');
      const dialled = server.connections;
      await assert.rejects(client.cancelActiveQuery(), (error: unknown) => error === refusal);
      assert.equal(server.connections, dialled, 'no connection carried the backend key');
      refusal = undefined;
      const chunks = firstChunks.length;
      await client.cancelActiveQuery();
      await waitFor(() => firstChunks.length > chunks, 'the CancelRequest arrived');
      const cancel = firstChunks.at(-1)!;
      assert.deepEqual(
        [
          cancel.length,
          cancel.readInt32BE(0),
          cancel.readInt32BE(4),
          cancel.readInt32BE(8),
          cancel.readInt32BE(12),
        ],
        [16, 16, 80877102, 4242, 777],
      );
      assert.equal(admitted.length, 2, 'the session and the cancel connection were admitted');
      assert.equal((admitted[1] as unknown[])[1], client);
    } finally {
      await client.end();
    }
  });
});
