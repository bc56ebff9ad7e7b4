import type { TLSSocket } from 'node:tls';
import { RaTlsError } from '../errors.js';

/**
 * Makes an already-connected, already-verified TLS socket acceptable to
 * node-postgres as its `stream`. pg's Connection calls `stream.connect(port, host)`
 * and writes the startup message only on the stream's next 'connect' event, so
 * `connect` here just announces the existing connection on the next tick. pg
 * then reads and writes the TLS socket itself: no wrapper stream, no extra copy
 * of query traffic. A socket that died while waiting reports CONNECTION_ENDED
 * through pg's own error path instead of hanging.
 */
export function prepareSocketForPg(socket: TLSSocket): TLSSocket {
  const announce = () => {
    process.nextTick(() => {
      if (socket.destroyed) {
        socket.emit(
          'error',
          new RaTlsError(
            'CONNECTION_ENDED',
            'the attested connection closed before node-postgres started its session',
          ),
        );
        socket.emit('close', false);
      } else {
        socket.emit('connect');
      }
    });
    return socket;
  };
  Object.defineProperty(socket, 'connect', {
    value: announce,
    configurable: true,
    writable: true,
    enumerable: false,
  });
  return socket;
}
