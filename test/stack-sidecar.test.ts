import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import pg from 'pg';
import { closeServer, listen } from '../src/testing/stack/net-utils.js';
import {
  createPlainCertificate,
  type PlainCertificate,
} from '../src/testing/stack/plain-certificate.js';
import { type LocalPostgres, startPostgres } from '../src/testing/stack/postgres.js';
import { type Sidecar, startSidecar } from '../src/testing/stack/sidecar.js';

const resourcesBefore = process.getActiveResourcesInfo();

let postgres: LocalPostgres;
let serverCert: PlainCertificate;
let otherServerCert: PlainCertificate;
let clientCert: PlainCertificate;
let strangerCert: PlainCertificate;

before(async () => {
  [postgres, serverCert, otherServerCert, clientCert, strangerCert] = await Promise.all([
    startPostgres(),
    createPlainCertificate({ commonName: 'sidecar' }),
    createPlainCertificate({ commonName: 'impostor' }),
    createPlainCertificate({ commonName: 'client' }),
    createPlainCertificate({ commonName: 'stranger' }),
  ]);
});

after(async () => {
  await postgres?.stop();
});

/** Accepts only the known client certificate, like a verifier that trusts one attestation. */
async function verifyKnownClient(der: Uint8Array): Promise<void> {
  if (!Buffer.from(der).equals(Buffer.from(clientCert.der))) {
    throw new Error('unknown client certificate');
  }
}

/** The sidecar most tests need: our server certificate, known clients only, a counting upstream. */
async function startDefaultSidecar() {
  const upstream = await startCountingUpstream();
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: verifyKnownClient,
    upstream: { host: '127.0.0.1', port: upstream.port },
  });
  return { upstream, sidecar };
}

/** A TCP server standing in for Postgres that records every connection and byte it gets. */
async function startCountingUpstream(): Promise<{
  server: Server;
  port: number;
  accepted: number;
  received: () => string;
  receivedAtLeast: (bytes: number) => Promise<void>;
  close: () => Promise<void>;
}> {
  const sockets = new Set<Socket>();
  const chunks: Buffer[] = [];
  const state = { accepted: 0 };
  const waiters = new Set<() => void>();
  const server = createServer((socket) => {
    state.accepted++;
    sockets.add(socket);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      for (const wake of waiters) wake();
    });
    socket.on('close', () => sockets.delete(socket));
  });
  const receivedBytes = () => chunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
  await listen(server, 0, '127.0.0.1');
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    server,
    port: address.port,
    get accepted() {
      return state.accepted;
    },
    received: () => Buffer.concat(chunks).toString('utf8'),
    receivedAtLeast: (bytes) =>
      new Promise<void>((resolve) => {
        const wake = () => {
          if (receivedBytes() < bytes) return;
          waiters.delete(wake);
          resolve();
        };
        waiters.add(wake);
        wake();
      }),
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await closeServer(server);
    },
  };
}

function pgThrough(sidecar: Sidecar, client: PlainCertificate): pg.Client {
  const url = new URL(postgres.databaseUrl('teesql_readwrite'));
  return new pg.Client({
    host: sidecar.host,
    port: sidecar.port,
    user: url.username,
    password: url.password,
    database: postgres.database,
    ssl: { key: client.key, cert: client.cert, rejectUnauthorized: false },
    // pg 8.23 spells it lowercase; TLS from the first byte, as the sidecar expects (docs/protocol.md §5).
    ...{ sslnegotiation: 'direct' },
  });
}

/** Opens a TLS connection and resolves once it is secure or has failed. */
function tlsClient(
  port: number,
  client?: PlainCertificate,
): Promise<{ socket: TLSSocket; secure: boolean; error?: Error }> {
  return new Promise((resolve) => {
    const socket = connectTls({
      host: '127.0.0.1',
      port,
      rejectUnauthorized: false,
      ...(client !== undefined && { key: client.key, cert: client.cert }),
    });
    socket.once('secureConnect', () => resolve({ socket, secure: true }));
    socket.once('error', (error) => resolve({ socket, secure: false, error }));
  });
}

async function closed(socket: Socket): Promise<void> {
  if (!socket.destroyed) await once(socket, 'close');
}

