/**
 * Pools of every pooled variant, and the load loops run through them. The
 * baseline pools are plain `pg.Pool`s; the candidate is `RaTlsPool`, which
 * goes through the sidecar like `sidecarTls`.
 */
import pg from 'pg';
import { RaTlsPool, type RaTlsPoolOptions } from '../../src/pool/ra-tls-pool.js';
import { type BenchContext, STACK_ENGINE } from './context.js';
import { nowMs } from './stats.js';

/** The pooled variants, candidate first. */
export const POOL_VARIANTS = ['raTls', 'sidecarTls', 'forwarder', 'tls'] as const;
/** One of {@link POOL_VARIANTS}. */
export type PoolVariant = (typeof POOL_VARIANTS)[number];

/** What each pooled variant is, for tables. */
export const POOL_LABELS: Record<PoolVariant, string> = {
  raTls: `RaTlsPool → sidecar (attested, ${STACK_ENGINE})`,
  forwarder: "pg.Pool → the peers' loopback forwarder → sidecar (attested)",
  sidecarTls: 'pg.Pool, mutual TLS → sidecar, no verification',
  tls: 'pg.Pool, ordinary TLS (sslmode=require) → Postgres',
};

/** The two query workloads. */
export const QUERIES = {
  select1: { label: 'SELECT 1', text: 'SELECT 1' },
  read: {
    label: 'small read (1 row by primary key, 3 columns)',
    text: 'SELECT id, name, balance FROM bench_accounts WHERE id = $1',
  },
  bulk: {
    label: '10k-row read (3 columns, ~200 KiB)',
    text: "SELECT g AS id, 'account-' || g AS name, g * 1.5 AS balance FROM generate_series(1, 10000) g",
  },
} as const;
/** A key of {@link QUERIES}. */
export type QueryName = keyof typeof QUERIES;

/** Creates a pool of `variant` with `max` connections (nothing is opened yet). */
export function createVariantPool(
  context: BenchContext,
  variant: PoolVariant,
  max: number,
  extra: Partial<RaTlsPoolOptions> = {},
): pg.Pool {
  const common = { max, idleTimeoutMillis: 0 };
  if (variant === 'raTls') {
    return new RaTlsPool({
      connectionString: context.endpoints.sidecarUrl,
      verifier: context.sharedVerifier,
      policy: context.policy,
      clientIdentity: context.identity,
      ...common,
      ...extra,
    });
  }
  return new pg.Pool({ ...context.pgConfig(variant), ...common });
}

/** Opens `count` connections at once and returns them to the pool; resolves with the time taken (ms). */
export async function fill(pool: pg.Pool, count: number): Promise<number> {
  const started = nowMs();
  const clients = await Promise.all(Array.from({ length: count }, () => pool.connect()));
  const elapsed = nowMs() - started;
  for (const client of clients) client.release();
  return elapsed;
}

/**
 * Runs `concurrency` callers, each issuing `query` through `pool.query` back
 * to back, for `durationMs`; resolves with completed queries per second.
 */
export async function runLoad(
  pool: pg.Pool,
  query: QueryName,
  concurrency: number,
  durationMs: number,
  rows: number,
): Promise<number> {
  const { text } = QUERIES[query];
  let completed = 0;
  let seed = 1;
  const started = nowMs();
  const deadline = started + durationMs;
  const caller = async () => {
    while (nowMs() < deadline) {
      if (query === 'read') {
        // A cheap deterministic spread of ids, so every caller reads different rows.
        seed = (seed * 48271) % 2147483647;
        await pool.query(text, [(seed % rows) + 1]);
      } else {
        await pool.query(text);
      }
      completed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, caller));
  return (completed * 1000) / (nowMs() - started);
}
