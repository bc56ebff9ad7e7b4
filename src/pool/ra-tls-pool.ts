import type pg from 'pg';
import type { AttestationReport } from '../attest/report.js';
import { recordName } from '../cluster/discovery.js';
import {
  type ClusterOptions,
  type LeaderChangedEvent,
  LeaderFollower,
} from '../cluster/leader-follower.js';
import { HostSelector, parseHostList } from '../cluster/multi-host.js';
import {
  type ConnectionSettings,
  type ConnectionSettingsInput,
  resolveConnectionSettings,
} from '../config/connection-settings.js';
import {
  type AttestationOptions,
  AttestedConnector,
  type AttestedSocket,
} from '../connection/attested-connector.js';
import { linkPgBase, pgBase } from '../connection/pg-base.js';
import { type PoolInternals, poolInternals } from '../connection/pg-internals.js';
import { RaTlsClient, type RaTlsClientHooks } from '../connection/ra-tls-client.js';
import { describeCause, isRaTlsError, RaTlsError } from '../errors.js';
import type { Policy } from '../policy/types.js';
import { Scope } from '../util/deadline.js';
import { MAX_TIMER_MS, parseTimeout } from '../util/duration.js';
import { Reattestation, type ReattestOutcome } from './reattestation.js';
import { type ServerChangedEvent, type ServerChangeMode, ServerPin } from './server-pin.js';

export type { ServerChangedEvent, ServerChangeMode } from './server-pin.js';

/** node-postgres pool options pg-ra-tls passes through. */
export type PgPoolOptions = Pick<
  pg.PoolConfig,
  | 'max'
  | 'min'
  | 'idleTimeoutMillis'
  | 'allowExitOnIdle'
  | 'maxUses'
  | 'maxLifetimeSeconds'
  | 'log'
  | 'onConnect'
>;

/** Options of {@link RaTlsPool}. */
export interface RaTlsPoolOptions
  extends ConnectionSettingsInput,
    AttestationOptions,
    PgPoolOptions {
  /**
   * Time allowed for a checkout that has to re-attest: the probe, the
   * verification and, when that fails, the retry on a new connection, all
   * together. Default `"30s"`. (A checkout that opens a new connection is
   * bounded by `connectTimeout` + `handshakeTimeout` + `verifyTimeout`, and by
   * pg's `connectionTimeoutMillis` when set.)
   */
  readonly reattestTimeout?: number | string;
  /**
   * A different server certificate than the pinned one: `'reverify'` (default)
   * verifies it fully, pins it and drains connections to the old one;
   * `'reject'` fails checkouts with SERVER_CHANGED until the pool is recreated.
   */
  readonly onServerChange?: ServerChangeMode;
  /**
   * Connect to a teesql cluster's leader, found in its signed DNS manifest
   * (docs/protocol.md §7), and follow it through failovers; the connection
   * string's host is then not used. See {@link ClusterOptions}.
   */
  readonly cluster?: ClusterOptions;
}

/** Payload of the pool's `discoveryFailed` event (cluster mode): the current leader stays. */
export interface DiscoveryFailedEvent {
  readonly error: RaTlsError;
}

/** Payload of the pool's `attestationFailed` event. */
export interface AttestationFailedEvent {
  readonly error: RaTlsError;
  /** `connect`: a new connection; `reattest`: at checkout; `background`: the idle sweep. */
  readonly phase: 'connect' | 'reattest' | 'background';
}

type PoolCallback = (
  err: Error | undefined,
  client: pg.PoolClient | undefined,
  done: (release?: Error | boolean) => void,
) => void;

type PooledClient = RaTlsClient & pg.PoolClient;

const MIN_SWEEP_INTERVAL = 1000;
const PASSED_THROUGH = [
  'max',
  'min',
  'idleTimeoutMillis',
  'allowExitOnIdle',
  'maxUses',
  'maxLifetimeSeconds',
  'log',
  'onConnect',
  'connectionTimeoutMillis',
] as const;

