/**
 * The peers' design, as a baseline: the existing connectors (sqlx-ra-tls,
 * prisma-ra-tls, psycopg-ra-tls) run an in-process loopback forwarder. The
 * driver connects in plaintext to 127.0.0.1:<ephemeral>; for each connection
 * the forwarder dials and attests the sidecar and copies bytes both ways.
 * Here the attestation is pg-ra-tls's own (AttestedConnector.open), so the
 * comparison isolates the extra hop and copies, not the verification.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AttestedConnector, EndpointTarget } from '../../src/connection/attested-connector.js';

/** A running forwarder. */
export interface Forwarder {
  readonly port: number;
  close(): Promise<void>;
}

/** Starts a forwarder on 127.0.0.1:0 that attests every upstream connection with `connector`. */
export async function startForwarder(
  connector: AttestedConnector,
  target: EndpointTarget,
): Promise<Forwarder> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((downstream) => {
    sockets.add(downstream);
    downstream.on('close', () => sockets.delete(downstream));
    downstream.on('error', () => downstream.destroy());
    // Nothing from the driver is read until the upstream is attested.
    downstream.pause();
    connector.open(target).then(
      ({ socket: upstream }) => {
        sockets.add(upstream);
        upstream.on('close', () => {
          sockets.delete(upstream);
          downstream.destroy();
        });
        upstream.on('error', () => upstream.destroy());
        downstream.on('close', () => upstream.destroy());
        downstream.pipe(upstream);
        upstream.pipe(downstream);
        downstream.resume();
      },
      () => downstream.destroy(),
    );
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
