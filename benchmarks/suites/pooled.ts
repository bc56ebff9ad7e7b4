/**
 * Pooled work: throughput at several concurrencies, checkout overhead
 * (fresh, and one that re-attests), and scaling with the pool size.
 */
import type pg from 'pg';
import type { BenchContext } from '../lib/context.js';
import {
  createVariantPool,
  fill,
  POOL_LABELS,
  POOL_VARIANTS,
  type PoolVariant,
  QUERIES,
  type QueryName,
  runLoad,
} from '../lib/pools.js';
import type { Row, Section } from '../lib/results.js';
import { interleave, median, nowMs, p95, pairedDifference, ratioWithSpread } from '../lib/stats.js';

/** How much to measure. */
export interface PooledSettings {
  readonly rounds: number;
  /** Pool size of the throughput and checkout runs. */
  readonly poolSize: number;
  readonly concurrencies: readonly number[];
  /** Concurrencies of the 10k-row read (bulk bytes). */
  readonly bulkConcurrencies: readonly number[];
  /** Duration of one load run (one variant, one round), ms. */
  readonly loadMs: number;
  /** Checkouts per variant per round. */
  readonly checkouts: number;
  /** Checkouts that re-attest, per round. */
  readonly reattests: number;
  readonly poolSizes: readonly number[];
  /** Load duration per scaling step, ms. */
  readonly scalingLoadMs: number;
  /** Rounds of the scaling suite (each opens every pool size anew). */
  readonly scalingRounds: number;
}

const THROUGHPUT_METHOD =
  'Pools of the same size, filled and warmed before timing. Each caller loops ' +
  '`pool.query()` for a fixed time; queries/s per run; median over interleaved rounds; ' +
  'ratio = median over rounds of (variant ÷ baseline) in the same round, with the p25–p75 ' +
  "of those per-round ratios. The peers' forwarder: pg.Pool in plaintext to a loopback " +
  'net.Server that attests each sidecar connection (warm) and pipes bytes. Every attested ' +
  "path verifies with engine 'js': the stack's quotes are signed by a test root.";

/** Throughput of every pooled variant for both queries at every concurrency. */
export async function throughputSuite(
  context: BenchContext,
  settings: PooledSettings,
  progress: (line: string) => void,
): Promise<Section> {
  const pools = openPools(context, settings.poolSize);
  const rows: Row[] = [];
  try {
    for (const variant of POOL_VARIANTS) await fill(pools[variant], settings.poolSize);
    for (const query of Object.keys(QUERIES) as QueryName[]) {
      const concurrencies = query === 'bulk' ? settings.bulkConcurrencies : settings.concurrencies;
      for (const concurrency of concurrencies) {
        // Warm-up: JIT, Postgres plan cache, TCP windows.
        for (const variant of POOL_VARIANTS) {
          await runLoad(
            pools[variant],
            query,
            concurrency,
            settings.loadMs / 4,
            context.endpoints.rows,
          );
        }
        const rates = await interleave(settings.rounds, POOL_VARIANTS, (variant) =>
          runLoad(pools[variant], query, concurrency, settings.loadMs, context.endpoints.rows),
        );
        progress(`throughput: ${QUERIES[query].label}, ${concurrency} callers`);
        for (const variant of POOL_VARIANTS) {
          rows.push({
            id: `throughput.${query}.c${concurrency}.${variant}`,
            label: `${QUERIES[query].label}, ${concurrency} callers — ${POOL_LABELS[variant]}`,
            unit: 'q/s',
            median: median(rates[variant]),
            ...ratioWithSpread(rates[variant], rates.sidecarTls),
            ratioTo: POOL_LABELS.sidecarTls,
            samples: rates[variant].length,
          });
        }
        rows.push({
          id: `throughput.${query}.c${concurrency}.raTls.vsForwarder`,
          label: `${QUERIES[query].label}, ${concurrency} callers — RaTlsPool against the peers' forwarder`,
          unit: 'q/s',
          median: median(rates.raTls),
          ...ratioWithSpread(rates.raTls, rates.forwarder),
          ratioTo: POOL_LABELS.forwarder,
          samples: rates.raTls.length,
        });
        rows.push({
          id: `throughput.${query}.c${concurrency}.raTls.vsTls`,
          label: `${QUERIES[query].label}, ${concurrency} callers — RaTlsPool against ordinary TLS`,
          unit: 'q/s',
          median: median(rates.raTls),
          ...ratioWithSpread(rates.raTls, rates.tls),
          ratioTo: POOL_LABELS.tls,
          samples: rates.raTls.length,
        });
      }
    }
  } finally {
    await closePools(pools);
  }
  return {
    id: 'throughput',
    title: `Pooled throughput (pool size ${settings.poolSize})`,
    method: THROUGHPUT_METHOD,
    rows,
  };
}