test('an attested client reaches Postgres through the sidecar and every byte is counted', async () => {
  const seen: Uint8Array[] = [];
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: async (der) => {
      seen.push(der);
      await verifyKnownClient(der);
    },
    upstream: { host: postgres.host, port: postgres.port },
  });
  try {
    const client = pgThrough(sidecar, clientCert);
    await client.connect();
    const { rows } = await client.query('SELECT current_user AS who');
    await client.end();
    assert.deepEqual(rows, [{ who: 'teesql_readwrite' }]);
    assert.equal(seen.length, 1);
    assert.ok(Buffer.from(seen[0]!).equals(Buffer.from(clientCert.der)));
    const stats = sidecar.stats;
    assert.equal(stats.accepted, 1);
    assert.equal(stats.established, 1);
    assert.equal(stats.refused, 0);
    assert.ok(stats.bytesToUpstream > 0);
    assert.equal(stats.connections[0]!.bytesToUpstream, stats.bytesToUpstream);
  } finally {
    await sidecar.close();
  }
});

test('a client without a certificate is refused and nothing reaches Postgres', async () => {
  const { upstream, sidecar } = await startDefaultSidecar();
  try {
    const { socket, secure } = await tlsClient(sidecar.port);
    if (secure) socket.write('startup message that must go nowhere');
    await closed(socket);
    assert.equal(sidecar.stats.refused, 1);
    assert.equal(sidecar.stats.connections[0]!.reason, 'no client certificate');
    assert.equal(sidecar.stats.bytesToUpstream, 0);
    assert.equal(upstream.accepted, 0);
  } finally {
    await sidecar.close();
    await upstream.close();
  }
});

test('data sent while verification is pending is dropped when the client is rejected', async () => {
  const upstream = await startCountingUpstream();
  let verificationStarted!: () => void;
  const started = new Promise<void>((resolve) => {
    verificationStarted = resolve;
  });
  let decide!: (accept: boolean) => void;
  const decision = new Promise<boolean>((resolve) => {
    decide = resolve;
  });
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: async () => {
      verificationStarted();
      if (!(await decision)) throw new Error('foreign attestation');
    },
    upstream: { host: '127.0.0.1', port: upstream.port },
  });
  try {
    const { socket, secure } = await tlsClient(sidecar.port, strangerCert);
    assert.ok(secure);
    await started;
    socket.write('early bytes');
    decide(false);
    await closed(socket);
    assert.equal(sidecar.stats.connections[0]!.state, 'refused');
    assert.match(sidecar.stats.connections[0]!.reason ?? '', /foreign attestation/);
    assert.equal(sidecar.stats.bytesToUpstream, 0);
    assert.equal(upstream.accepted, 0);
    assert.equal(upstream.received(), '');
  } finally {
    await sidecar.close();
    await upstream.close();
  }
});

test('data sent while verification is pending is forwarded once the client is accepted', async () => {
  const upstream = await startCountingUpstream();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: () => gate,
    upstream: { host: '127.0.0.1', port: upstream.port },
  });
  try {
    const { socket } = await tlsClient(sidecar.port, clientCert);
    socket.write('early bytes');
    assert.equal(upstream.accepted, 0, 'Postgres is not dialled before verification');
    release();
    await upstream.receivedAtLeast('early bytes'.length);
    assert.equal(upstream.received(), 'early bytes');
    assert.equal(sidecar.stats.connections[0]!.bytesToUpstream, 'early bytes'.length);
    socket.destroy();
  } finally {
    await sidecar.close();
    await upstream.close();
  }
});

test('misbehave presents other credentials, from a given connection on, until reset', async () => {
  const { upstream, sidecar } = await startDefaultSidecar();
  const presented = async (): Promise<string> => {
    const { socket } = await tlsClient(sidecar.port, clientCert);
    const subject = socket.getPeerCertificate().subject.CN;
    socket.destroy();
    return String(subject);
  };
  try {
    assert.equal(await presented(), 'sidecar');
    sidecar.misbehave({ credentials: otherServerCert });
    assert.equal(await presented(), 'impostor');
    sidecar.reset();
    assert.equal(await presented(), 'sidecar');
    sidecar.misbehave({ credentials: otherServerCert, fromConnection: 5 });
    assert.equal(await presented(), 'sidecar', 'connection 4 still gets the old certificate');
    assert.equal(await presented(), 'impostor', 'connection 5 gets the rotated one');
    assert.equal(await presented(), 'impostor');
  } finally {
    await sidecar.close();
    await upstream.close();
  }
});

