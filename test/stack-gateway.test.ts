import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp, createServer, type Socket } from 'node:net';
import { before, test } from 'node:test';
import { connect as connectTls, createServer as createTlsServer } from 'node:tls';
import pg from 'pg';
import { parseClientHello } from '../src/testing/stack/client-hello.js';
import { parseGatewayServerName, startGateway } from '../src/testing/stack/gateway.js';
import { boundPort, closeServer, listen } from '../src/testing/stack/net-utils.js';
import {
  createPlainCertificate,
  type PlainCertificate,
} from '../src/testing/stack/plain-certificate.js';
import { startPostgres } from '../src/testing/stack/postgres.js';
import { startSidecar } from '../src/testing/stack/sidecar.js';

const resourcesBefore = process.getActiveResourcesInfo();
const BASE = 'dstack-test.example';
const APP_ID = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
const SNI = `${APP_ID}-5433s.${BASE}`;
const SSL_REQUEST = Buffer.from('0000000804d2162f', 'hex');

let serverCert: PlainCertificate;
/** A real ClientHello from node:tls, with SNI = SNI. */
let clientHello: Buffer;
/** A real ClientHello sent to an IP address, so without SNI. */
let clientHelloWithoutSni: Buffer;

/** Captures the first flight a TLS client sends to a server that never answers. */
async function captureClientHello(servername?: string): Promise<Buffer> {
  const server = createServer();
  await listen(server, 0, '127.0.0.1');
  const captured = new Promise<Buffer>((resolve) => {
    server.once('connection', (socket) => {
      socket.once('data', (chunk) => {
        socket.destroy();
        resolve(chunk);
      });
    });
  });
  const client = connectTls({
    host: '127.0.0.1',
    port: boundPort(server),
    ...(servername !== undefined && { servername }),
  });
  client.on('error', () => {});
  const hello = await captured;
  client.destroy();
  await closeServer(server);
  return hello;
}

before(async () => {
  serverCert = await createPlainCertificate({ commonName: 'sidecar' });
  clientHello = await captureClientHello(SNI);
  clientHelloWithoutSni = await captureClientHello();
});

/** A TCP server that records everything and answers nothing. */
async function startRecorder() {
  const chunks: Buffer[] = [];
  const sockets = new Set<Socket>();
  const waiters = new Set<() => void>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      for (const wake of waiters) wake();
    });
  });
  await listen(server, 0, '127.0.0.1');
  const received = () => Buffer.concat(chunks);
  return {
    port: boundPort(server),
    received,
    receivedAtLeast: (bytes: number) =>
      new Promise<void>((resolve) => {
        const wake = () => {
          if (received().length < bytes) return;
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

function connectionOutcome(socket: Socket): Promise<'closed'> {
  socket.on('error', () => {});
  return new Promise((resolve) => socket.once('close', () => resolve('closed')));
}

test('the parser reads the SNI of a real ClientHello, and its absence', () => {
  assert.deepEqual(parseClientHello(clientHello), { status: 'complete', serverName: SNI });
  assert.deepEqual(parseClientHello(clientHelloWithoutSni), {
    status: 'complete',
    serverName: undefined,
  });
});

test('the parser answers incomplete for every prefix and reassembles fragmented records', () => {
  for (let length = 0; length < clientHello.length; length++) {
    assert.equal(
      parseClientHello(clientHello.subarray(0, length)).status,
      'incomplete',
      `prefix ${length}`,
    );
  }
  // The same handshake message split over two records of 40 and the rest.
  const message = clientHello.subarray(5);
  const record = (part: Buffer) =>
    Buffer.concat([Buffer.from([22, 3, 1, part.length >> 8, part.length & 0xff]), part]);
  const fragmented = Buffer.concat([record(message.subarray(0, 40)), record(message.subarray(40))]);
  assert.deepEqual(parseClientHello(fragmented), { status: 'complete', serverName: SNI });
});

test('the parser rejects an SSLRequest, garbage and corrupted lengths without throwing', () => {
  assert.deepEqual(parseClientHello(SSL_REQUEST), {
    status: 'invalid',
    reason: 'not a TLS handshake record',
  });
  assert.equal(parseClientHello(Buffer.from([22, 3, 1, 0, 0])).status, 'invalid');
  assert.equal(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0])).status, 'invalid');
  // A ClientHello whose handshake length claims 3 bytes: fields run past its end.
  const shortMessage = Buffer.from(clientHello);
  shortMessage.writeUIntBE(3, 6, 3);
  assert.deepEqual(parseClientHello(shortMessage), {
    status: 'invalid',
    reason: 'truncated random',
  });
  let seed = 42;
  const random = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed;
  };
  for (let round = 0; round < 2000; round++) {
    const mutated = Buffer.from(clientHello);
    mutated[random() % mutated.length] = random() % 256;
    mutated[5 + (random() % 60)] = random() % 256;
    const result = parseClientHello(mutated);
    assert.ok(['complete', 'incomplete', 'invalid'].includes(result.status));
    const garbage = Buffer.from(Array.from({ length: random() % 300 }, () => random() % 256));
    garbage[0] = 22;
    garbage[1] = 3;
    assert.ok(['complete', 'incomplete', 'invalid'].includes(parseClientHello(garbage).status));
  }
});

