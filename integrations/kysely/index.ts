/**
 * pg-ra-tls/kysely: a Kysely dialect whose connections are attested.
 *
 * It is Kysely's own PostgresDialect over a {@link RaTlsPool}: attestation and
 * re-attestation happen in the pool's `connect()`, before Kysely ever sees a
 * connection, so Kysely's `onCreateConnection`/`onReserveConnection` hooks stay
 * free for the application. Streaming uses pg-cursor.
 */
import { createRequire } from 'node:module';
import {
  type DatabaseConnection,
  type PostgresCursorConstructor,
  PostgresDialect,
  type PostgresDialectConfig,
} from 'kysely';
import { createPool, RaTlsError, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';

/** Pool sizing and re-attestation settings, which may be nested under `pool`. */
export type RaTlsPoolSettings = Pick<
  RaTlsPoolOptions,
  | 'max'
  | 'min'
  | 'idleTimeoutMillis'
  | 'allowExitOnIdle'
  | 'maxUses'
  | 'maxLifetimeSeconds'
  | 'connectionTimeoutMillis'
  | 'log'
  | 'onConnect'
  | 'reattestEvery'
  | 'reattestTimeout'
  | 'onServerChange'
>;

/** Kysely's own PostgresDialect options that pg-ra-tls passes through. */
export interface KyselyDialectHooks {
  /**
   * The cursor class for `.stream()`. Default: pg-cursor when it is installed;
   * `false` disables streaming.
   */
  readonly cursor?: PostgresCursorConstructor | false;
  /** Kysely's hook, run once per new (already attested) connection. */
  readonly onCreateConnection?: (connection: DatabaseConnection) => Promise<void>;
  /** Kysely's hook, run at every checkout (after any re-attestation). */
  readonly onReserveConnection?: (connection: DatabaseConnection) => Promise<void>;
}

/**
 * Options of {@link raTlsDialect}: where to connect and how to attest (the
 * pool's options), with pool settings at the top level or nested under
 * `pool` (`pool` wins). `pool` may instead be an existing {@link RaTlsPool};
 * then no connection or attestation option may be given here.
 */
export interface RaTlsDialectOptions extends RaTlsPoolOptions, KyselyDialectHooks {
  readonly pool?: RaTlsPool | RaTlsPoolSettings;
}

/** A Kysely PostgresDialect over an attested pool; `pool` exposes its events and attestation. */
export class RaTlsDialect extends PostgresDialect {
  /** The attested pool. `kysely.destroy()` ends it. */
  readonly pool: RaTlsPool;

  constructor(pool: RaTlsPool, hooks: KyselyDialectHooks = {}) {
    const cursor = hooks.cursor === undefined ? loadPgCursor() : hooks.cursor || undefined;
    const config: PostgresDialectConfig = {
      pool,
      ...(cursor === undefined ? {} : { cursor }),
      ...(hooks.onCreateConnection === undefined
        ? {}
        : { onCreateConnection: hooks.onCreateConnection }),
      ...(hooks.onReserveConnection === undefined
        ? {}
        : { onReserveConnection: hooks.onReserveConnection }),
    };
    super(config);
    this.pool = pool;
  }
}

/**
 * Creates a Kysely dialect whose every connection is attested:
 * `new Kysely<DB>({ dialect: raTlsDialect({ connectionString, policy, pool: { max: 10, reattestEvery: '5m' } }) })`.
 * Also accepts an existing pool: `raTlsDialect(pool)` or `raTlsDialect({ pool })`.
 * Configuration errors throw BAD_CONFIG here, before any network I/O.
 */
export function raTlsDialect(options: RaTlsDialectOptions | RaTlsPool): RaTlsDialect {
  if (options instanceof RaTlsPool) return new RaTlsDialect(options);
  if (options === null || typeof options !== 'object') {
    throw new RaTlsError(
      'BAD_CONFIG',
      'raTlsDialect needs options ({ connectionString, policy, ... }) or a RaTlsPool',
      { details: { option: 'options' } },
    );
  }
  const { pool, cursor, onCreateConnection, onReserveConnection, ...poolOptions } = options;
  const hooks: KyselyDialectHooks = { cursor, onCreateConnection, onReserveConnection };
  if (pool instanceof RaTlsPool) {
    const extra = Object.keys(poolOptions).filter(
      (key) => (poolOptions as Record<string, unknown>)[key] !== undefined,
    );
    if (extra.length > 0) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `raTlsDialect got an existing RaTlsPool and also ${extra.join(', ')}: ` +
          'configure the pool where it is created, or pass the options instead of the pool',
        { details: { option: extra[0] } },
      );
    }
    return new RaTlsDialect(pool, hooks);
  }
  if (pool !== undefined && (pool === null || typeof pool !== 'object' || isPoolLike(pool))) {
    // A plain pg.Pool (or anything else that connects) would not attest: refuse it.
    throw new RaTlsError(
      'BAD_CONFIG',
      'raTlsDialect option pool must be a RaTlsPool (from createPool) or pool settings such as ' +
        '{ max: 10, reattestEvery: "5m" }; a plain pg.Pool would not attest its connections',
      { details: { option: 'pool' } },
    );
  }
  return new RaTlsDialect(createPool({ ...poolOptions, ...pool }), hooks);
}

function isPoolLike(value: object): boolean {
  return typeof (value as { connect?: unknown }).connect === 'function';
}

/** pg-cursor is an optional peer: without it Kysely reports that `.stream()` needs a cursor. */
function loadPgCursor(): PostgresCursorConstructor | undefined {
  try {
    return createRequire(import.meta.url)('pg-cursor') as PostgresCursorConstructor;
  } catch (error) {
    if ((error as { code?: unknown }).code === 'MODULE_NOT_FOUND') return undefined;
    throw error;
  }
}