/**
 * A node-postgres Pool (`instanceof pg.Pool` holds) whose every connection is
 * attested before use and re-attested at checkout once its report is older
 * than `reattestEvery` (the quote re-judged against current collateral and
 * policy, the server's present certificate confirmed by one shared probe
 * handshake per interval). The first verified certificate is pinned.
 *
 * This class only adapts pg-pool: the pin and staleness rule live in
 * {@link ServerPin}, the probe and re-verification in {@link Reattestation}.
 *
 * With `cluster`, where to dial and when to move is decided by a
 * {@link LeaderFollower}; with a multi-host connection string, by a
 * {@link HostSelector} (each host attested on its own, nothing pinned).
 *
 * Events, besides pg-pool's: `attested` (report, client), `reattested`
 * (report, client?), `serverChanged` ({@link ServerChangedEvent}),
 * `attestationFailed` ({@link AttestationFailedEvent}), and in cluster mode
 * `leaderChanged` ({@link LeaderChangedEvent}) and `discoveryFailed`
 * ({@link DiscoveryFailedEvent}).
 */
export class RaTlsPool extends pgBase('Pool') {
  /** The resolved connection settings (password not enumerable). */
  readonly settings: ConnectionSettings;
  /** The connector shared by this pool's clients (verification cache, client identity). */
  readonly connector: AttestedConnector;
  readonly #pin: ServerPin;
  readonly #reattestation: Reattestation;
  readonly #reattestTimeoutMs: number;
  readonly #pg: PoolInternals;
  /** Set with the `cluster` option (src/cluster). */
  readonly #follower: LeaderFollower | undefined;
  /** Set by a multi-host connection string or target_session_attrs (src/cluster). */
  readonly #multiHost: boolean;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping = false;

  constructor(options: RaTlsPoolOptions) {
    linkPgBase(RaTlsPool, 'Pool');
    if (options === undefined || options === null || typeof options !== 'object') {
      throw new RaTlsError('BAD_CONFIG', 'RaTlsPool needs an options object', {
        details: { option: 'options' },
      });
    }
    const mode = options.onServerChange ?? 'reverify';
    if (mode !== 'reverify' && mode !== 'reject') {
      throw new RaTlsError(
        'BAD_CONFIG',
        `onServerChange must be 'reverify' or 'reject', got ${JSON.stringify(mode)}`,
        { details: { option: 'onServerChange' } },
      );
    }
    const reattestTimeoutMs = parseTimeout(options.reattestTimeout ?? '30s', 'reattestTimeout');
    const cluster = options.cluster;
    if (cluster !== undefined && (cluster === null || typeof cluster !== 'object')) {
      throw new RaTlsError('BAD_CONFIG', 'cluster must be { domain, signer, resolver? }', {
        details: { option: 'cluster' },
      });
    }
    if (cluster !== undefined) recordName(cluster.domain);
    const hostList = parseHostList(options.connectionString);
    if (cluster !== undefined && hostList !== undefined) {
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
        : hostList !== undefined
          ? { ...options, connectionString: hostList.connectionString }
          : options,
    );
    const selector =
      hostList === undefined
        ? undefined
        : new HostSelector(hostList, settings.port, {
            connectTimeoutMs: settings.connectTimeoutMs,
            handshakeTimeoutMs: settings.handshakeTimeoutMs,
          });
    const connector = new AttestedConnector(options);
    const follower =
      cluster === undefined
        ? undefined
        : new LeaderFollower(cluster, {
            connectTimeoutMs: settings.connectTimeoutMs,
            handshakeTimeoutMs: settings.handshakeTimeoutMs,
            // The candidate is attested like any connection (its issuers too),
            // without a byte of SQL, before the pool moves to it.
            verify: async (target, signal) => {
              const seen = await connector.probe(target, signal);
              const verified = await connector.verifyCertificate(
                seen.certificateDer,
                signal,
                seen.issuersDer,
              );
              return verified.report;
            },
            changed: (event) => this.#leaderChanged(event),
            failed: (error) =>
              this.emit('discoveryFailed', { error } satisfies DiscoveryFailedEvent),
          });
    const pin = new ServerPin({
      mode,
      description: settings.description,
      reattestEveryMs: connector.reattestEveryMs,
      now: () => connector.now(),
      policyVersion: () => connector.policyVersion,
      // Every host of a multi-host string has its own certificate.
      unpinned: selector !== undefined,
    });
    const hooks: RaTlsClientHooks = {
      guard: () => {
        const refusal = pin.refusal;
        if (refusal !== undefined) throw refusal;
      },
      admit: (report, client) => this.#admit(report, client),
      attested: (client, attested) => this.#attested(client, attested),
      ...(selector === undefined
        ? {}
        : {
            // target_session_attrs is a property of the logged-in session.
            ready: async (client: RaTlsClient) => {
              await selector.checkSession(client.endpoint, (sql) => client.query(sql));
              selector.succeeded(client.endpoint);
            },
            failed: (client: RaTlsClient, error: unknown) =>
              selector.failed(client.endpoint, error),
          }),
    };
    const binding = {
      settings,
      connector,
      hooks,
      ...(follower === undefined ? {} : { endpoint: () => follower.target() }),
      ...(selector === undefined ? {} : { endpoint: () => selector.next() }),
    };
    const Client = class extends RaTlsClient {
      constructor() {
        super({}, binding);
      }
    };
    const poolConfig: pg.PoolConfig = {};
    for (const key of PASSED_THROUGH) {
      const value = (options as pg.PoolConfig)[key];
      if (value !== undefined) (poolConfig as Record<string, unknown>)[key] = value;
    }
    poolConfig.Client = Client as unknown as pg.PoolConfig['Client'];
    super(poolConfig);
    this.#pg = poolInternals(this);
    this.settings = settings;
    this.connector = connector;
    this.#pin = pin;
    this.#reattestTimeoutMs = reattestTimeoutMs;
    this.#reattestation = new Reattestation(connector, pin);
    this.#follower = follower;
    this.#multiHost = selector !== undefined;
    // Never more often than the floor; never past what a Node timer holds
    // (a longer interval would silently become 1 ms).
    const interval = Math.min(
      Math.max(connector.reattestEveryMs, MIN_SWEEP_INTERVAL),
      MAX_TIMER_MS,
    );
    this.#sweepTimer = setInterval(() => this.#sweep(), interval);
    this.#sweepTimer.unref();
    if (follower !== undefined) {
      follower.start();
      // A refused write (25006) or a broken connection: the leader may have moved.
      this.on('release', (error) => {
        if (error instanceof Error && leaderMayHaveMoved(error)) void follower.refresh();
      });
    }
  }

