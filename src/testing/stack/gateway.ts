import { connect, createServer, type Socket } from 'node:net';
import { parseClientHello } from './client-hello.js';
import { boundPort, closeServer, type HostPort, listen } from './net-utils.js';

/** Where a routed connection goes (a sidecar). */
export type GatewayTarget = HostPort;

/**
 * How SNI names map to targets: a function of the whole name, or dstack's
 * `<app_id>-<port>s.<base_domain>` scheme with an app-id → target map.
 */
export type GatewayRoutes =
  | ((serverName: string) => GatewayTarget | undefined)
  | {
      readonly baseDomain: string;
      /** Keyed by lowercase app-id (or instance id) hex. */
      readonly apps: Readonly<Record<string, GatewayTarget>>;
    };

/** Options of {@link startGateway}. */
export interface GatewayOptions {
  readonly routes: GatewayRoutes;
  /** How long a connection may take to send its ClientHello. Default 5 s (docs/protocol.md §5). */
  readonly handshakeTimeout?: number;
  /** Default 0 (a free port). */
  readonly port?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
}

/** Why the gateway dropped a connection. */
export type GatewayDropReason =
  /** The first bytes were not a ClientHello (e.g. a Postgres SSLRequest); dropped at the timeout. */
  | 'not-client-hello'
  /** The ClientHello did not complete before the timeout. */
  | 'handshake-timeout'
  /** No complete ClientHello within the first 4096 bytes. */
  | 'client-hello-too-large'
  | 'no-server-name'
  | 'unknown-server-name'
  /** `<app_id>-<port>` without the trailing `s`: dstack would terminate TLS itself. */
  | 'not-passthrough'
  | 'upstream-unreachable';

/** A snapshot of the gateway's counters. */
export interface GatewayStats {
  readonly accepted: number;
  readonly routed: number;
  readonly dropped: number;
  readonly dropReasons: Readonly<Partial<Record<GatewayDropReason, number>>>;
  /** SNI names of routed connections, in order. */
  readonly routedServerNames: readonly string[];
}

/** A running gateway. */
export interface Gateway {
  readonly host: string;
  readonly port: number;
  /** A fresh snapshot on every read. */
  readonly stats: GatewayStats;
  /** Stops listening and destroys every connection and pending timer. */
  close(): Promise<void>;
}

/** The parts of a dstack gateway name `<app_id>-<port>[s].<base_domain>`. */
export interface GatewayServerName {
  readonly appId: string;
  readonly port: number;
  /** Trailing `s`: TLS passthrough (RA-TLS reaches the client intact). */
  readonly passthrough: boolean;
}

/** dstack's gateway peeks at most this much for the ClientHello (docs/protocol.md §5). */
const PEEK_LIMIT_BYTES = 4096;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;
const APP_LABEL = /^([0-9a-f]+)-(\d{1,5})(s?)$/;

/**
 * Splits `<app_id>-<port>[s].<base_domain>`; undefined when `serverName` is
 * not a single label under `baseDomain` of that shape. Case-insensitive.
 */
export function parseGatewayServerName(
  serverName: string,
  baseDomain: string,
): GatewayServerName | undefined {
  const name = serverName.toLowerCase().replace(/\.$/, '');
  const suffix = `.${baseDomain.toLowerCase().replace(/\.$/, '')}`;
  if (!name.endsWith(suffix)) return undefined;
  const match = APP_LABEL.exec(name.slice(0, -suffix.length));
  if (match === null) return undefined;
  const port = Number(match[2]);
  if (port < 1 || port > 65_535) return undefined;
  return Object.freeze({ appId: match[1]!, port, passthrough: match[3] === 's' });
}

