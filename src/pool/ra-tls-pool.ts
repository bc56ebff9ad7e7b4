import type pg from 'pg';
import type { AttestationReport } from '../attest/report.js';
import type { LeaderChangedEvent } from '../cluster/leader-follower.js';
import {
  CONNECTION_OPTION_KEYS,
  type ConnectionSettings,
  PG_POOL_OPTION_KEYS,
} from '../config/connection-settings.js';
import type { AttestedConnector } from '../connection/attested-connector.js';
import { linkPgBase, pgBase } from '../connection/pg-base.js';
import { type PoolInternals, poolInternals } from '../connection/pg-internals.js';
import {
  CONNECTOR_OWNED,
  RaTlsClient,
  type RaTlsClientBinding,
} from '../connection/ra-tls-client.js';
import { RaTlsError } from '../errors.js';
import type { Policy } from '../policy/types.js';
import { assertKnownOptions } from '../util/known-options.js';
import {
  type AttestationFailedEvent,
  type DiscoveryFailedEvent,
  PoolAttestation,
  type PoolAttestationOptions,
} from './pool-attestation.js';
import type { ServerChangedEvent } from './server-pin.js';

export type { AttestationFailedEvent, DiscoveryFailedEvent } from './pool-attestation.js';
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
  | 'Promise'
  | 'verify'
>;

/** Options of {@link RaTlsPool}; see {@link PoolAttestationOptions} for the pool's own. */
export interface RaTlsPoolOptions extends PoolAttestationOptions, PgPoolOptions {}

type PoolCallback = (
  err: Error | undefined,
  client: pg.PoolClient | undefined,
  done: (release?: Error | boolean) => void,
) => void;

type PooledClient = RaTlsClient & pg.PoolClient;

const PASSED_THROUGH = PG_POOL_OPTION_KEYS;

/**
 * Every option {@link RaTlsPool} knows: the connection's, the attestation's,
 * pg-pool's (passed on) and the pool's own. Anything else is a typo.
 */
export const POOL_OPTION_KEYS: readonly string[] = Object.freeze([
  ...CONNECTION_OPTION_KEYS,
  ...CONNECTOR_OWNED,
  ...PASSED_THROUGH,
  'reattestTimeout',
  'onServerChange',
  'cluster',
]);

/**
 * A node-postgres Pool (`instanceof pg.Pool` holds) whose every connection is
 * attested before use and re-attested at checkout once its report is older
 * than `reattestEvery` (the quote re-judged against current collateral and
 * policy, the server's present certificate confirmed by one shared probe
 * handshake per interval). The first verified certificate is pinned.
 *
 * This class only adapts pg-pool: the pin, the staleness rule, re-attestation,
 * the checkout and sweep rules, and where to dial (with `cluster`, a
 * {@link LeaderFollower}; with a multi-host connection string, a
 * {@link HostSelector}) live in the pg-free {@link PoolAttestation}.
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
  readonly #attestation: PoolAttestation<PooledClient>;

  constructor(options: RaTlsPoolOptions) {
    linkPgBase(RaTlsPool, 'Pool');
    if (options !== null && typeof options === 'object') {
      if ((options as { Client?: unknown }).Client !== undefined) {
        throw new RaTlsError(
          'BAD_CONFIG',
          'Client must not be set: every connection of a RaTlsPool is an attested RaTlsClient',
          { details: { option: 'Client' } },
        );
      }
      assertKnownOptions(options, POOL_OPTION_KEYS, 'createPool');
    }
    // pg-pool, read lazily: it exists once super() returns, before anything runs.
    let internals: PoolInternals | undefined;
    const attestation: PoolAttestation<PooledClient> = new PoolAttestation(options, {
      acquire: () => super.connect() as Promise<PooledClient>,
      release: (client, error) => client.release(error),
      idle: () => internals!.idleClients() as PooledClient[],
      removeIdle: (client) => internals!.removeIdle(client),
      ending: () => this.ending,
      limits: () => ({
        max: this.options.max ?? 10,
        connectionTimeoutMillis: this.options.connectionTimeoutMillis,
      }),
      emit: (event, ...args) => this.emit(event, ...args),
    });
    const binding: RaTlsClientBinding = {
      settings: attestation.settings,
      connector: attestation.connector,
      hooks: {
        refusal: () => attestation.refusal(),
        admit: (report, client) => attestation.admit(report, client),
        attested: (client, attested) => attestation.attested(client as PooledClient, attested),
        ready: (client) => attestation.sessionReady(client, (sql) => client.query(sql)),
        failed: (client, error) => attestation.connectFailed(client, error),
      },
      // Undefined (a single-host pool): the client dials settings.endpoint.
      endpoint: attestation.endpoint,
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
    internals = poolInternals(this);
    this.settings = attestation.settings;
    this.connector = attestation.connector;
    this.#attestation = attestation;
    attestation.start();
    this.on('release', (error) => attestation.released(error));
  }

  /** The current report of the pinned server, or undefined before the first connection. */
  get attestation(): AttestationReport | undefined {
    return this.#attestation.pinned;
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
    const promise = this.#attestation.checkout();
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
    this.#attestation.close();
    if (callback === undefined) return super.end();
    super.end(callback);
    return undefined;
  }
}

/** Creates a {@link RaTlsPool}. Configuration errors throw here, before any network I/O. */
export function createPool(options: RaTlsPoolOptions): RaTlsPool {
  return new RaTlsPool(options);
}
