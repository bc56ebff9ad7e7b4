import pg from 'pg';
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
  type EndpointTarget,
  type ProbeResult,
  raceSignal,
} from '../connection/attested-connector.js';
import {
  bindClientOptions,
  RaTlsClient,
  type RaTlsClientHooks,
} from '../connection/ra-tls-client.js';
import { describeCause, isRaTlsError, RaTlsError } from '../errors.js';
import type { Policy } from '../policy/types.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import { parseDuration } from '../util/duration.js';

/** What the pool does when the server presents a certificate other than the pinned one. */
export type ServerChangeMode = 'reverify' | 'reject';

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
  /** Time allowed for one re-attestation at checkout (probe + verification). Default `"30s"`. */
  readonly reattestTimeout?: number | string;
  /**
   * A different server certificate than the pinned one: `'reverify'` (default)
   * verifies it fully, pins it and drains connections to the old one;
   * `'reject'` fails checkouts with SERVER_CHANGED until the pool is recreated.
   */
  readonly onServerChange?: ServerChangeMode;
  /**
   * Connect to a teesql cluster's leader, found in its signed DNS manifest
   * (PROTOCOL.md §7), and follow it through failovers; the connection
   * string's host is then not used. See {@link ClusterOptions}.
   */
  readonly cluster?: ClusterOptions;
}

/** Payload of the pool's `serverChanged` event. */
export interface ServerChangedEvent {
  /** The report of the previously pinned certificate. */
  readonly previous: AttestationReport;
  /** Fingerprint of the certificate the server presents now. */
  readonly fingerprint: string;
  /** Its verified report (`reverify` mode only). */
  readonly current?: AttestationReport;
  readonly mode: ServerChangeMode;
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

/** The parts of pg-pool's internal state the idle sweep needs (pg-pool 3.x). */
interface PgPoolInternals {
  _idle: { client: pg.PoolClient }[];
  _remove(client: pg.PoolClient, callback?: () => void): void;
}

/** Marks a connection replaced by a newer pinned certificate: closed and retried silently. */
const kSuperseded = Symbol('pg-ra-tls.superseded');
const MIN_SWEEP_INTERVAL = 1000;
const SERVER_CHANGED_HINT =
  'the pool pinned the first verified certificate; recreate the pool to accept the new one ' +
  "(or use onServerChange: 'reverify')";

/**
 * A node-postgres Pool (`instanceof pg.Pool` holds) whose every connection is
 * attested before use and re-attested at checkout once its report is older
 * than `reattestEvery` (the quote re-judged against current collateral and
 * policy, the server's present certificate confirmed by one shared probe
 * handshake per interval). The first verified certificate is pinned.
 *
 * Events, besides pg-pool's: `attested` (report, client), `reattested`
 * (report, client?), `serverChanged` ({@link ServerChangedEvent}),
 * `attestationFailed` ({@link AttestationFailedEvent}).
 */
export class RaTlsPool extends pg.Pool {
  /** The resolved connection settings (password not enumerable). */
  readonly settings: ConnectionSettings;
  /** The connector shared by this pool's clients (verification cache, client identity). */
  readonly connector: AttestedConnector;
  readonly #mode: ServerChangeMode;
  readonly #reattestTimeoutMs: number;
  readonly #target: EndpointTarget;
  readonly #policyVersions = new WeakMap<RaTlsClient, number>();
  #pinned: AttestationReport | undefined;
  #rejected: RaTlsError | undefined;
  #probe: ProbeResult | undefined;
  #probeInflight: Promise<ProbeResult> | undefined;
  /** Multi-host: one shared probe per host, as #probe is for the single host. */
  readonly #hostProbes = new Map<
    string,
    { result?: ProbeResult; inflight?: Promise<ProbeResult> }
  >();
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping = false;
  /** Set with the `cluster` option: where to dial, and when to move (src/cluster). */
  readonly #follower: LeaderFollower | undefined;
  /** Set by a multi-host connection string or target_session_attrs (src/cluster). */
  readonly #hostSelector: HostSelector | undefined;

