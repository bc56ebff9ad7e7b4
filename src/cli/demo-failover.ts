/**
 * The demo's failover act (docs/protocol.md §7): a local replicated cluster
 * (a leader and a synchronous hot standby on Postgres streaming replication,
 * each behind its own sidecar, and a DNS server with the signed leader
 * manifest), a pool that follows the manifest, and writers that keep writing
 * while the leader is stopped, the standby promoted and the manifest
 * republished. It checks what it prints: the standby is not dialled before the
 * manifest names it, no acknowledged write is lost, and every error callers
 * saw during the switch is typed.
 */

import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { LeaderChangedEvent } from '../cluster/leader-follower.js';
import { isRaTlsError } from '../errors.js';
import { createPool, type RaTlsPool } from '../pool/ra-tls-pool.js';
import { startLocalCluster } from '../testing/cluster/local-cluster.js';

/** Where the act reports, and how it learns the demo was interrupted. */
export interface FailoverActOutput {
  /** A result line under the act's step. */
  detail(text: string): void;
  /** Throws when the demo was asked to stop (the act then stops its cluster). */
  checkpoint(): void;
}

/** Callers writing through the pool at once, as a small service would. */
const WRITERS = 4;
/** Rows written before the failover, and after the pool moved, before the act ends. */
const ROWS_PER_PHASE = 20;
/** A failed write is retried after this long: a caller backing off, not spinning. */
const RETRY_AFTER_MS = 20;
/** The longest the act waits for the pool to write on the new leader before it fails. */
const FOLLOW_DEADLINE_MS = 60_000;

/** Writers inserting increasing ids into demo_failover until stopped. */
class Writers {
  readonly acknowledged: { readonly id: number; readonly at: number }[] = [];
  readonly errors: unknown[] = [];
  readonly #loops: Promise<void>[];
  #next = 0;
  #stopping = false;
  #waiters: { readonly count: number; readonly resolve: () => void }[] = [];

  constructor(pool: RaTlsPool) {
    this.#loops = Array.from({ length: WRITERS }, () => this.#write(pool));
  }

  async #write(pool: RaTlsPool): Promise<void> {
    while (!this.#stopping) {
      const id = this.#next++;
      try {
        await pool.query('INSERT INTO demo_failover (id) VALUES ($1)', [id]);
        this.acknowledged.push({ id, at: performance.now() });
        this.#waiters = this.#waiters.filter((waiter) => {
          if (this.acknowledged.length < waiter.count) return true;
          waiter.resolve();
          return false;
        });
      } catch (error) {
        this.errors.push(error);
        await delay(RETRY_AFTER_MS);
      }
    }
  }

  /** Resolves once `count` writes were acknowledged; rejects after FOLLOW_DEADLINE_MS. */
  async until(count: number, what: string): Promise<void> {
    if (this.acknowledged.length >= count) return;
    const reached = new Promise<void>((resolve) => this.#waiters.push({ count, resolve }));
    const timeout = new AbortController();
    try {
      await Promise.race([
        reached,
        delay(FOLLOW_DEADLINE_MS, undefined, { signal: timeout.signal }).then(() => {
          throw new Error(`${what}: not within ${FOLLOW_DEADLINE_MS / 1000} s`);
        }),
      ]);
    } finally {
      timeout.abort();
    }
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#loops);
  }
}

