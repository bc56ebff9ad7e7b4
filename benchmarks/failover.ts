/**
 * Failover time of a cluster pool (docs/protocol.md §7) on the local replicated
 * cluster: 20 callers write through `createPool({ cluster })` while the
 * leader is stopped, a standby promoted and the manifest republished.
 *
 *   node --import tsx benchmarks/failover.ts [--failovers 2] [--async]
 *
 * Reports, per failover: leader stopped → first acknowledged write on the new
 * leader, and its parts (stop, promotion, manifest published → first write);
 * then counts rows to confirm no acknowledged write was lost (synchronous
 * replication unless --async). Reported, never asserted.
 */
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { startLocalCluster } from '../src/testing/cluster/local-cluster.js';

const CALLERS = 20;
const { values } = parseArgs({
  options: { failovers: { type: 'string', default: '2' }, async: { type: 'boolean' } },
});
const failovers = Number(values.failovers);
const synchronous = values.async !== true;

const cluster = await startLocalCluster({
  standbys: failovers,
  synchronous,
  logger: () => {},
});
const pool = createPool({
  connectionString: cluster.connectionString,
  ...cluster.clientOptions,
  cluster: { ...cluster.clusterOptions, lookupTimeout: '1s' },
  max: 10,
  logger: () => {},
});
// Idle connections to a stopped leader report their end here.
pool.on('error', () => {});
const acknowledged: number[] = [];
let failed = 0;
let nextId = 0;
let stopping = false;
/** Set once the old leader is gone: the next acknowledged write is on the new one. */
let armed = false;
let firstWriteAt: number | undefined;
const caller = async () => {
  while (!stopping) {
    const id = nextId++;
    try {
      await pool.query('INSERT INTO failover_bench VALUES ($1)', [id]);
      acknowledged.push(id);
      if (armed && firstWriteAt === undefined) firstWriteAt = performance.now();
    } catch {
      failed++;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
};
const writesAfter = async (count: number) => {
  const target = acknowledged.length + count;
  while (acknowledged.length < target) await new Promise((resolve) => setImmediate(resolve));
};

const rows: string[] = [];
try {
  await pool.query('CREATE TABLE failover_bench (id int PRIMARY KEY)');
  const callers = Array.from({ length: CALLERS }, () => caller());
  await writesAfter(200);
  for (let round = 0; round < failovers; round++) {
    const leader = cluster.primary!;
    const next = cluster.members.find((m) => m.role === 'standby')!;
    const moved = once(pool, 'leaderChanged');
    const stoppedAt = performance.now();
    await cluster.stopMember(leader.index);
    firstWriteAt = undefined;
    armed = true;
    const promotingAt = performance.now();
    await cluster.promote(next.index);
    const publishedAt = performance.now();
    cluster.publishManifest();
    await moved;
    const movedAt = performance.now();
    await writesAfter(1);
    const firstWrite = firstWriteAt!;
    armed = false;
    rows.push(
      `| ${round + 1} | ${ms(firstWrite - stoppedAt)} | ${ms(promotingAt - stoppedAt)} | ` +
        `${ms(publishedAt - promotingAt)} | ${ms(movedAt - publishedAt)} | ${ms(firstWrite - publishedAt)} |`,
    );
    await writesAfter(200);
  }
  stopping = true;
  await Promise.all(callers);
  const client = new pg.Client({
    connectionString: cluster.primary!.superuserUrl.replace(/\/postgres$/, '/teesql'),
  });
  await client.connect();
  const stored = new Set(
    (await client.query<{ id: number }>('SELECT id FROM failover_bench')).rows.map((r) => r.id),
  );
  await client.end();
  const lost = acknowledged.filter((id) => !stored.has(id)).length;
  console.log(
    `Failover of a cluster pool, ${CALLERS} callers writing, ${synchronous ? 'synchronous' : 'asynchronous'} replication\n`,
  );
  console.log(
    '| # | stopped → first write on the new leader | stop | promotion | manifest → pool moved | manifest → first write |',
  );
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const row of rows) console.log(row);
  console.log(
    `\n${acknowledged.length} writes acknowledged, ${failed} failed during switches, ${lost} acknowledged writes lost`,
  );
} finally {
  stopping = true;
  await pool.end();
  await cluster.stop();
}

function ms(value: number): string {
  return `${Math.round(value)} ms`;
}