  /** The current report of the pinned server, or undefined before the first connection. */
  get attestation(): AttestationReport | undefined {
    return this.#pin.pinned;
  }

  /**
   * Replaces the policy (validated now; BAD_CONFIG on mistakes). Every pooled
   * connection is re-judged under it at its next checkout.
   */
  updatePolicy(policy: Policy): void {
    this.connector.setPolicy(policy);
  }

  override on(
    event: 'attested',
    listener: (report: AttestationReport, client: RaTlsClient) => void,
  ): this;
  override on(
    event: 'reattested',
    listener: (report: AttestationReport, client: RaTlsClient) => void,
  ): this;
  override on(event: 'serverChanged', listener: (event: ServerChangedEvent) => void): this;
  override on(event: 'attestationFailed', listener: (event: AttestationFailedEvent) => void): this;
  override on(event: 'leaderChanged', listener: (event: LeaderChangedEvent) => void): this;
  override on(event: 'discoveryFailed', listener: (event: DiscoveryFailedEvent) => void): this;
  override on<K extends 'error' | 'release' | 'connect' | 'acquire' | 'remove'>(
    event: K,
    listener: K extends 'error' | 'release'
      ? (err: Error, client: pg.PoolClient) => void
      : (client: pg.PoolClient) => void,
  ): this;
  override on(event: string, listener: (...args: never[]) => void): this {
    return super.on(event as 'error', listener as () => void);
  }

  override connect(): Promise<pg.PoolClient>;
  override connect(callback: PoolCallback): void;
  override connect(callback?: PoolCallback): Promise<pg.PoolClient> | undefined {
    const promise = this.#checkout();
    if (callback === undefined) return promise;
    promise.then(
      (client) => callback(undefined, client, client.release),
      (error: Error) => callback(error, undefined, () => {}),
    );
    return undefined;
  }