/** Runs the act; the cluster is stopped whatever happens. */
export async function failoverAct(out: FailoverActOutput): Promise<void> {
  const started = performance.now();
  // Silent: the demo's opening note already says the root of trust is a test one.
  const cluster = await startLocalCluster({ standbys: 1, synchronous: true, logger: () => {} });
  let writers: Writers | undefined;
  let pool: RaTlsPool | undefined;
  try {
    out.detail(
      `cluster up in ${seconds(performance.now() - started)}: a leader and a synchronous hot ` +
        `standby, each behind its own sidecar; DNS serves the signed manifest (epoch ${cluster.epoch})`,
    );
    out.checkpoint();
    const [leader, standby] = cluster.members;
    if (leader === undefined || standby === undefined)
      throw new Error('the cluster has no standby');
    pool = createPool({
      connectionString: cluster.connectionString,
      ...cluster.clientOptions,
      cluster: cluster.clusterOptions,
      max: WRITERS,
    });
    // Idle connections to the stopped leader report here; callers get typed errors.
    pool.on('error', () => {});
    await pool.query('CREATE TABLE demo_failover (id int PRIMARY KEY)');
    writers = new Writers(pool);
    await writers.until(ROWS_PER_PHASE, 'writing on the first leader');
    out.detail(
      `${WRITERS} writers, one pool following the manifest: ${writers.acknowledged.length} rows ` +
        `on leader ${short(leader.instance)}; now the leader is stopped...`,
    );
    out.checkpoint();

    // Not events.once, which would reject on the `error` of a lost idle connection.
    const following = pool;
    const moved = new Promise<LeaderChangedEvent>((resolve) =>
      following.once('leaderChanged', resolve),
    );
    const stoppedAt = performance.now();
    await cluster.stopMember(0);
    const promotingAt = performance.now();
    await cluster.promote(1);
    const dialledEarly = standby.sidecar.stats.accepted;
    const publishedAt = performance.now();
    cluster.publishManifest();
    const before = writers.acknowledged.length;
    // The writes on the new leader can only come after the pool moved (bounded wait).
    await writers.until(before + ROWS_PER_PHASE, 'writing on the new leader');
    const event = await moved;
    await writers.stop();
    const firstWrite = writers.acknowledged.find((write) => write.at > publishedAt)?.at;
    if (dialledEarly !== 0) {
      throw new Error('the pool dialled the standby before the manifest named it leader');
    }

    const { rows } = await pool.query<{ id: number }>('SELECT id FROM demo_failover');
    const stored = new Set(rows.map((row) => row.id));
    const lost = writers.acknowledged.filter((write) => !stored.has(write.id));
    if (lost.length > 0) throw new Error(`${lost.length} acknowledged writes were lost`);
    const untyped = writers.errors.filter(
      (error) => !isRaTlsError(error) && !(error instanceof pg.DatabaseError),
    );
    if (untyped.length > 0) {
      throw new Error(`an untyped error reached a caller: ${String(untyped[0])}`);
    }
    out.detail(
      `stopped in ${ms(promotingAt - stoppedAt)}, standby promoted in ${ms(publishedAt - promotingAt)}, ` +
        `manifest epoch ${event.current.epoch} published; the pool attested ${short(event.current.instance)} ` +
        `and wrote there ${ms((firstWrite ?? Number.NaN) - publishedAt)} later`,
    );
    out.detail(
      `all ${writers.acknowledged.length} acknowledged writes are on the new leader; ` +
        `${writers.errors.length} failed during the switch, each typed: ${codeCounts(writers.errors)}`,
    );
  } finally {
    await writers?.stop();
    await pool?.end();
    await cluster.stop();
  }
}

/** `CONNECT_FAILED ×12, CONNECTION_LOST ×3`: the codes callers saw, most frequent first. */
function codeCounts(errors: readonly unknown[]): string {
  if (errors.length === 0) return 'none';
  const counts = new Map<string, number>();
  for (const error of errors) {
    const code = String((error as { code?: unknown }).code);
    counts.set(code, (counts.get(code) ?? 0) + 1);
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([code, count]) => `${code} ×${count}`)
    .join(', ');
}

function short(instance: string): string {
  return `${instance.slice(0, 12)}…`;
}

function ms(value: number): string {
  return `${Math.round(value)} ms`;
}

function seconds(value: number): string {
  return value < 1000 ? ms(value) : `${(value / 1000).toFixed(1)} s`;
}
