/**
 * prepareSocketForPg (src/connection/socket-hand-off.ts) over a real loopback
 * connection: what node-postgres sees when it takes over an attested socket,
 * alive or already dead.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { prepareSocketForPg } from '../src/connection/socket-hand-off.js';
import { isRaTlsError } from '../src/errors.js';

const accepted: Socket[] = [];
const server = createServer((socket) => accepted.push(socket));
let port: number;

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});
after(async () => {
  for (const socket of accepted) socket.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function connected(): Promise<TLSSocket> {
  const client = connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', resolve));
  return client as TLSSocket;
}

describe('prepareSocketForPg', () => {
  test('a socket whose own close pg missed: CONNECTION_ENDED saying why, then close (no error flag)', async () => {
    const socket = prepareSocketForPg(await connected());
    socket.destroy();
    await new Promise((resolve) => socket.once('close', resolve));
    // pg attaches its listeners only now, then calls connect().
    const events: string[] = [];
    let error: unknown;
    let hadError: unknown;
    socket.on('connect', () => events.push('connect'));
    socket.on('error', (e) => {
      events.push('error');
      error = e;
    });
    socket.once('close', (flag: unknown) => {
      events.push('close');
      hadError = flag;
    });
    assert.equal(socket.connect(5432, '127.0.0.1'), socket);
    // The hand-off answers on the next tick, before any immediate.
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(events, ['error', 'close']);
    assert.equal(hadError, false);
    assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'));
    assert.equal(
      error.message,
      'the attested connection closed before node-postgres started its session',
    );
  });

  test('connect is an own, hidden, replaceable property; preparing twice is harmless', async () => {
    const socket = prepareSocketForPg(await connected());
    try {
      assert.ok(!Object.keys(socket).includes('connect'), 'not enumerable');
      assert.equal(prepareSocketForPg(socket), socket, 'redefinable');
      const announce = socket.connect;
      socket.connect = announce;
      assert.equal(socket.connect, announce, 'writable');
      let connects = 0;
      socket.on('connect', () => connects++);
      assert.equal(socket.connect(5432, '127.0.0.1'), socket);
      assert.equal(connects, 0, 'announced on the next tick, once pg listens');
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(connects, 1);
      assert.ok(delete (socket as { connect?: unknown }).connect, 'configurable');
      assert.equal(socket.connect, Object.getPrototypeOf(socket).connect);
    } finally {
      socket.destroy();
    }
  });
});
