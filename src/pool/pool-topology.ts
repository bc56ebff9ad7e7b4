import { recordName } from '../cluster/discovery.js';
import {
  type ClusterOptions,
  type LeaderChangedEvent,
  LeaderFollower,
} from '../cluster/leader-follower.js';
import { type HostList, HostSelector, parseHostList } from '../cluster/multi-host.js';
import {
  type ConnectionSettings,
  type ConnectionSettingsInput,
  resolveConnectionSettings,
} from '../config/connection-settings.js';
import type { AttestedConnector, EndpointTarget } from '../connection/attested-connector.js';
import { isOwnRaTlsError, RaTlsError } from '../errors.js';
import { assertKnownOptions } from '../util/known-options.js';

/** Where a pool's connections go, as its options say. */
export interface PoolTarget {
  /** The settings of every connection; in cluster mode its host is the cluster's domain. */
  readonly settings: ConnectionSettings;
  readonly cluster?: ClusterOptions;
  /** The hosts of a multi-host connection string. */
  readonly hosts?: HostList;
}

/** What the topology tells the pool about a cluster. */
export interface TopologyEvents {
  /** The pool moved to a verified new leader. */
  leaderChanged(event: LeaderChangedEvent): void;
  /** A manifest lookup failed; the current leader stays. */
  discoveryFailed(error: RaTlsError): void;
}

/** The query a multi-host pool runs to learn a session's state. */
export type SessionQuery = Parameters<HostSelector['checkSession']>[1];

const CLUSTER_OPTION_KEYS = [
  'domain',
  'signer',
  'resolver',
  'refreshEvery',
  'lookupTimeout',
  'skew',
] as const satisfies readonly (keyof ClusterOptions)[];

/** `details.reason` of the SERVER_CHANGED that refuses a connection to a replaced leader. */
const LEADER_CHANGED = 'leader-changed';

/**
 * Reads where a pool dials from its options: one server, a teesql cluster
 * (`cluster`), or the hosts of a multi-host connection string. BAD_CONFIG
 * before any I/O when they contradict each other.
 */
export function resolvePoolTarget(
  options: ConnectionSettingsInput & { readonly cluster?: ClusterOptions },
): PoolTarget {
  const cluster = options.cluster;
  if (cluster !== undefined && (cluster === null || typeof cluster !== 'object')) {
    throw new RaTlsError('BAD_CONFIG', 'cluster must be { domain, signer, resolver? }', {
      details: { option: 'cluster' },
    });
  }
  if (cluster !== undefined) {
    assertKnownOptions(cluster, CLUSTER_OPTION_KEYS, 'cluster', 'cluster.');
    recordName(cluster.domain);
  }
  const hosts = parseHostList(options.connectionString);
  if (cluster !== undefined && hosts !== undefined) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'cluster and a multi-host connection string exclude each other: the manifest names the leader',
      { details: { option: 'cluster' } },
    );
  }
  // In cluster mode the manifest says where to dial; the domain only names the pool.
  const settings = resolveConnectionSettings(
    cluster !== undefined
      ? { ...options, config: { ...options.config, host: cluster.domain } }
      : hosts !== undefined
        ? { ...options, connectionString: hosts.connectionString }
        : options,
  );
  return { settings, cluster, hosts };
}

/**
 * Where a pool dials and which failed connection is worth another try: one
 * server; a teesql cluster's current leader ({@link LeaderFollower}, each
 * candidate attested before the pool moves to it); or the hosts of a
 * multi-host connection string ({@link HostSelector}, each host attested on
 * its own). pg-free; decisions are returned, not thrown.
 */
export class PoolTopology {
  readonly #follower: LeaderFollower | undefined;
  readonly #selector: HostSelector | undefined;

  constructor(target: PoolTarget, connector: AttestedConnector, events: TopologyEvents) {
    const { settings, cluster, hosts } = target;
    const transport = {
      connectTimeoutMs: settings.connectTimeoutMs,
      handshakeTimeoutMs: settings.handshakeTimeoutMs,
    };
    this.#selector =
      hosts === undefined ? undefined : new HostSelector(hosts, settings.port, transport);
    this.#follower =
      cluster === undefined
        ? undefined
        : new LeaderFollower(cluster, {
            ...transport,
            // The candidate is attested like any connection (its issuers too),
            // without a byte of SQL, before the pool moves to it.
            verify: async (endpoint, signal) => {
              const seen = await connector.probe(endpoint, signal);
              const verified = await connector.verifyCertificate(
                seen.certificateDer,
                signal,
                seen.issuersDer,
              );
              return verified.report;
            },
            changed: (event) => events.leaderChanged(event),
            failed: (error) => events.discoveryFailed(error),
          });
  }