test('gateway names follow <app_id>-<port>[s].<base_domain>', () => {
  assert.deepEqual(parseGatewayServerName(SNI, BASE), {
    appId: APP_ID,
    port: 5433,
    passthrough: true,
  });
  assert.equal(parseGatewayServerName(`${APP_ID}-5433.${BASE}`, BASE)?.passthrough, false);
  assert.equal(parseGatewayServerName(`x.${APP_ID}-5433s.${BASE}`, BASE), undefined);
  assert.equal(parseGatewayServerName(`${APP_ID}-5433s.other.example`, BASE), undefined);
});

test('the gateway routes by SNI to the app and TLS passes through untouched', async () => {
  const seenServerNames: string[] = [];
  const target = createTlsServer({ key: serverCert.key, cert: serverCert.cert }, (socket) => {
    seenServerNames.push(String((socket as unknown as { servername: string }).servername));
    socket.pipe(socket);
  });
  await listen(target, 0, '127.0.0.1');
  const gateway = await startGateway({
    routes: {
      baseDomain: BASE,
      apps: { [APP_ID]: { host: '127.0.0.1', port: boundPort(target) } },
    },
  });
  try {
    const client = connectTls({
      host: '127.0.0.1',
      port: gateway.port,
      servername: SNI,
      rejectUnauthorized: false,
    });
    await once(client, 'secureConnect');
    assert.equal(
      client.getPeerCertificate().subject.CN,
      'sidecar',
      'the target certificate, not the gateway',
    );
    client.write('ping');
    const [echo] = (await once(client, 'data')) as [Buffer];
    assert.equal(echo.toString(), 'ping');
    client.destroy();
    assert.deepEqual(seenServerNames, [SNI]);
    assert.deepEqual(gateway.stats.routedServerNames, [SNI]);
    assert.equal(gateway.stats.routed, 1);
    assert.equal(gateway.stats.dropped, 0);
  } finally {
    await gateway.close();
    await closeServer(target);
  }
});

test('the gateway replays the peeked bytes exactly, however they arrived', async () => {
  const recorder = await startRecorder();
  const gateway = await startGateway({
    routes: () => ({ host: '127.0.0.1', port: recorder.port }),
  });
  try {
    const sent = Buffer.concat([clientHello, Buffer.from('after the hello')]);
    const client = connectTcp(gateway.port, '127.0.0.1');
    const outcome = connectionOutcome(client);
    await once(client, 'connect');
    client.write(sent.subarray(0, 3));
    client.write(sent.subarray(3, 100));
    client.write(sent.subarray(100));
    await recorder.receivedAtLeast(sent.length);
    assert.ok(recorder.received().equals(sent));
    client.destroy();
    await outcome;
  } finally {
    await gateway.close();
    await recorder.close();
  }
});

