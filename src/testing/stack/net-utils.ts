import { createServer, type Server } from 'node:net';

/** A TCP endpoint. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Asks the kernel for a currently free TCP port on `host`. The port is
 * released before this resolves, so a caller that binds later can race
 * another process: callers that can retry on EADDRINUSE should.
 */
export async function findFreePort(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  await listen(server, 0, host);
  const address = server.address();
  await closeServer(server);
  if (address === null || typeof address === 'string') {
    throw new Error(`could not allocate a free TCP port on ${host}`);
  }
  return address.port;
}

/** Binds `server` to `port` on `host` (or to a unix socket path when `host` is undefined). */
export function listen(server: Server, port: number | string, host?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    if (typeof port === 'string') server.listen(port, onListening);
    else server.listen(port, host, onListening);
  });
}

/** The TCP port a listening server is bound to. */
export function boundPort(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') {
    throw new Error('the server is not listening on a TCP port');
  }
  return address.port;
}

/**
 * Stops accepting and resolves once the server has closed. Callers destroy
 * the sockets they track first: `close()` waits for every open connection.
 */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}
