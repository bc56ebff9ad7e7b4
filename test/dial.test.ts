import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { dialTls, secureContextFor } from '../src/dial/dial-tls.js';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { createRaTlsCertificate } from '../src/testing/ra-tls-certificate.js';

const serverCert = createRaTlsCertificate({ subject: 'CN=dial test server' });
const clientCert = createRaTlsCertificate({ subject: 'CN=dial test client' });
const clientCertificate = { key: clientCert.privateKeyPem, cert: clientCert.certificatePem };
const timeouts = { connectTimeoutMs: 2000, handshakeTimeoutMs: 2000 };

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

/** Closes a server and every socket it accepted. */
function closer(server: Server, sockets: Set<Socket>): () => Promise<void> {
  return async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

function track(server: Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  return sockets;
}

describe('dialTls against a TLS server that asks for a client certificate', () => {
  let port = 0;
  let close: () => Promise<void>;
  const seen: { clientCertDer?: Buffer; servername?: string | false | null }[] = [];

  before(async () => {
    const server = createTlsServer(
      {
        key: serverCert.privateKeyPem,
        cert: serverCert.certificatePem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (socket: TLSSocket) => {
        seen.push({
          clientCertDer: socket.getPeerCertificate().raw,
          servername: socket.servername,
        });
        socket.end();
      },
    );
    const sockets = track(server);
    port = await listen(server);
    close = closer(server, sockets);
  });
  after(() => close());

  test('captures the server leaf DER and presents the client certificate with the SNI', async () => {
    const { socket, peerCertificateDer } = await dialTls({
      host: '127.0.0.1',
      port,
      servername: 'app-5433s.gateway.example',
      clientCertificate,
      ...timeouts,
    });
    assert.deepEqual(peerCertificateDer, serverCert.certificateDer);
    await waitFor(() => seen.length === 1);
    socket.destroy();
    assert.equal(seen[0]?.servername, 'app-5433s.gateway.example');
    assert.ok(
      new X509Certificate(seen[0]!.clientCertDer!).raw.equals(
        Buffer.from(clientCert.certificateDer),
      ),
    );
  });
});

describe('dialTls shares one TLS context per client credential', () => {
  let port = 0;
  let close: () => Promise<void>;
  const presented: (Buffer | undefined)[] = [];

  before(async () => {
    const server = createTlsServer(
      {
        key: serverCert.privateKeyPem,
        cert: serverCert.certificatePem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (socket: TLSSocket) => {
        presented.push(socket.getPeerCertificate().raw);
        socket.end();
      },
    );
    const sockets = track(server);
    port = await listen(server);
    close = closer(server, sockets);
  });
  after(() => close());

  test('the same credential object always gets the same context; a rotated one gets a new one', () => {
    const first = secureContextFor(clientCertificate);
    assert.equal(secureContextFor(clientCertificate), first);
    const rotated = { key: clientCertificate.key, cert: clientCertificate.cert };
    assert.notEqual(secureContextFor(rotated), first);
    assert.equal(secureContextFor(undefined), secureContextFor(undefined));
    assert.notEqual(secureContextFor(undefined), first);
  });

  test('every dial uses the shared context, presents the certificate and gets a full handshake', async () => {
    const other = createRaTlsCertificate({ subject: 'CN=dial rotated client' });
    const rotated = { key: other.privateKeyPem, cert: other.certificatePem };
    presented.length = 0;
    for (const [index, credential] of [clientCertificate, clientCertificate, rotated].entries()) {
      const { socket, peerCertificateDer } = await dialTls({
        host: '127.0.0.1',
        port,
        clientCertificate: credential,
        ...timeouts,
      });
      // Node keeps the options a TLSSocket was built with in _tlsOptions.
      const context = (socket as unknown as { _tlsOptions?: { secureContext?: unknown } })
        ._tlsOptions?.secureContext;
      assert.equal(context, secureContextFor(credential));
      // Shared context, no session resumption: the server's certificate is sent every time.
      assert.equal(socket.isSessionReused(), false);
      assert.deepEqual(peerCertificateDer, serverCert.certificateDer);
      // TLS 1.3: the server reads the client certificate after the client is done.
      await waitFor(() => presented.length === index + 1);
      socket.destroy();
    }
    assert.deepEqual(presented[0], Buffer.from(clientCert.certificateDer));
    assert.deepEqual(presented[1], Buffer.from(clientCert.certificateDer));
    assert.deepEqual(presented[2], Buffer.from(other.certificateDer));
  });

  test('an unloadable key is CLIENT_CERT_UNAVAILABLE before any connect, without the key in the message', async () => {
    const bad = {
      key: '-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----',
      cert: clientCertificate.cert,
    };
    await assert.rejects(
      dialTls({ host: '127.0.0.1', port, clientCertificate: bad, ...timeouts }),
      (error: unknown) =>
        isRaTlsError(error, 'CLIENT_CERT_UNAVAILABLE') &&
        !error.message.includes('c2VjcmV0LWtleQ') &&
        !JSON.stringify(error.details ?? {}).includes('c2VjcmV0LWtleQ'),
    );
  });
});

describe('dialTls speaks TLS from the first byte', () => {
  test('the first bytes on the wire are a TLS ClientHello carrying the SNI, never an SSLRequest', async () => {
    let first: Buffer | undefined;
    const server = createNetServer((socket) => {
      socket.once('data', (chunk) => {
        first = chunk;
        socket.destroy();
      });
    });
    const sockets = track(server);
    const port = await listen(server);
    try {
      await assert.rejects(
        dialTls({
          host: '127.0.0.1',
          port,
          servername: 'db.example',
          clientCertificate,
          ...timeouts,
        }),
        (error: unknown) => isRaTlsError(error, 'HANDSHAKE_FAILED'),
      );
      assert.ok(first !== undefined);
      assert.equal(first[0], 0x16, 'TLS handshake record');
      assert.equal(first[5], 0x01, 'ClientHello');
      assert.ok(first.includes(Buffer.from('db.example')), 'SNI present');
      assert.ok(!first.subarray(0, 8).equals(Buffer.from('0000000804d2162f', 'hex')));
    } finally {
      await closer(server, sockets)();
    }
  });
});

describe('dialTls failures are typed', () => {
  test('a closed port is CONNECT_FAILED', async () => {
    const server = createNetServer();
    const port = await listen(server);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await assert.rejects(
      dialTls({ host: '127.0.0.1', port, ...timeouts }),
      (error: unknown) =>
        isRaTlsError(error, 'CONNECT_FAILED') && error.message.includes(`${port}`),
    );
  });

  test('a server that accepts TCP and never answers is HANDSHAKE_TIMEOUT, and the socket is gone', async () => {
    let closedByClient = false;
    const server = createNetServer((socket) => {
      socket.resume();
      socket.on('close', () => {
        closedByClient = true;
      });
    });
    const sockets = track(server);
    const port = await listen(server);
    try {
      await assert.rejects(
        dialTls({ host: '127.0.0.1', port, connectTimeoutMs: 2000, handshakeTimeoutMs: 150 }),
        (error: unknown) => isRaTlsError(error, 'HANDSHAKE_TIMEOUT'),
      );
      await waitFor(() => closedByClient);
    } finally {
      await closer(server, sockets)();
    }
  });

  test('a server that answers garbage is HANDSHAKE_FAILED', async () => {
    const server = createNetServer((socket) => {
      socket.once('data', () => socket.end(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')));
    });
    const sockets = track(server);
    const port = await listen(server);
    try {
      await assert.rejects(dialTls({ host: '127.0.0.1', port, ...timeouts }), (error: unknown) =>
        isRaTlsError(error, 'HANDSHAKE_FAILED'),
      );
    } finally {
      await closer(server, sockets)();
    }
  });

  test('an abort cancels the dial with the abort reason', async () => {
    const server = createNetServer(() => {});
    const sockets = track(server);
    const port = await listen(server);
    const controller = new AbortController();
    try {
      const dialing = dialTls({ host: '127.0.0.1', port, signal: controller.signal, ...timeouts });
      setTimeout(
        () => controller.abort(new RaTlsError('CONNECTION_ENDED', 'cancelled by the test')),
        20,
      );
      await assert.rejects(
        dialing,
        (error: unknown) =>
          isRaTlsError(error, 'CONNECTION_ENDED') && /cancelled by the test/.test(error.message),
      );
      const plain = new AbortController();
      plain.abort();
      await assert.rejects(
        dialTls({ host: '127.0.0.1', port, signal: plain.signal, ...timeouts }),
        (error: unknown) => isRaTlsError(error, 'CONNECTION_ENDED'),
      );
    } finally {
      await closer(server, sockets)();
    }
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.ok(condition(), 'condition not reached');
}
