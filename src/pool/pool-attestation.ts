import type { AttestationReport } from '../attest/report.js';
import type { ClusterOptions, LeaderChangedEvent } from '../cluster/leader-follower.js';
import type { ConnectionSettings, ConnectionSettingsInput } from '../config/connection-settings.js';
import {
  type AttestationOptions,
  AttestedConnector,
  type AttestedSocket,
  type EndpointTarget,
} from '../connection/attested-connector.js';
import { describeCause, RaTlsError } from '../errors.js';
import { Scope } from '../util/deadline.js';
import { MAX_TIMER_MS, parseTimeout } from '../util/duration.js';
import { PoolTopology, resolvePoolTarget, type SessionQuery } from './pool-topology.js';
import { Reattestation, type ReattestOutcome } from './reattestation.js';
import {
  type PinnedConnection,
  type ServerChangedEvent,
  type ServerChangeMode,
  type ServerPin,
  serverChangeMode,
  serverPinFor,
} from './server-pin.js';

/** Options of a pool's attestation: where to connect, how to attest, and the pool's own rules. */
export interface PoolAttestationOptions extends ConnectionSettingsInput, AttestationOptions {
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

/** A pooled connection as the pool's attestation sees it (RaTlsClient is one). */
export interface PooledConnection extends PinnedConnection {
  /** The endpoint it dialled. */
  readonly endpoint: EndpointTarget | undefined;
  /** DER of the certificate its socket was verified against, and the issuers sent with it. */
  readonly serverCertificate: Uint8Array | undefined;
  readonly serverIssuers: readonly Uint8Array[];
  /** Records a newer report of the same certificate. */
  updateAttestation(report: AttestationReport): void;
}

/** The events a pool emits about attestation, with their arguments. */
export interface PoolAttestationEvents<C> {
  attested: [report: AttestationReport, connection: C];
  reattested: [report: AttestationReport, connection: C];
  serverChanged: [event: ServerChangedEvent];
  attestationFailed: [event: AttestationFailedEvent];
  leaderChanged: [event: LeaderChangedEvent];
  discoveryFailed: [event: DiscoveryFailedEvent];
}

/**
 * What the pool library underneath (pg-pool) provides: the only access to
 * pooled connections. Read lazily: the pool exists after its attestation.
 */
export interface ConnectionPool<C extends PooledConnection> {
  /** A connection from the pool: an idle one or a new (attested) one. */
  acquire(): Promise<C>;
  /** Hands `connection` back; with `error` it is closed instead of kept. */
  release(connection: C, error?: Error): void;
  /** The connections idle right now. */
  idle(): readonly C[];
  /** Closes an idle connection and frees its slot for a waiting checkout. */
  removeIdle(connection: C): void;
  /** True once the pool was ended. */
  ending(): boolean;
  /** The pool's size limit and its wait limit for a connection (ms, if set). */
  limits(): { readonly max: number; readonly connectionTimeoutMillis: number | undefined };
  emit<K extends keyof PoolAttestationEvents<C>>(
    event: K,
    ...args: PoolAttestationEvents<C>[K]
  ): void;
}

/** What one attempt of a checkout came to. */
type Attempt<C> = { readonly client: C } | { readonly error: unknown } | { readonly retry: true };

/** The state of one checkout across its attempts. */
interface Checkout {
  attempt: number;
  readonly started: number;
  /**
   * Created by the first wait a checkout has beyond pg-pool's own (a cluster
   * pool's manifest check, a failed connection's search for another host or
   * leader, a re-attestation): its deadlines (connectionTimeoutMillis from
   * the checkout's start, reattestTimeout once a re-attestation starts; a
   * later deadline never extends an earlier one) bound everything that follows.
   */
  budget: Scope | undefined;
}

const MIN_SWEEP_INTERVAL = 1000;

/**
 * Everything a pool does about attestation, without pg: the pin of the
 * server's certificate and the staleness rule ({@link ServerPin}), the
 * re-attestation at checkout and in a background sweep ({@link Reattestation}),
 * one event per server change, and the checkout's retries where the
 * {@link PoolTopology} (one server, a cluster's leader, several hosts) says
 * another connection may work. Decisions are returned as results; the pool
 * adapter only maps them to pg.
 */
export class PoolAttestation<C extends PooledConnection> {
  readonly settings: ConnectionSettings;
  readonly connector: AttestedConnector;
  readonly #pool: ConnectionPool<C>;
  readonly #pin: ServerPin;
  readonly #reattestation: Reattestation;
  readonly #reattestTimeoutMs: number;
  readonly #topology: PoolTopology;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping = false;

