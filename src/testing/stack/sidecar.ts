import { connect, createServer, type Socket } from 'node:net';
import { createSecureContext, type SecureContext, TLSSocket } from 'node:tls';
import { describeCause } from '../../errors.js';
import { boundPort, closeServer, type HostPort, listen } from './net-utils.js';

/** A server key and certificate chain (PEM, leaf first). */
export interface SidecarCredentials {
  readonly key: string;
  readonly cert: string;
}

/** Options of {@link startSidecar}. */
export interface SidecarOptions {
  /** Called for every connection, so credentials can rotate between connections. */
  readonly serverCredentials: () => SidecarCredentials;
  /**
   * Judges the client certificate (DER) of a completed handshake; reject to
   * refuse the client. Only after it resolves is Postgres dialled.
   */
  readonly verifyClient: (clientCertDer: Uint8Array) => Promise<void>;
  /** Where Postgres listens. */
  readonly upstream: HostPort;
  /** Default 0 (a free port). */
  readonly port?: number;
  /** How many finished connections `stats.connections` keeps at least. Default 1000. */
  readonly finishedRecords?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** A TLS handshake not finished by then is dropped. Default 10 s. */
  readonly handshakeTimeout?: number;
  /** The credentials each {@link SidecarImpostor} presents; without them `misbehave({ impostor })` throws. */
  readonly impostors?: Readonly<Record<SidecarImpostor, SidecarCredentials>>;
}

/**
 * Attackers the issue-9 trust model must stop (docs/protocol.md §2), each
 * presenting a certificate whose quote is genuine under the test root:
 * - `foreign-kernel`: the victim's firmware (same MRTD and RTMR0) booting
 *   the attacker's kernel and initrd (other RTMR1/RTMR2), which writes the
 *   victim's app-id and compose-hash into RTMR3; it cannot get keys from the
 *   victim's KMS, so its chain ends in the attacker's own KMS root.
 * - `foreign-kms`: the victim's exact measurements and app, but a chain from
 *   another KMS root.
 */
export type SidecarImpostor = 'foreign-kernel' | 'foreign-kms';

/**
 * Fault switches for tests, applied to connections accepted after the call
 * (except `dropEstablished`, which acts at once).
 */
export interface SidecarMisbehaviour {
  /** Present these credentials instead of `serverCredentials()` (an unattested, foreign, debug, ... certificate). */
  readonly credentials?: SidecarCredentials;
  /** Present an impostor's certificate (see {@link SidecarImpostor}); `credentials` wins over it. */
  readonly impostor?: SidecarImpostor;
  /** With `credentials` or `impostor`: only from the connection with this 1-based number on (a rotation). */
  readonly fromConnection?: number;
  /** Accept TCP and never answer the ClientHello. */
  readonly stallHandshake?: boolean;
  /** Close the connection as soon as the ClientHello arrives. */
  readonly closeDuringHandshake?: boolean;
  /** Drop every established connection (both sides) now. */
  readonly dropEstablished?: boolean;
}

/** Where a connection is in its life. */
export type SidecarConnectionState =
  | 'handshake'
  | 'stalled'
  | 'verifying'
  | 'connecting'
  | 'established'
  | 'refused'
  | 'closed';

/** Per-connection counters. */
export interface SidecarConnectionStats {
  /** 1-based number in accept order. */
  readonly id: number;
  readonly state: SidecarConnectionState;
  /** Bytes forwarded from the client to Postgres. */
  readonly bytesToUpstream: number;
  readonly bytesToClient: number;
  /** Why the sidecar refused (state `refused`) or dropped this connection, when it did. */
  readonly reason?: string;
}

/** A snapshot of the sidecar's counters. */
export interface SidecarStats {
  /** TCP connections accepted. */
  readonly accepted: number;
  /** Connections refused before piping: no or rejected client certificate, failed or sabotaged handshake. */
  readonly refused: number;
  /** Connections that were piped to Postgres. */
  readonly established: number;
  readonly bytesToUpstream: number;
  /** The live connections and the most recently finished ones (see `finishedRecords`), in accept order. */
  readonly connections: readonly SidecarConnectionStats[];
}

/** A running sidecar. */
export interface Sidecar {
  readonly host: string;
  readonly port: number;
  /** A fresh snapshot on every read. */
  readonly stats: SidecarStats;
  misbehave(misbehaviour: SidecarMisbehaviour): void;
  /** Back to normal behaviour for new connections. */
  reset(): void;
  /**
   * A sidecar restart: stops listening and drops every connection, pending
   * or piped (connects are refused meanwhile), runs `whileDown`, then listens
   * again on the same port. Counters and misbehaviour switches survive.
   */
  restart(whileDown?: () => Promise<void> | void): Promise<void>;
  /** Stops listening and destroys every connection, pending or piped. */
  close(): Promise<void>;
}