test('misbehave stalls or closes during the handshake', async () => {
  const { upstream, sidecar } = await startDefaultSidecar();
  try {
    sidecar.misbehave({ closeDuringHandshake: true });
    const cut = await tlsClient(sidecar.port, clientCert);
    assert.equal(cut.secure, false);
    assert.match(String(cut.error?.message), /disconnected|ECONNRESET|socket hang up/);

    sidecar.misbehave({ closeDuringHandshake: false, stallHandshake: true });
    const stalled = connectTls({
      host: '127.0.0.1',
      port: sidecar.port,
      rejectUnauthorized: false,
    });
    stalled.on('error', () => {});
    let secured = false;
    stalled.once('secureConnect', () => {
      secured = true;
    });
    stalled.setTimeout(100);
    await once(stalled, 'timeout');
    assert.equal(secured, false, 'the handshake never completes');
    assert.equal(sidecar.stats.connections.at(-1)!.state, 'stalled');
    stalled.destroy();
    assert.equal(upstream.accepted, 0);
  } finally {
    await sidecar.close();
    await upstream.close();
  }
});

test('misbehave drops every established connection at once', async () => {
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: verifyKnownClient,
    upstream: { host: postgres.host, port: postgres.port },
  });
  try {
    const client = pgThrough(sidecar, clientCert);
    const errors: Error[] = [];
    client.on('error', (error) => errors.push(error));
    await client.connect();
    await client.query('SELECT 1');
    const ended = new Promise((resolve) => client.once('end', resolve));
    sidecar.misbehave({ dropEstablished: true });
    await ended;
    assert.match(String(errors[0]?.message), /terminated unexpectedly/);
    await assert.rejects(client.query('SELECT 1'), /not queryable/);
    assert.equal(sidecar.stats.connections[0]!.state, 'closed');
    assert.match(sidecar.stats.connections[0]!.reason ?? '', /dropped/);
  } finally {
    await sidecar.close();
  }
});

test('a handshake that never starts is dropped after the handshake timeout', async () => {
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: verifyKnownClient,
    upstream: { host: postgres.host, port: postgres.port },
    handshakeTimeout: 50,
  });
  try {
    const silent = connectTcp(sidecar.port, '127.0.0.1');
    silent.on('error', () => {});
    await closed(silent);
    assert.equal(sidecar.stats.connections[0]!.reason, 'TLS handshake timed out');
  } finally {
    await sidecar.close();
  }
});

test('close releases the port and every socket, even a stalled one', async () => {
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: verifyKnownClient,
    upstream: { host: postgres.host, port: postgres.port },
  });
  sidecar.misbehave({ stallHandshake: true });
  const stalled = connectTcp(sidecar.port, '127.0.0.1');
  stalled.on('error', () => {});
  await once(stalled, 'connect');
  await sidecar.close();
  await closed(stalled);
  const refused = connectTcp(sidecar.port, '127.0.0.1');
  const [error] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
  assert.equal(error.code, 'ECONNREFUSED');
  await postgres.stop();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(process.getActiveResourcesInfo(), resourcesBefore);
});

test('a long-running sidecar keeps totals for every connection but records only the recent ones', async () => {
  const upstream = await startCountingUpstream();
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: verifyKnownClient,
    upstream: { host: '127.0.0.1', port: upstream.port },
    finishedRecords: 2,
  });
  try {
    for (let i = 0; i < 12; i++) {
      // A stranger's certificate: refused, and the sidecar closes the socket (after finishing it).
      const socket = connectTls({
        host: '127.0.0.1',
        port: sidecar.port,
        key: strangerCert.key,
        cert: strangerCert.cert,
        rejectUnauthorized: false,
      });
      socket.on('error', () => {});
      await once(socket, 'close');
    }
    const stats = sidecar.stats;
    assert.equal(stats.accepted, 12);
    assert.equal(stats.refused, 12);
    assert.equal(stats.established, 0);
    assert.equal(stats.bytesToUpstream, 0);
    assert.ok(stats.connections.length <= 4, `records kept: ${stats.connections.length}`);
    assert.equal(stats.connections.at(-1)?.id, 12, 'the most recent are kept');
    assert.equal(upstream.accepted, 0);
  } finally {
    await sidecar.close();
    await closeServer(upstream.server);
  }
});
