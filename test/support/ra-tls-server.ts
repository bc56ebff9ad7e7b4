/**
 * A bare RA-TLS server on loopback for pg-free connector tests: real TLS, a
 * certificate whose quote comes from the DCAP test authority (docs/protocol.md
 * §8), no Postgres behind it. It counts accepted connections (counted before
 * the server sends its certificate, so a client that has seen the certificate
 * has been counted) and can present another certificate at any time.
 */
import type { AddressInfo, Socket } from 'node:net';
import { createServer, type TLSSocket } from 'node:tls';
import type { SidecarCredentials } from '../../src/testing/stack/sidecar.js';

export interface RaTlsServer {
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections accepted and not closed yet. */
  readonly open: number;
  /** Subject of the client certificate of each completed handshake ('' without one). */
  readonly clientSubjects: readonly string[];
  /** SNI of each completed handshake (false without one), by the client's port: handshakes
   *  of tests running alongside cannot be mixed up with a test's own. */
  readonly servernameByClientPort: ReadonlyMap<number, string | false>;
  /** Presents `credentials` from the next handshake on. */
  present(credentials: SidecarCredentials): void;
  /** Destroys every connection the server holds. */
  hangUpAll(): void;
  close(): Promise<void>;
}

export async function startRaTlsServer(
  credentials: SidecarCredentials,
  options: {
    requestCert?: boolean;
    /** Plays the server's side of each completed handshake (a minimal Postgres, a hang-up). */
    onSecureConnection?: (socket: TLSSocket) => void;
  } = {},
): Promise<RaTlsServer> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer({
    ...credentials,
    ...(options.requestCert === true ? { requestCert: true, rejectUnauthorized: false } : {}),
  });
  server.on('connection', (socket: Socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const clientSubjects: string[] = [];
  const servernameByClientPort = new Map<number, string | false>();
  server.on('secureConnection', (socket: TLSSocket) => {
    socket.on('error', () => {});
    clientSubjects.push(socket.getPeerX509Certificate()?.subject ?? '');
    if (socket.remotePort !== undefined) {
      servernameByClientPort.set(socket.remotePort, socket.servername ?? false);
    }
    options.onSecureConnection?.(socket);
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return connections;
    },
    get open() {
      return sockets.size;
    },
    clientSubjects,
    servernameByClientPort,
    present: (next) => server.setSecureContext(next),
    hangUpAll: () => {
      for (const socket of sockets) socket.destroy();
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