  override end(): Promise<void>;
  override end(callback: () => void): void;
  override end(callback?: () => void): Promise<void> | undefined {
    if (this.#sweepTimer !== undefined) clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#follower?.close();
    if (!this.ending) {
      const ended = new RaTlsError('POOL_ENDED', 'the pool was ended during attestation');
      this.#pin.close(ended);
      this.connector.close(ended);
    }
    if (callback === undefined) return super.end();
    super.end(callback);
    return undefined;
  }

  /**
   * One checkout: a pooled client, re-attested when stale. A connection
   * superseded by a newly pinned certificate is closed and another taken; a
   * failed re-attestation is retried on a new connection within the same
   * reattestTimeout budget. In cluster or multi-host mode a failed new
   * connection is retried where it may work (the leader moved, another host),
   * within connectionTimeoutMillis when set.
   */
  async #checkout(): Promise<pg.PoolClient> {
    const attempts = (this.options.max ?? 10) + 1;
    // Created by the first retry or re-attestation this checkout needs: its
    // deadlines (connectionTimeoutMillis for new connections, reattestTimeout
    // once a re-attestation starts) bound every retry that follows.
    let budget: Scope | undefined;
    let reattestBounded = false;
    const started = Date.now();
    let lastFailure: RaTlsError | undefined;
    try {
      for (let attempt = 1; ; attempt++) {
        if (this.ending) {
          throw new RaTlsError('POOL_ENDED', 'the pool has been ended: create a new pool');
        }
        const refusal = this.#pin.refusal;
        if (refusal !== undefined) throw refusal;
        // Only a cluster pool waits here: pg-pool must see the checkout at once
        // (waitingCount), as with a plain pg.Pool.
        if (this.#follower !== undefined) await this.#ensureBelievableLeader(this.#follower);
        const acquired = await this.#acquire(budget, lastFailure);
        if ('error' in acquired) {
          const { error } = acquired;
          if (attempt >= attempts || !(await this.#worthAnotherConnect(error))) {
            throw this.#connectFailure(error);
          }
          budget ??= this.#connectBudget(started);
          if (error instanceof RaTlsError) lastFailure = error;
          continue;
        }
        const client = acquired.client;
        const freshness = this.#pin.freshness(client);
        if (freshness === 'fresh') return client;
        let outcome: ReattestOutcome = { kind: 'superseded' };
        if (freshness !== 'superseded') {
          const scope = reattestBounded && budget !== undefined ? budget : this.#budget(budget);
          budget = scope;
          reattestBounded = true;
          outcome = await this.#reattest(freshness === 'stale', client, [client], scope);
        }
        if (outcome.kind === 'fresh') return client;
        client.release(new Error(`pg-ra-tls: connection ${outcome.kind}`));
        if (outcome.kind === 'superseded') {
          if (attempt < attempts) continue;
          throw new RaTlsError('SERVER_CHANGED', 'the server certificate keeps changing');
        }
        const failure = outcome.error;
        this.#emitFailure(failure, 'reattest');
        if (failure.code === 'SERVER_CHANGED' || failure.code === 'POOL_ENDED') throw failure;
        if (attempt >= attempts) throw failure;
        lastFailure = failure;
        // The connections judged like this one would fail the same way.
        this.#removeIdle((idle) => this.#pin.freshness(idle) !== 'fresh');
      }
    } finally {
      budget?.dispose();
    }
  }

  /**
   * A client from pg-pool, or why none could be connected. Within a budget
   * the wait is bounded by what is left of it (an exhausted budget throws);
   * a connection that arrives too late goes back to the pool unused.
   */
  async #acquire(
    budget: Scope | undefined,
    lastFailure: RaTlsError | undefined,
  ): Promise<{ readonly client: PooledClient } | { readonly error: unknown }> {
    if (budget?.signal.aborted) throw lastFailure ?? budget.signal.reason;
    const pending = super.connect() as Promise<PooledClient>;
    try {
      return { client: budget === undefined ? await pending : await budget.race(pending) };
    } catch (error) {
      if (budget?.signal.aborted) {
        pending.then(
          (late) => late.release(),
          () => {},
        );
        throw budget.signal.reason;
      }
      return { error };
    }
  }

  /**
   * Whether a new connection that failed with `failure` is worth another
   * attempt: the cluster's leader moved (or a re-read of the manifest moves
   * it), or a multi-host string has another host to try.
   */
  async #worthAnotherConnect(failure: unknown): Promise<boolean> {
    if (this.#follower !== undefined) {
      if (isRaTlsError(failure, 'SERVER_CHANGED') && failure.details['reason'] === LEADER_CHANGED) {
        return true;
      }
      return this.#follower.refresh();
    }
    if (this.#multiHost) {
      return !isRaTlsError(failure, 'NO_HOST_AVAILABLE') && !isRaTlsError(failure, 'POOL_ENDED');
    }
    return false;
  }