/** Checkout + release of an idle connection, and a checkout that re-attests. */
export async function checkoutSuite(
  context: BenchContext,
  settings: PooledSettings,
  progress: (line: string) => void,
): Promise<Section> {
  const pools = openPools(context, settings.poolSize);
  const rows: Row[] = [];
  try {
    for (const variant of POOL_VARIANTS) await fill(pools[variant], settings.poolSize);
    const checkoutBatch = async (pool: pg.Pool, count: number) => {
      const started = nowMs();
      for (let i = 0; i < count; i++) (await pool.connect()).release();
      return ((nowMs() - started) * 1000) / count;
    };
    for (const variant of POOL_VARIANTS) await checkoutBatch(pools[variant], settings.checkouts);
    const perCheckout = await interleave(settings.rounds, POOL_VARIANTS, (variant) =>
      checkoutBatch(pools[variant], settings.checkouts),
    );
    progress('checkout: fresh checkouts measured');
    for (const variant of POOL_VARIANTS) {
      rows.push({
        id: `checkout.fresh.${variant}`,
        label: `checkout + release, no re-attestation due — ${POOL_LABELS[variant]}`,
        unit: 'µs',
        median: median(perCheckout[variant]),
        samples: perCheckout[variant].length,
        note: `mean of ${settings.checkouts} sequential checkouts per round`,
      });
    }
    rows.push({
      id: 'checkout.fresh.overhead',
      label: 'RaTlsPool checkout overhead over pg.Pool (same path)',
      unit: 'µs',
      median: pairedDifference(perCheckout.raTls, perCheckout.sidecarTls),
      samples: settings.rounds,
    });
  } finally {
    await closePools(pools);
  }

  // A checkout whose report is older than reattestEvery: one probe handshake
  // and one full verification (collateral cached). The pool's clock is moved
  // past the interval before every checkout, so each one re-attests.
  let clock = Date.now();
  const reattestPool = createVariantPool(context, 'raTls', 1, {
    reattestEvery: '1m',
    now: () => new Date(clock),
  });
  try {
    await fill(reattestPool, 1);
    const times: number[] = [];
    for (let i = 0; i < settings.reattests * settings.rounds; i++) {
      clock += 61_000;
      const started = nowMs();
      (await reattestPool.connect()).release();
      times.push(nowMs() - started);
    }
    progress('checkout: re-attesting checkouts measured');
    rows.push({
      id: 'checkout.reattest.raTls',
      label: 'RaTlsPool checkout that re-attests (probe handshake + full verification)',
      unit: 'ms',
      median: median(times),
      p95: p95(times),
      samples: times.length,
    });
  } finally {
    await reattestPool.end();
  }
  return {
    id: 'checkout',
    title: 'Checkout overhead',
    method:
      'Fresh: a filled, warm pool; `(await pool.connect()).release()` back to back, mean per ' +
      'checkout in a batch, median over interleaved rounds; overhead = median over rounds of ' +
      '(RaTlsPool − pg.Pool through the sidecar). Re-attesting: a pool of one whose clock ' +
      'moves past reattestEvery before every checkout.',
    rows,
  };
}

/** Connect rate and throughput as the pool grows. */
export async function scalingSuite(
  context: BenchContext,
  settings: PooledSettings,
  progress: (line: string) => void,
): Promise<Section> {
  const variants = ['raTls', 'sidecarTls'] as const satisfies readonly PoolVariant[];
  const rows: Row[] = [];
  for (const size of settings.poolSizes) {
    const results = await interleave(settings.scalingRounds, variants, async (variant) => {
      const pool = createVariantPool(context, variant, size);
      try {
        const fillMs = await fill(pool, size);
        const rate = await runLoad(
          pool,
          'select1',
          size,
          settings.scalingLoadMs,
          context.endpoints.rows,
        );
        return { connectRate: (size * 1000) / fillMs, rate };
      } finally {
        await pool.end();
      }
    });
    progress(`scaling: pool size ${size}`);
    const connectRates = (variant: PoolVariant & (typeof variants)[number]) =>
      results[variant].map((result) => result.connectRate);
    const rates = (variant: (typeof variants)[number]) =>
      results[variant].map((result) => result.rate);
    for (const variant of variants) {
      rows.push({
        id: `scaling.connect.n${size}.${variant}`,
        label: `pool of ${size}: opening all ${size} connections at once — ${POOL_LABELS[variant]}`,
        unit: 'conn/s',
        median: median(connectRates(variant)),
        ...ratioWithSpread(connectRates(variant), connectRates('sidecarTls')),
        ratioTo: POOL_LABELS.sidecarTls,
        samples: settings.scalingRounds,
      });
      rows.push({
        id: `scaling.throughput.n${size}.${variant}`,
        label: `pool of ${size}: SELECT 1 with ${size} callers — ${POOL_LABELS[variant]}`,
        unit: 'q/s',
        median: median(rates(variant)),
        ...ratioWithSpread(rates(variant), rates('sidecarTls')),
        ratioTo: POOL_LABELS.sidecarTls,
        samples: settings.scalingRounds,
      });
    }
  }
  return {
    id: 'scaling',
    title: 'Scaling with pool size',
    method:
      'A new pool per step and variant: all connections opened at once (connections/s; the ' +
      'server is known to the process, so a new RaTlsPool reuses its verdict: verdicts are ' +
      'shared by pools of the same verifier and policy), ' +
      'then SELECT 1 with as many callers as connections. Interleaved rounds, medians.',
    rows,
  };
}

function openPools(context: BenchContext, size: number): Record<PoolVariant, pg.Pool> {
  return Object.fromEntries(
    POOL_VARIANTS.map((variant) => [variant, createVariantPool(context, variant, size)]),
  ) as Record<PoolVariant, pg.Pool>;
}

async function closePools(pools: Record<PoolVariant, pg.Pool>): Promise<void> {
  await Promise.all(Object.values(pools).map((pool) => pool.end()));
}