test('a Postgres SSLRequest-first client cannot get through and is dropped at the timeout', async () => {
  const recorder = await startRecorder();
  const gateway = await startGateway({
    routes: () => ({ host: '127.0.0.1', port: recorder.port }),
    handshakeTimeout: 100,
  });
  try {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: gateway.port,
      user: 'teesql_readwrite',
      password: 'x',
      ssl: { rejectUnauthorized: false },
    });
    client.on('error', () => {});
    await assert.rejects(client.connect());
    assert.deepEqual(gateway.stats.dropReasons, { 'not-client-hello': 1 });
    assert.equal(recorder.received().length, 0, 'nothing was forwarded');
  } finally {
    await gateway.close();
    await recorder.close();
  }
});

test('unknown, non-passthrough, missing and oversized names are dropped', async () => {
  const recorder = await startRecorder();
  const gateway = await startGateway({
    routes: { baseDomain: BASE, apps: { [APP_ID]: { host: '127.0.0.1', port: recorder.port } } },
  });
  const attempt = async (servername: string | undefined) => {
    const client = connectTls({
      host: '127.0.0.1',
      port: gateway.port,
      rejectUnauthorized: false,
      ...(servername !== undefined && { servername }),
    });
    let secured = false;
    client.once('secureConnect', () => {
      secured = true;
    });
    await connectionOutcome(client);
    assert.equal(secured, false);
  };
  try {
    await attempt(`${'f'.repeat(40)}-5433s.${BASE}`);
    await attempt(`${APP_ID}-5433.${BASE}`);
    await attempt(`${APP_ID}-5433s.elsewhere.example`);
    await attempt(undefined);
    const oversized = connectTcp(gateway.port, '127.0.0.1');
    const outcome = connectionOutcome(oversized);
    // A record header promising 16 KiB, then 5000 bytes that never complete it.
    oversized.write(
      Buffer.concat([Buffer.from([22, 3, 1, 0x40, 0, 1, 0, 0x3f, 0xfc]), Buffer.alloc(5000)]),
    );
    await outcome;
    assert.deepEqual(gateway.stats.dropReasons, {
      'unknown-server-name': 2,
      'not-passthrough': 1,
      'no-server-name': 1,
      'client-hello-too-large': 1,
    });
    assert.equal(recorder.received().length, 0);
  } finally {
    await gateway.close();
    await recorder.close();
  }
});

test('pg reaches Postgres through gateway and sidecar with TLS from the first byte', async () => {
  const postgres = await startPostgres();
  const clientCert = await createPlainCertificate({ commonName: 'client' });
  const sidecar = await startSidecar({
    serverCredentials: () => serverCert,
    verifyClient: async () => {},
    upstream: { host: postgres.host, port: postgres.port },
  });
  const gateway = await startGateway({
    routes: { baseDomain: BASE, apps: { [APP_ID]: { host: sidecar.host, port: sidecar.port } } },
  });
  try {
    const url = new URL(postgres.databaseUrl('teesql_read'));
    const client = new pg.Client({
      host: '127.0.0.1',
      port: gateway.port,
      user: url.username,
      password: url.password,
      database: postgres.database,
      ssl: {
        servername: SNI,
        key: clientCert.key,
        cert: clientCert.cert,
        rejectUnauthorized: false,
      },
      ...{ sslnegotiation: 'direct' },
    });
    await client.connect();
    const { rows } = await client.query('SELECT current_user AS who');
    await client.end();
    assert.deepEqual(rows, [{ who: 'teesql_read' }]);
    assert.equal(gateway.stats.routed, 1);
    assert.equal(sidecar.stats.established, 1);
  } finally {
    await gateway.close();
    await sidecar.close();
    await postgres.stop();
  }
});

test('nothing is left running once every server has closed', async () => {
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(process.getActiveResourcesInfo(), resourcesBefore);
});