  constructor(options: RaTlsPoolOptions) {
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
    const reattestTimeoutMs = parseDuration(options.reattestTimeout ?? '30s', 'reattestTimeout');
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
    let follower: LeaderFollower | undefined;
    if (cluster !== undefined) {
      follower = new LeaderFollower(cluster, {
        connectTimeoutMs: settings.connectTimeoutMs,
        handshakeTimeoutMs: settings.handshakeTimeoutMs,
        verify: async (target, signal) => {
          const seen = await connector.probe(target, signal);
          return (await connector.verifyCertificate(seen.certificateDer, signal)).report;
        },
        changed: (event) => this.#leaderChanged(event),
        failed: (error) => this.emit('discoveryFailed', { error } satisfies DiscoveryFailedEvent),
      });
    }
    const hooks: RaTlsClientHooks = {
      admit: (report, client) => {
        if (follower !== undefined && !follower.isCurrent(client.endpoint)) {
          throw new RaTlsError(
            'SERVER_CHANGED',
            `the leader of cluster ${follower.domain} changed while this connection was being made`,
            { details: { reason: 'leader-changed' } },
          );
        }
        if (this !== undefined) this.#admit(report);
      },
      ...(selector === undefined
        ? {}
        : {
            ready: async (client: RaTlsClient) => {
              await selector.checkSession(client.endpoint, (sql) => client.query(sql));
              selector.succeeded(client.endpoint);
            },
            failed: (client: RaTlsClient, error: unknown) =>
              selector.failed(client.endpoint, error),
          }),
      attested: (client, attested) => {
        if (this !== undefined) this.#onAttested(client, attested.report);
      },
    };
    const Client = class extends RaTlsClient {
      constructor() {
        super(
          bindClientOptions({
            settings,
            connector,
            hooks,
            ...(follower === undefined ? {} : { endpoint: () => follower.target() }),
            ...(selector === undefined ? {} : { endpoint: async () => selector.next() }),
          }),
        );
      }
    };
    const poolConfig: pg.PoolConfig = {
      ...pick(options as pg.PoolConfig, [
        'max',
        'min',
        'idleTimeoutMillis',
        'allowExitOnIdle',
        'maxUses',
        'maxLifetimeSeconds',
        'log',
        'onConnect',
        'connectionTimeoutMillis',
      ]),
      Client: Client as unknown as pg.PoolConfig['Client'],
    };
    super(poolConfig);
    this.settings = settings;
    this.connector = connector;
    this.#mode = mode;
    this.#reattestTimeoutMs = reattestTimeoutMs;
    this.#target = {
      host: settings.host,
      port: settings.port,
      servername: settings.servername,
      connectTimeoutMs: settings.connectTimeoutMs,
      handshakeTimeoutMs: settings.handshakeTimeoutMs,
    };
    const interval = Math.max(connector.reattestEveryMs, MIN_SWEEP_INTERVAL);
    this.#sweepTimer = setInterval(() => this.#sweep(), interval);
    this.#sweepTimer.unref();
    this.#follower = follower;
    this.#hostSelector = selector;
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
    return this.#pinned;
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
      this.connector.close(new RaTlsError('POOL_ENDED', 'the pool was ended during attestation'));
    }
    if (callback === undefined) return super.end();
    super.end(callback);
    return undefined;
  }

  async #checkout(): Promise<pg.PoolClient> {
    const attempts = (this.options.max ?? 10) + 1;
    for (let attempt = 1; ; attempt++) {
      if (this.ending) {
        throw new RaTlsError('POOL_ENDED', 'the pool has been ended: create a new pool');
      }
      if (this.#rejected !== undefined) throw this.#rejected;
      if (this.#follower !== undefined) {
        try {
          await this.#follower.ensureBelievable();
        } catch (error) {
          this.#removeIdle(() => true);
          throw error;
        }
      }
      let client: PooledClient;
      try {
        client = (await super.connect()) as PooledClient;
      } catch (error) {
        // Cluster: a failed connect re-reads the manifest at once; a move means retry there.
        if (
          this.#follower !== undefined &&
          attempt < attempts &&
          (await this.#follower.refresh())
        ) {
          continue;
        }
        if (isRaTlsError(error, 'SERVER_CHANGED') && error.details['reason'] === 'leader-changed') {
          if (attempt < attempts) continue;
        }
        // Multi-host: that host is recorded as failed; the next one is tried.
        if (
          this.#hostSelector !== undefined &&
          attempt < attempts &&
          !isRaTlsError(error, 'NO_HOST_AVAILABLE') &&
          !isRaTlsError(error, 'POOL_ENDED')
        ) {
          continue;
        }
        throw this.#connectFailure(error);
      }
      try {
        await this.#ensureFresh(client);
        return client;
      } catch (error) {
        client.release(error instanceof Error ? error : new Error(String(error)));
        if (error === kSuperseded) {
          if (attempt < attempts) continue;
          throw new RaTlsError('SERVER_CHANGED', 'the server certificate keeps changing');
        }
        const failure = asRaTlsError(error, 'REATTEST_FAILED');
        this.#emitFailure(failure, 'reattest');
        if (failure.code === 'SERVER_CHANGED' || failure.code === 'POOL_ENDED') throw failure;
        if (attempt >= attempts) throw failure;
        // The connections judged like this one would fail the same way.
        this.#removeIdle((idle) => this.#needsReattest(idle));
      }
    }
  }

  /** Re-attests a checked-out client when its report is stale or judged under an older policy. */
  async #ensureFresh(client: PooledClient): Promise<void> {
    const report = client.attestation;
    const der = client.serverCertificate;
    if (report === undefined || der === undefined) {
      throw new RaTlsError('REATTEST_FAILED', 'a pooled connection has no attestation');
    }
    if (this.#pinned !== undefined && report.fingerprint !== this.#pinned.fingerprint) {
      throw kSuperseded;
    }
    const ageStale = this.connector.now() - report.verifiedAt >= this.connector.reattestEveryMs;
    const policyStale = this.#policyVersions.get(client) !== this.connector.policyVersion;
    if (!ageStale && !policyStale) return;

    await this.#reattest(ageStale, der, report, [client]);
  }

  /**
   * One re-attestation in a `pg_ra_tls.reattest` span: with `probe`, a fresh
   * handshake confirms the server still presents this certificate (shared by
   * all checkouts for one interval); then the certificate is re-verified
   * (cache-aware: once per fingerprint per interval) under the current policy.
   */
  async #reattest(
    probe: boolean,
    der: Uint8Array,
    report: AttestationReport,
    clients: readonly RaTlsClient[],
  ): Promise<AttestationReport> {
    return withSpan(
      SpanNames.REATTEST,
      {
        [SpanAttributes.SERVER_ADDRESS]: this.#target.host,
        [SpanAttributes.SERVER_PORT]: this.#target.port,
        [SpanAttributes.FINGERPRINT]: report.fingerprint,
      },
      async (span) => {
        const timeout = new AbortController();
        const timer = setTimeout(
          () =>
            timeout.abort(
              new RaTlsError(
                'REATTEST_FAILED',
                `re-attesting ${this.settings.description} took longer than ` +
                  `${this.#reattestTimeoutMs} ms (reattestTimeout)`,
              ),
            ),
          this.#reattestTimeoutMs,
        );
        const signal = timeout.signal;
        const policyVersion = this.connector.policyVersion;
        const work = async () => {
          if (probe) {
            const seen =
              this.#hostSelector === undefined
                ? await this.#sharedProbe(signal)
                : await this.#hostProbe(clients[0]?.endpoint ?? this.#target, signal);
            if (seen.fingerprint !== report.fingerprint) {
              await this.#serverChanged(seen.fingerprint, seen.certificateDer, signal);
              throw kSuperseded;
            }
          }
          return this.connector.verifyCertificate(der, signal);
        };
        try {
          const { report: fresh, cacheHit } = await raceSignal(work(), signal);
          span.setAttribute(SpanAttributes.CACHE_HIT, cacheHit);
          setAttributes(span, reportAttributes(fresh));
          for (const client of clients) {
            client.updateAttestation(fresh);
            this.#policyVersions.set(client, policyVersion);
          }
          if (this.#pinned?.fingerprint === fresh.fingerprint) this.#pinned = fresh;
          for (const client of clients) this.emit('reattested', fresh, client);
          return fresh;
        } catch (error) {
          if (error !== kSuperseded) this.connector.cache.delete(report.fingerprint);
          throw error;
        } finally {
          clearTimeout(timer);
        }
      },
    );
  }

  #hostProbe(target: EndpointTarget, signal: AbortSignal): Promise<ProbeResult> {
    const key = `${target.host}|${target.port}`;
    const entry = this.#hostProbes.get(key) ?? {};
    this.#hostProbes.set(key, entry);
    const cached = entry.result;
    if (cached !== undefined && this.connector.now() - cached.at < this.connector.reattestEveryMs) {
      return Promise.resolve(cached);
    }
    entry.inflight ??= this.connector
      .probe(target)
      .then((result) => {
        entry.result = result;
        return result;
      })
      .finally(() => {
        entry.inflight = undefined;
      });
    return raceSignal(entry.inflight, signal);
  }

  #sharedProbe(signal: AbortSignal): Promise<ProbeResult> {
    const cached = this.#probe;
    if (cached !== undefined && this.connector.now() - cached.at < this.connector.reattestEveryMs) {
      return Promise.resolve(cached);
    }
    this.#probeInflight ??= this.connector
      .probe(this.#follower?.currentTarget() ?? this.#target)
      .then((result) => {
        this.#probe = result;
        return result;
      })
      .finally(() => {
        this.#probeInflight = undefined;
      });
    return raceSignal(this.#probeInflight, signal);
  }

  /** A new connection's verified report: pin the first, judge any other certificate. */
  #admit(report: AttestationReport): void {
    if (this.ending) {
      throw new RaTlsError('POOL_ENDED', 'the pool was ended during attestation');
    }
    if (this.#rejected !== undefined) throw this.#rejected;
    // Multi-host: every host has its own certificate; each connection is attested on its own.
    if (this.#hostSelector !== undefined) return;
    const pinned = this.#pinned;
    if (pinned === undefined) {
      this.#pinned = report;
      return;
    }
    if (report.fingerprint === pinned.fingerprint) {
      if (report.verifiedAt >= pinned.verifiedAt) this.#pinned = report;
      return;
    }
    this.#applyServerChange(report.fingerprint, report);
  }

  #onAttested(client: RaTlsClient, report: AttestationReport): void {
    this.#policyVersions.set(client, this.connector.policyVersion);
    this.emit('attested', report, client);
  }

  /** A probe saw another certificate: verify it fully ('reverify') or refuse ('reject'). */
  async #serverChanged(fingerprint: string, der: Uint8Array, signal: AbortSignal): Promise<void> {
    if (this.#pinned === undefined || this.#pinned.fingerprint === fingerprint) return;
    if (this.#mode === 'reject') {
      this.#applyServerChange(fingerprint, undefined);
      return;
    }
    const { report } = await this.connector.verifyCertificate(der, signal);
    if (this.#pinned.fingerprint !== report.fingerprint) {
      this.#applyServerChange(report.fingerprint, report);
    }
  }

  /** Pins `current` and drains the old connections, or enters the rejecting state (and throws). */
  #applyServerChange(fingerprint: string, current: AttestationReport | undefined): void {
    const previous = this.#pinned!;
    const oldFingerprint = previous.fingerprint;
    if (this.#mode === 'reject' || current === undefined) {
      this.#rejected = new RaTlsError(
        'SERVER_CHANGED',
        `${this.settings.description} now presents certificate ${fingerprint.slice(0, 16)}… ` +
          `instead of the pinned ${oldFingerprint.slice(0, 16)}…: ${SERVER_CHANGED_HINT}`,
        { details: { pinned: oldFingerprint, presented: fingerprint } },
      );
      this.emit('serverChanged', {
        previous,
        fingerprint,
        mode: 'reject',
      } satisfies ServerChangedEvent);
      this.#removeIdle(() => true);
      throw this.#rejected;
    }
    this.#pinned = current;
    this.#probe = undefined;
    this.emit('serverChanged', {
      previous,
      fingerprint,
      current,
      mode: 'reverify',
    } satisfies ServerChangedEvent);
    this.#removeIdle((client) => client.attestation?.fingerprint === oldFingerprint);
  }

  /**
   * The cluster moved to a verified new leader: pin its report and drain the
   * idle connections to the old one (busy ones are dropped at their next
   * checkout, as superseded).
   */
  #leaderChanged(event: LeaderChangedEvent): void {
    this.#pinned = event.report;
    this.#probe = undefined;
    this.#removeIdle((client) => client.attestation?.fingerprint !== event.report.fingerprint);
    this.emit('leaderChanged', event);
  }

  #needsReattest(client: RaTlsClient): boolean {
    const report = client.attestation;
    if (report === undefined) return true;
    if (this.#pinned !== undefined && report.fingerprint !== this.#pinned.fingerprint) return true;
    if (this.#policyVersions.get(client) !== this.connector.policyVersion) return true;
    return this.connector.now() - report.verifiedAt >= this.connector.reattestEveryMs;
  }

  /** Closes idle connections matching `predicate` (only ones idle right now). */
  #removeIdle(predicate: (client: RaTlsClient) => boolean): void {
    const internals = this as unknown as PgPoolInternals;
    for (const item of [...internals._idle]) {
      const client = item.client as unknown as RaTlsClient;
      if (predicate(client)) internals._remove(item.client);
    }
  }

  /**
   * Background upkeep (unref'd interval): idle connections whose report went
   * stale are re-attested together (one probe, one verification), or closed
   * when that fails.
   */
  #sweep(): void {
    if (this.#sweeping || this.ending || this.#rejected !== undefined) return;
    const pinned = this.#pinned;
    const internals = this as unknown as PgPoolInternals;
    const stale = internals._idle
      .map((item) => item.client as unknown as RaTlsClient)
      .filter((client) => this.#needsReattest(client));
    if (pinned === undefined || stale.length === 0) return;
    const current = stale.filter(
      (client) => client.attestation?.fingerprint === pinned.fingerprint,
    );
    this.#removeIdle(
      (client) => stale.includes(client) && client.attestation?.fingerprint !== pinned.fingerprint,
    );
    const der = current[0]?.serverCertificate;
    if (der === undefined) return;
    this.#sweeping = true;
    this.#reattest(true, der, pinned, current)
      .catch((error: unknown) => {
        if (error !== kSuperseded) {
          this.#emitFailure(asRaTlsError(error, 'REATTEST_FAILED'), 'background');
        }
        this.#removeIdle((client) => current.includes(client));
      })
      .finally(() => {
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

/** Payload of the pool's `discoveryFailed` event (cluster mode): the current leader stays. */
export interface DiscoveryFailedEvent {
  readonly error: RaTlsError;
}

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

function pick<T extends object, K extends keyof T>(source: T, keys: readonly K[]): Partial<T> {
  const out: Partial<T> = {};
  for (const key of keys) if (source[key] !== undefined) out[key] = source[key];
  return out;
}

function asRaTlsError(error: unknown, code: 'REATTEST_FAILED'): RaTlsError {
  if (error instanceof RaTlsError) return error;
  return new RaTlsError(code, `re-attestation failed: ${describeCause(error)}`, { cause: error });
}