  /** Retries of new connections stay within connectionTimeoutMillis, when set. */
  #connectBudget(started: number): Scope {
    const scope = new Scope();
    const limit = this.options.connectionTimeoutMillis;
    if (limit === undefined || limit <= 0) return scope;
    return scope.deadline(
      Math.max(0, limit - (Date.now() - started)),
      () =>
        new RaTlsError(
          'CONNECT_TIMEOUT',
          `no attested connection to ${this.settings.description} within connectionTimeoutMillis ` +
            `(${limit} ms)`,
        ),
    );
  }

  /**
   * Cluster mode: a leader whose manifest expired is not used, even through
   * pooled connections, until a fresh manifest is read.
   */
  async #ensureBelievableLeader(follower: LeaderFollower): Promise<void> {
    try {
      await follower.ensureBelievable();
    } catch (error) {
      this.#removeIdle(() => true);
      throw error;
    }
  }

  /** A re-attestation budget: reattestTimeout, added to `scope` when given. */
  #budget(scope: Scope = new Scope()): Scope {
    return scope.deadline(
      this.#reattestTimeoutMs,
      () =>
        new RaTlsError(
          'REATTEST_FAILED',
          `re-attesting ${this.settings.description} took longer than ` +
            `${this.#reattestTimeoutMs} ms (reattestTimeout)`,
        ),
    );
  }

  /** Re-attests `clients` (all attested by `client`'s certificate) and applies the outcome. */
  async #reattest(
    probe: boolean,
    client: RaTlsClient,
    clients: readonly RaTlsClient[],
    budget: Scope,
  ): Promise<ReattestOutcome> {
    const report = client.attestation;
    const der = client.serverCertificate;
    if (report === undefined || der === undefined) {
      const error = new RaTlsError('REATTEST_FAILED', 'a pooled connection has no attestation');
      return { kind: 'failed', error };
    }
    const target = client.endpoint ?? this.settings.endpoint;
    const outcome = await this.#reattestation.run(
      target,
      probe,
      der,
      client.serverIssuers,
      report,
      budget,
    );
    if (outcome.kind !== 'fresh') {
      if (outcome.change !== undefined) this.#serverChanged(outcome.change);
      return outcome;
    }
    for (const each of clients) {
      each.updateAttestation(outcome.report);
      this.#pin.stamp(each, outcome.policyVersion);
    }
    for (const each of clients) this.emit('reattested', outcome.report, each);
    return outcome;
  }

  /**
   * A new connection's verified report: pin the first, judge any other
   * certificate. In cluster mode a connection to a leader that was replaced
   * while it was being made is refused first.
   */
  #admit(report: AttestationReport, client: RaTlsClient): void {
    const follower = this.#follower;
    if (follower !== undefined && !follower.isCurrent(client.endpoint)) {
      throw new RaTlsError(
        'SERVER_CHANGED',
        `the leader of cluster ${follower.domain} changed while this connection was being made`,
        { details: { reason: LEADER_CHANGED } },
      );
    }
    const result = this.#pin.admit(report);
    if (result.change !== undefined) this.#serverChanged(result.change);
    if (!result.ok) throw result.error;
  }

  #attested(client: RaTlsClient, attested: AttestedSocket): void {
    // The version the verdict was reached under, not the current one: a
    // verification that straddled updatePolicy is re-judged at checkout.
    this.#pin.stamp(client, attested.policyVersion);
    this.emit('attested', attested.report, client);
  }

  /** Emits the one event of a server change and drains the connections it made obsolete. */
  #serverChanged(change: ServerChangedEvent): void {
    if (change.mode === 'reverify') this.#reattestation.resetProbe();
    this.emit('serverChanged', change);
    const old = change.previous.fingerprint;
    this.#removeIdle(
      (client) => change.mode === 'reject' || client.attestation?.fingerprint === old,
    );
  }

  /**
   * The cluster moved to a verified new leader: pin it and drain the idle
   * connections to the old one (busy ones are superseded at their next checkout).
   */
  #leaderChanged(event: LeaderChangedEvent): void {
    this.#pin.follow(event.report);
    this.#reattestation.resetProbe();
    this.#removeIdle((client) => client.attestation?.fingerprint !== event.report.fingerprint);
    this.emit('leaderChanged', event);
  }

  /** Closes idle connections matching `predicate` (only ones idle right now). */
  #removeIdle(predicate: (client: RaTlsClient) => boolean): void {
    for (const client of this.#pg.idleClients()) {
      if (predicate(client as unknown as RaTlsClient)) this.#pg.removeIdle(client);
    }
  }

  /**
   * Background upkeep (unref'd interval): idle connections whose report went
   * stale are re-attested together (one probe, one verification), or closed
   * when that fails.
   */
  #sweep(): void {
    const pinned = this.#pin.pinned;
    if (this.#sweeping || this.ending || this.#pin.refusal !== undefined || pinned === undefined) {
      return;
    }
    const stale = this.#pg
      .idleClients()
      .map((client) => client as unknown as RaTlsClient)
      .filter((client) => this.#pin.freshness(client) !== 'fresh');
    if (stale.length === 0) return;
    const current = stale.filter(
      (client) => client.attestation?.fingerprint === pinned.fingerprint,
    );
    this.#removeIdle((client) => stale.includes(client) && !current.includes(client));
    const first = current[0];
    if (first === undefined) return;
    this.#sweeping = true;
    const budget = this.#budget();
    this.#reattest(true, first, current, budget)
      .then((outcome) => {
        if (outcome.kind === 'fresh') return;
        if (outcome.kind === 'failed') this.#emitFailure(outcome.error, 'background');
        this.#removeIdle((client) => current.includes(client));
      })
      .finally(() => {
        budget.dispose();
        this.#sweeping = false;
      });
  }

  #connectFailure(error: unknown): Error {
    if (error instanceof RaTlsError) {
      this.#emitFailure(error, 'connect');
      return error;
    }
    // pg-pool wraps a connectionTimeoutMillis expiry; keep our typed cause visible.
    const cause = error instanceof Error ? error.cause : undefined;
    if (cause instanceof RaTlsError) {
      const failure = new RaTlsError(
        'CONNECT_TIMEOUT',
        `no attested connection to ${this.settings.description} within connectionTimeoutMillis ` +
          `(${this.options.connectionTimeoutMillis} ms)`,
        { cause: error },
      );
      this.#emitFailure(failure, 'connect');
      return failure;
    }
    return error instanceof Error ? error : new Error(describeCause(error));
  }

  #emitFailure(error: RaTlsError, phase: AttestationFailedEvent['phase']): void {
    this.emit('attestationFailed', { error, phase } satisfies AttestationFailedEvent);
  }
}

/** `details.reason` of the SERVER_CHANGED that refuses a connection to a replaced leader. */
const LEADER_CHANGED = 'leader-changed';

/** SQLSTATE 25006 (read-only transaction) or a lost connection: worth re-reading the manifest. */
function leaderMayHaveMoved(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  if (code === '25006' || code === '57P01' || code === '57P02' || code === '57P03') return true;
  if (error instanceof RaTlsError) return true;
  return typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code);
}

/** Creates a {@link RaTlsPool}. Configuration errors throw here, before any network I/O. */
export function createPool(options: RaTlsPoolOptions): RaTlsPool {
  return new RaTlsPool(options);
}