  /** Several servers, each with its own certificate: nothing can be pinned. */
  get unpinned(): boolean {
    return this.#selector !== undefined;
  }

  /**
   * Where a new connection dials, when not the settings' endpoint: the
   * cluster's current leader or the next host of several.
   */
  get endpoint(): (() => EndpointTarget | Promise<EndpointTarget>) | undefined {
    const follower = this.#follower;
    if (follower !== undefined) return () => follower.target();
    const selector = this.#selector;
    return selector === undefined ? undefined : () => selector.next();
  }

  /** Starts following the leader (cluster mode). */
  start(): void {
    this.#follower?.start();
  }

  close(): void {
    this.#follower?.close();
  }

  /**
   * Cluster mode: why a connection made to `endpoint` is refused, if it is (the
   * leader was replaced while it was being made).
   */
  replacedLeader(endpoint: EndpointTarget | undefined): RaTlsError | undefined {
    const follower = this.#follower;
    if (follower === undefined || follower.isCurrent(endpoint)) return undefined;
    // Either way the checkout tries again at once: on the new leader, or after
    // reading the manifest again.
    const what = follower.expired
      ? `the leader manifest of cluster ${follower.domain} expired`
      : `the leader of cluster ${follower.domain} changed`;
    return new RaTlsError('SERVER_CHANGED', `${what} while this connection was being made`, {
      details: { reason: LEADER_CHANGED },
    });
  }

  /**
   * Cluster mode, once the leader's manifest has expired: a fresh read of it,
   * resolving to undefined when it is believable again, else to why not (then
   * not even pooled connections to that leader may be used). Undefined, with
   * nothing to wait for, while the manifest is unexpired (or in other modes).
   */
  unbelievable(): Promise<{ readonly error: unknown } | undefined> | undefined {
    const follower = this.#follower;
    if (follower === undefined || !follower.expired) return undefined;
    return follower.ensureBelievable().then(
      () => undefined,
      (error: unknown) => ({ error }),
    );
  }

  /**
   * Whether a new connection that failed with `failure` is worth another
   * attempt: the cluster's leader moved (or a re-read of the manifest moves
   * it), or a multi-host string has another host to try.
   */
  async worthAnotherConnect(failure: unknown): Promise<boolean> {
    if (this.#follower !== undefined) {
      if (
        isOwnRaTlsError(failure, 'SERVER_CHANGED') &&
        failure.details['reason'] === LEADER_CHANGED
      ) {
        return true;
      }
      return this.#follower.refresh();
    }
    if (this.#selector !== undefined) {
      return (
        !isOwnRaTlsError(failure, 'NO_HOST_AVAILABLE') && !isOwnRaTlsError(failure, 'POOL_ENDED')
      );
    }
    return false;
  }

  /** A connection went back to the pool with `error`: in cluster mode the leader may have moved. */
  released(error: unknown): void {
    if (this.#follower !== undefined && error instanceof Error && leaderMayHaveMoved(error)) {
      void this.#follower.refresh();
    }
  }

  /** Multi-host: the logged-in session must match target_session_attrs (throws to refuse it). */
  async sessionReady(endpoint: EndpointTarget | undefined, query: SessionQuery): Promise<void> {
    if (this.#selector === undefined) return;
    await this.#selector.checkSession(endpoint, query);
    this.#selector.succeeded(endpoint);
  }

  /** A new connection to `endpoint` failed: a multi-host pool tries another host next. */
  connectFailed(endpoint: EndpointTarget | undefined, error: unknown): void {
    this.#selector?.failed(endpoint, error);
  }
}

/**
 * Whether a connection that went back to the pool with `error` says the
 * cluster's leader may have moved, so the manifest is worth re-reading at once
 * (docs/protocol.md §7): SQLSTATE 25006 (the leader became read-only), a
 * shutdown (57P01-57P03), or a lost connection (any error without a SQLSTATE,
 * pg-ra-tls's own included: its codes are no SQLSTATEs). An ordinary
 * SQL error (42601, 23505, ...) says nothing about the leader.
 */
export function leaderMayHaveMoved(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  if (code === '25006' || code === '57P01' || code === '57P02' || code === '57P03') return true;
  return typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code);
}
