/**
 * The few Postgres backend messages a test server plays by hand (frontend/backend
 * protocol v3: a type byte, an int32 length, the body), for tests whose edges a
 * real Postgres will not produce on demand, or that need no SQL at all.
 */
import type { TLSSocket } from 'node:tls';

/** One backend message: `type`, then the length (itself included), then `body`. */
export function backendMessage(type: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

export const int32 = (value: number): Buffer => {
  const buffer = Buffer.alloc(4);
  buffer.writeInt32BE(value);
  return buffer;
};

export const backend = {
  authenticationOk: backendMessage('R', int32(0)),
  backendKey: backendMessage('K', Buffer.concat([int32(4242), int32(777)])),
  readyForQuery: backendMessage('Z', Buffer.from('I')),
};

/** Answers the startup message with a logged-in, idle session; every later byte is ignored. */
export function answerStartup(socket: TLSSocket): void {
  socket.once('data', () => {
    socket.write(
      Buffer.concat([backend.authenticationOk, backend.backendKey, backend.readyForQuery]),
    );
  });
}