  /** Validates `options` (BAD_CONFIG before any I/O); nothing runs until {@link start}. */
  constructor(options: PoolAttestationOptions, pool: ConnectionPool<C>) {
    if (options === null || typeof options !== 'object') {
      throw new RaTlsError('BAD_CONFIG', 'RaTlsPool needs an options object', {
        details: { option: 'options' },
      });
    }
    const mode = serverChangeMode(options.onServerChange);
    this.#reattestTimeoutMs = parseTimeout(options.reattestTimeout ?? '30s', 'reattestTimeout');
    const target = resolvePoolTarget(options);
    const connector = new AttestedConnector(options);
    this.settings = target.settings;
    this.connector = connector;
    this.#pool = pool;
    this.#topology = new PoolTopology(target, connector, {
      leaderChanged: (event) => this.#leaderChanged(event),
      discoveryFailed: (error) => pool.emit('discoveryFailed', { error }),
    });
    this.#pin = serverPinFor(connector, {
      mode,
      description: target.settings.description,
      unpinned: this.#topology.unpinned,
    });
    this.#reattestation = new Reattestation(connector, this.#pin);
  }

  /** The current report of the pinned server, if any. */
  get pinned(): AttestationReport | undefined {
    return this.#pin.pinned;
  }

  /** Where a new connection dials, when not `settings.endpoint` (see PoolTopology). */
  get endpoint(): (() => EndpointTarget | Promise<EndpointTarget>) | undefined {
    return this.#topology.endpoint;
  }

  /**
   * Starts the background sweep, in cluster mode following the leader, and
   * fetching the client certificate the first connection will present.
   */
  start(): void {
    // Never more often than the floor; never past what a Node timer holds
    // (a longer interval would silently become 1 ms).
    const interval = Math.min(
      Math.max(this.connector.reattestEveryMs, MIN_SWEEP_INTERVAL),
      MAX_TIMER_MS,
    );
    this.#sweepTimer = setInterval(() => this.#sweep(), interval);
    this.#sweepTimer.unref();
    this.#topology.start();
    this.connector.prefetchClientCertificate();
  }

  /** Stops the sweep and the topology, and refuses what is in flight (the first reason stays). */
  close(): void {
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#topology.close();
    const ended = new RaTlsError('POOL_ENDED', 'the pool was ended during attestation');
    this.#pin.close(ended);
    this.connector.close(ended);
  }

  /** Why no connection may be dialled now (the pool ended, the server was refused), if so. */
  refusal(): RaTlsError | undefined {
    return this.#pin.refusal;
  }

  /**
   * Judges a new connection's verified report before pg sees its socket: the
   * first is pinned, any other certificate handled per the mode. A connection
   * to a cluster leader replaced while it was being made is refused.
   */
  admit(report: AttestationReport, connection: PooledConnection): RaTlsError | undefined {
    const replaced = this.#topology.replacedLeader(connection.endpoint);
    if (replaced !== undefined) return replaced;
    const result = this.#pin.admit(report);
    if (result.change !== undefined) this.#serverChanged(result.change);
    return result.ok ? undefined : result.error;
  }

  /** A new connection is attested (before its Postgres startup). */
  attested(connection: C, attested: AttestedSocket): void {
    // The version the verdict was reached under, not the current one: a
    // verification that straddled updatePolicy is re-judged at checkout.
    this.#pin.stamp(connection, attested.policyVersion);
    this.#pool.emit('attested', attested.report, connection);
  }

  /** Multi-host: the logged-in session must match target_session_attrs (throws to refuse it). */
  sessionReady(connection: PooledConnection, query: SessionQuery): Promise<void> {
    return this.#topology.sessionReady(connection.endpoint, query);
  }

  /** A new connection failed: a multi-host pool tries another host next. */
  connectFailed(connection: PooledConnection, error: unknown): void {
    this.#topology.connectFailed(connection.endpoint, error);
  }

  /** A connection went back to the pool with `error`: in cluster mode the leader may have moved. */
  released(error: unknown): void {
    this.#topology.released(error);
  }

  /**
   * One checkout: a pooled connection, re-attested when stale. A connection
   * superseded by a newly pinned certificate is closed and another taken; a
   * failed re-attestation is retried on a new connection within the same
   * reattestTimeout budget. In cluster or multi-host mode a failed new
   * connection is retried where it may work (the leader moved, another host),
   * within connectionTimeoutMillis when set.
   */
  async checkout(): Promise<C> {
    const checkout: Checkout = {
      attempt: 0,
      started: Date.now(),
      budget: undefined,
    };
    try {
      for (;;) {
        const attempt = await this.#attempt(checkout);
        if ('client' in attempt) return attempt.client;
        if ('error' in attempt) throw attempt.error;
      }
    } finally {
      checkout.budget?.dispose();
    }
  }

  async #attempt(checkout: Checkout): Promise<Attempt<C>> {
    checkout.attempt++;
    const lastAttempt = checkout.attempt >= this.#pool.limits().max + 1;
    if (this.#pool.ending()) {
      return { error: new RaTlsError('POOL_ENDED', 'the pool has been ended: create a new pool') };
    }
    const refusal = this.#pin.refusal;
    if (refusal !== undefined) return { error: refusal };
    // Only a cluster pool whose leader manifest expired waits here (for it to
    // be read again, within connectionTimeoutMillis): pg-pool must see the
    // checkout at once (waitingCount), as with a plain pg.Pool.
    const manifestRead = this.#topology.unbelievable();
    if (manifestRead !== undefined) {
      const budget = this.#budgetOf(checkout);
      const unbelievable = await budget
        .race(manifestRead)
        .catch(() => ({ error: budget.signal.reason }));
      if (unbelievable !== undefined) {
        this.#removeIdle(() => true);
        return unbelievable;
      }
    }
    const acquired = await this.#acquire(checkout);
    if ('failed' in acquired) {
      const failure = acquired.failed;
      if (lastAttempt) return { error: this.#connectFailure(failure) };
      // Looking for somewhere else to connect (a manifest re-read) counts
      // against connectionTimeoutMillis too: no time left, no other attempt.
      const budget = this.#budgetOf(checkout);
      const worthAnother = await budget
        .race(this.#topology.worthAnotherConnect(failure))
        .catch(() => false);
      if (!worthAnother) return { error: this.#connectFailure(failure) };
      return { retry: true };
    }
    if (!('client' in acquired)) return acquired;
    const client = acquired.client;
    const freshness = this.#pin.freshness(client);
    if (freshness === 'fresh') return { client };
    let outcome: ReattestOutcome = { kind: 'superseded' };
    if (freshness !== 'superseded') {
      checkout.budget = this.#reattestBudget(checkout.budget);
      outcome = await this.#reattest(freshness === 'stale', client, [client], checkout.budget);
    }
    if (outcome.kind === 'fresh') return { client };
    this.#pool.release(client, new Error(`pg-ra-tls: connection ${outcome.kind}`));
    if (outcome.kind === 'superseded') {
      if (!lastAttempt) return { retry: true };
      return { error: new RaTlsError('SERVER_CHANGED', 'the server certificate keeps changing') };
    }
    const failure = outcome.error;
    this.#emitFailure(failure, 'reattest');
    if (failure.code === 'SERVER_CHANGED' || failure.code === 'POOL_ENDED' || lastAttempt) {
      return { error: failure };
    }
    // The connections judged like this one would fail the same way.
    this.#removeIdle((idle) => this.#pin.freshness(idle) !== 'fresh');
    return { retry: true };
  }

  /**
   * A connection from the pool, why none could be connected (`failed`), or,
   * once the checkout's budget is spent, the error that ends it: the wait is
   * bounded by what is left of the budget, and a connection that arrives too
   * late goes back to the pool unused.
   */
  async #acquire(
    checkout: Checkout,
  ): Promise<{ readonly client: C } | { readonly failed: unknown } | { readonly error: unknown }> {
    const budget = checkout.budget;
    if (budget?.signal.aborted) return { error: budget.signal.reason };
    const pending = this.#pool.acquire();
    try {
      return { client: budget === undefined ? await pending : await budget.race(pending) };
    } catch (failed) {
      if (!budget?.signal.aborted) return { failed };
      pending.then(
        (late) => this.#pool.release(late),
        () => {},
      );
      return { error: budget.signal.reason };
    }
  }

  /** The checkout's budget, created with its connectionTimeoutMillis deadline if it has none yet. */
  #budgetOf(checkout: Checkout): Scope {
    checkout.budget ??= this.#connectBudget(checkout.started);
    return checkout.budget;
  }

  /** Retries of new connections stay within connectionTimeoutMillis, when set. */
  #connectBudget(started: number): Scope {
    const scope = new Scope();
    const limit = this.#pool.limits().connectionTimeoutMillis;
    if (limit === undefined || limit <= 0) return scope;
    return scope.deadline(Math.max(0, limit - (Date.now() - started)), () =>
      this.#connectTimeout(limit),
    );
  }

  /** A re-attestation budget: reattestTimeout, added to `scope` when given. */
  #reattestBudget(scope: Scope = new Scope()): Scope {
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

  /** Re-attests `connections` (all attested by `first`'s certificate) and applies the outcome. */
  async #reattest(
    probe: boolean,
    first: C,
    connections: readonly C[],
    budget: Scope,
  ): Promise<ReattestOutcome> {
    const report = first.attestation;
    const der = first.serverCertificate;
    if (report === undefined || der === undefined) {
      const error = new RaTlsError('REATTEST_FAILED', 'a pooled connection has no attestation');
      return { kind: 'failed', error };
    }
    const target = first.endpoint ?? this.settings.endpoint;
    const outcome = await this.#reattestation.run(
      target,
      probe,
      der,
      first.serverIssuers,
      report,
      budget,
    );
    if (outcome.kind !== 'fresh') {
      if (outcome.change !== undefined) this.#serverChanged(outcome.change);
      return outcome;
    }
    for (const each of connections) {
      each.updateAttestation(outcome.report);
      this.#pin.stamp(each, outcome.policyVersion);
    }
    for (const each of connections) this.#pool.emit('reattested', outcome.report, each);
    return outcome;
  }

  /** Emits the one event of a server change and drains the connections it made obsolete. */
  #serverChanged(change: ServerChangedEvent): void {
    if (change.mode === 'reverify') this.#reattestation.resetProbe();
    this.#pool.emit('serverChanged', change);
    const old = change.previous.fingerprint;
    this.#removeIdle(
      (connection) => change.mode === 'reject' || connection.attestation?.fingerprint === old,
    );
  }

  /**
   * The cluster moved to a verified new leader: pin it and drain the idle
   * connections to the old one (busy ones are superseded at their next checkout).
   */
  #leaderChanged(event: LeaderChangedEvent): void {
    this.#pin.follow(event.report);
    this.#reattestation.resetProbe();
    this.#removeIdle(
      (connection) => connection.attestation?.fingerprint !== event.report.fingerprint,
    );
    this.#pool.emit('leaderChanged', event);
  }

  /** Closes idle connections matching `predicate` (only ones idle right now). */
  #removeIdle(predicate: (connection: C) => boolean): void {
    for (const connection of this.#pool.idle()) {
      if (predicate(connection)) this.#pool.removeIdle(connection);
    }
  }

  /**
   * Background upkeep (unref'd interval): idle connections whose report went
   * stale are re-attested together (one probe, one verification), or closed
   * when that fails.
   */
  #sweep(): void {
    const pinned = this.#pin.pinned;
    // An ended pool has no sweep (close() stops it and sets the refusal first).
    if (this.#sweeping || this.#pin.refusal !== undefined) return;
    if (pinned === undefined) return;
    const stale = this.#pool.idle().filter((idle) => this.#pin.freshness(idle) !== 'fresh');
    const current = stale.filter((idle) => idle.attestation?.fingerprint === pinned.fingerprint);
    this.#removeIdle((idle) => stale.includes(idle) && !current.includes(idle));
    const first = current[0];
    if (first === undefined) return;
    this.#sweeping = true;
    const budget = this.#reattestBudget();
    this.#reattest(true, first, current, budget)
      .then((outcome) => {
        if (outcome.kind === 'fresh') return;
        if (outcome.kind === 'failed') this.#emitFailure(outcome.error, 'background');
        this.#removeIdle((idle) => current.includes(idle));
      })
      .finally(() => {
        budget.dispose();
        this.#sweeping = false;
      });
  }

  #connectTimeout(limit: number | undefined, cause?: unknown): RaTlsError {
    return new RaTlsError(
      'CONNECT_TIMEOUT',
      `no attested connection to ${this.settings.description} within connectionTimeoutMillis ` +
        `(${limit} ms)`,
      { cause },
    );
  }

  /** The error a checkout whose new connection failed ends with (typed when it is ours). */
  #connectFailure(error: unknown): Error {
    if (error instanceof RaTlsError) {
      this.#emitFailure(error, 'connect');
      return error;
    }
    // pg-pool wraps a connectionTimeoutMillis expiry; keep our typed cause visible.
    if (error instanceof Error && error.cause instanceof RaTlsError) {
      const failure = this.#connectTimeout(this.#pool.limits().connectionTimeoutMillis, error);
      this.#emitFailure(failure, 'connect');
      return failure;
    }
    return error instanceof Error ? error : new Error(describeCause(error));
  }

  #emitFailure(error: RaTlsError, phase: AttestationFailedEvent['phase']): void {
    this.#pool.emit('attestationFailed', { error, phase });
  }
}