interface Connection {
  readonly id: number;
  state: SidecarConnectionState;
  bytesToUpstream: number;
  bytesToClient: number;
  piped: boolean;
  reason?: string;
  readonly sockets: Set<Socket>;
  timer?: NodeJS.Timeout;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_FINISHED_RECORDS = 1000;

/**
 * Starts a teesql-like sidecar (docs/protocol.md §5): TLS from the first byte (no
 * SSLRequest), a client certificate requested and required, `verifyClient`
 * run on it (mutual RA-TLS), and only then a TCP connection to Postgres,
 * piped both ways. Nothing the client sends before that can reach Postgres:
 * the TLS socket is not read until the upstream connection exists.
 */
export async function startSidecar(options: SidecarOptions): Promise<Sidecar> {
  const host = options.host ?? '127.0.0.1';
  const handshakeTimeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const keepFinished = Math.max(1, options.finishedRecords ?? DEFAULT_FINISHED_RECORDS);
  // Live connections, and the last keepFinished finished ones: a
  // long-running `pg-ra-tls dev` must not keep a record per connection forever.
  const live = new Set<Connection>();
  const finished: Connection[] = [];
  const totals = { accepted: 0, refused: 0, established: 0, evictedBytesToUpstream: 0 };
  const contexts = new Map<string, SecureContext>();
  let misbehaviour: SidecarMisbehaviour = {};
  let closed = false;

  const secureContextFor = (credentials: SidecarCredentials): SecureContext => {
    const cacheKey = `${credentials.cert}\n${credentials.key}`;
    let context = contexts.get(cacheKey);
    if (context === undefined) {
      context = createSecureContext({ key: credentials.key, cert: credentials.cert });
      contexts.set(cacheKey, context);
    }
    return context;
  };

  const credentialsFor = (id: number): SidecarCredentials => {
    const { credentials, impostor, fromConnection } = misbehaviour;
    const replacement =
      credentials ?? (impostor === undefined ? undefined : options.impostors?.[impostor]);
    if (replacement !== undefined && (fromConnection === undefined || id >= fromConnection)) {
      return replacement;
    }
    return options.serverCredentials();
  };

  const finish = (connection: Connection, state: 'refused' | 'closed', reason?: string) => {
    if (connection.state === 'refused' || connection.state === 'closed') return;
    connection.state = state;
    if (reason !== undefined) connection.reason = reason;
    clearTimeout(connection.timer);
    for (const socket of connection.sockets) socket.destroy();
    if (state === 'refused') totals.refused++;
    if (live.delete(connection)) {
      finished.push(connection);
      if (finished.length > keepFinished * 2) {
        // Evicted in batches: one splice per keepFinished connections.
        for (const old of finished.splice(0, finished.length - keepFinished)) {
          totals.evictedBytesToUpstream += old.bytesToUpstream;
        }
      }
    }
  };

  const pipeToUpstream = (connection: Connection, client: TLSSocket) => {
    connection.state = 'connecting';
    const upstream = connect({
      port: options.upstream.port,
      host: options.upstream.host,
      noDelay: true,
    });
    connection.sockets.add(upstream);
    upstream.on('error', (error) => {
      if (connection.state === 'connecting') {
        finish(connection, 'refused', `Postgres unreachable: ${describeCause(error)}`);
      } else {
        finish(connection, 'closed');
      }
    });
    upstream.once('connect', () => {
      if (client.destroyed) {
        finish(connection, 'closed');
        return;
      }
      connection.state = 'established';
      connection.piped = true;
      totals.established++;
      client.on('data', (chunk: Buffer) => {
        connection.bytesToUpstream += chunk.byteLength;
        if (!upstream.write(chunk)) client.pause();
      });
      upstream.on('drain', () => client.resume());
      upstream.on('data', (chunk: Buffer) => {
        connection.bytesToClient += chunk.byteLength;
        if (!client.write(chunk)) upstream.pause();
      });
      client.on('drain', () => upstream.resume());
      client.on('end', () => upstream.end());
      upstream.on('end', () => client.end());
      client.on('close', () => finish(connection, 'closed'));
      upstream.on('close', () => finish(connection, 'closed'));
    });
  };

  const onConnection = (socket: Socket) => {
    // A proxy must forward small Postgres messages at once: with Nagle on
    // either leg, each warm connect stalled ~40 ms on a delayed ACK (measured).
    socket.setNoDelay(true);
    const connection: Connection = {
      id: ++totals.accepted,
      state: 'handshake',
      bytesToUpstream: 0,
      bytesToClient: 0,
      piped: false,
      sockets: new Set([socket]),
    };
    live.add(connection);
    socket.on('error', () => finish(connection, 'closed'));
    socket.on('close', () => finish(connection, 'closed'));
    if (closed) {
      socket.destroy();
      return;
    }

    if (misbehaviour.stallHandshake) {
      connection.state = 'stalled';
      // Read and drop: never answered, yet a client that gives up is seen to
      // leave (a paused socket would hold its handle until the sidecar closes).
      socket.on('data', () => {});
      return;
    }
    if (misbehaviour.closeDuringHandshake) {
      socket.once('data', () => finish(connection, 'refused', 'closed during the handshake'));
      return;
    }

    let secureContext: SecureContext;
    try {
      secureContext = secureContextFor(credentialsFor(connection.id));
    } catch (error) {
      finish(connection, 'refused', `unusable server credentials: ${describeCause(error)}`);
      return;
    }
    const client = new TLSSocket(socket, {
      isServer: true,
      secureContext,
      // Mutual RA-TLS: ask for the client certificate, judge it ourselves.
      requestCert: true,
      rejectUnauthorized: false,
    });
    // The TLS socket now owns the TCP handle; destroying the raw socket as
    // well would free it twice (measured: SIGSEGV on Node 20).
    connection.sockets.delete(socket);
    connection.sockets.add(client);
    client.on('error', (error) => {
      // Usually the client gave up on our certificate: not a refusal by the sidecar.
      const reason =
        connection.state === 'handshake'
          ? `TLS handshake failed: ${describeCause(error)}`
          : undefined;
      finish(connection, 'closed', reason);
    });
    client.on('close', () => finish(connection, 'closed'));
    connection.timer = setTimeout(
      () => finish(connection, 'refused', 'TLS handshake timed out'),
      handshakeTimeout,
    );
    client.once('secure', () => {
      clearTimeout(connection.timer);
      const peer = client.getPeerCertificate();
      const der: Buffer | undefined = peer?.raw;
      if (der === undefined || der.byteLength === 0) {
        finish(connection, 'refused', 'no client certificate');
        return;
      }
      connection.state = 'verifying';
      Promise.resolve()
        .then(() => options.verifyClient(new Uint8Array(der)))
        .then(
          () => {
            if (closed || client.destroyed || connection.state !== 'verifying') {
              finish(connection, 'closed');
              return;
            }
            pipeToUpstream(connection, client);
          },
          (error: unknown) => {
            finish(connection, 'refused', `client certificate rejected: ${describeCause(error)}`);
          },
        );
    });
  };

  const server = createServer(onConnection);
  await listen(server, options.port ?? 0, host);
  const port = boundPort(server);

  return {
    host,
    port,
    get stats(): SidecarStats {
      const snapshot = [...finished, ...live].map((connection) =>
        Object.freeze({
          id: connection.id,
          state: connection.state,
          bytesToUpstream: connection.bytesToUpstream,
          bytesToClient: connection.bytesToClient,
          ...(connection.reason !== undefined && { reason: connection.reason }),
        }),
      );
      snapshot.sort((a, b) => a.id - b.id);
      return Object.freeze({
        accepted: totals.accepted,
        refused: totals.refused,
        established: totals.established,
        bytesToUpstream: snapshot.reduce(
          (sum, connection) => sum + connection.bytesToUpstream,
          totals.evictedBytesToUpstream,
        ),
        connections: Object.freeze(snapshot),
      });
    },
    misbehave(next: SidecarMisbehaviour) {
      if (next.impostor !== undefined && options.impostors?.[next.impostor] === undefined) {
        // A test that asks for an attacker must never silently get the genuine server.
        throw new Error(
          `sidecar impostor ${JSON.stringify(next.impostor)} is not configured (expected one of ${Object.keys(options.impostors ?? {}).join(', ') || 'none'})`,
        );
      }
      const { dropEstablished, ...persistent } = next;
      misbehaviour = { ...misbehaviour, ...persistent };
      if (dropEstablished) {
        for (const connection of [...live]) {
          if (connection.state === 'established') {
            finish(connection, 'closed', 'dropped by misbehave({ dropEstablished })');
          }
        }
      }
    },
    reset() {
      misbehaviour = {};
    },
    async restart(whileDown) {
      if (closed) throw new Error('the sidecar is closed');
      const stopped = closeServer(server);
      for (const connection of [...live]) finish(connection, 'closed', 'the sidecar restarted');
      await stopped;
      try {
        await whileDown?.();
      } finally {
        if (!closed) await listen(server, port, host);
      }
    },
    async close() {
      closed = true;
      const stopped = closeServer(server);
      for (const connection of [...live]) finish(connection, 'closed');
      await stopped;
    },
  };
}