/**
 * Starts a TLS-passthrough gateway like dstack's (docs/protocol.md §5): it peeks
 * at up to 4096 bytes for a ClientHello, routes by its SNI, replays the peeked
 * bytes to the target and splices both ways without touching TLS. A client
 * whose first bytes are not a ClientHello (a Postgres SSLRequest) is held until
 * the handshake timeout and then dropped; an unknown name is dropped at once.
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const host = options.host ?? '127.0.0.1';
  const handshakeTimeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const dropReasons: Partial<Record<GatewayDropReason, number>> = {};
  const routedServerNames: string[] = [];
  let accepted = 0;
  let routed = 0;
  let dropped = 0;

  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  };

  const drop = (socket: Socket, reason: GatewayDropReason) => {
    dropped++;
    dropReasons[reason] = (dropReasons[reason] ?? 0) + 1;
    socket.destroy();
  };

  const resolveTarget = (
    serverName: string,
  ): GatewayTarget | Extract<GatewayDropReason, 'unknown-server-name' | 'not-passthrough'> => {
    const { routes } = options;
    if (typeof routes === 'function') {
      try {
        return routes(serverName) ?? 'unknown-server-name';
      } catch {
        return 'unknown-server-name';
      }
    }
    const parsed = parseGatewayServerName(serverName, routes.baseDomain);
    if (parsed === undefined) return 'unknown-server-name';
    if (!parsed.passthrough) return 'not-passthrough';
    return Object.hasOwn(routes.apps, parsed.appId)
      ? routes.apps[parsed.appId]!
      : 'unknown-server-name';
  };

  const splice = (client: Socket, peeked: Buffer, serverName: string, target: GatewayTarget) => {
    const upstream = connect(target.port, target.host);
    track(upstream);
    let connected = false;
    upstream.on('error', () => {
      if (!connected) drop(client, 'upstream-unreachable');
      client.destroy();
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    upstream.once('connect', () => {
      connected = true;
      routed++;
      routedServerNames.push(serverName);
      // Replay exactly what was peeked, then splice the rest untouched.
      upstream.write(peeked);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  };

  const onConnection = (client: Socket) => {
    accepted++;
    track(client);
    client.on('error', () => client.destroy());
    const chunks: Buffer[] = [];
    let peekedBytes = 0;
    let notClientHello = false;
    const timer = setTimeout(() => {
      timers.delete(timer);
      drop(client, notClientHello ? 'not-client-hello' : 'handshake-timeout');
    }, handshakeTimeout);
    timers.add(timer);
    const settle = () => {
      clearTimeout(timer);
      timers.delete(timer);
      client.off('data', onData);
      client.pause();
    };
    client.on('close', () => {
      clearTimeout(timer);
      timers.delete(timer);
    });

    const onData = (chunk: Buffer) => {
      if (notClientHello) return;
      chunks.push(chunk);
      peekedBytes += chunk.byteLength;
      const peeked = Buffer.concat(chunks);
      const result = parseClientHello(peeked.subarray(0, PEEK_LIMIT_BYTES));
      if (result.status === 'invalid') {
        // dstack keeps waiting for a ClientHello that never comes, then drops.
        notClientHello = true;
        return;
      }
      if (result.status === 'incomplete') {
        if (peekedBytes >= PEEK_LIMIT_BYTES) {
          settle();
          drop(client, 'client-hello-too-large');
        }
        return;
      }
      settle();
      if (result.serverName === undefined) {
        drop(client, 'no-server-name');
        return;
      }
      const target = resolveTarget(result.serverName);
      if (typeof target === 'string') {
        drop(client, target);
        return;
      }
      splice(client, peeked, result.serverName, target);
    };
    client.on('data', onData);
  };

  const server = createServer(onConnection);
  await listen(server, options.port ?? 0, host);
  const port = boundPort(server);

  return {
    host,
    port,
    get stats(): GatewayStats {
      return Object.freeze({
        accepted,
        routed,
        dropped,
        dropReasons: Object.freeze({ ...dropReasons }),
        routedServerNames: Object.freeze([...routedServerNames]),
      });
    },
    async close() {
      const stopped = closeServer(server);
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const socket of sockets) socket.destroy();
      await stopped;
    },
  };
}
