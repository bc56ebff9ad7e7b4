/**
 * Memory: what one pooled connection and one cached attestation cost the
 * client process. Measured after forced garbage collections, as the growth of
 * V8 heap + external memory (Buffers, ArrayBuffers). OpenSSL's native
 * per-connection state is the same for both pools and is not counted: RSS
 * was tried and measured 0 for whole batches (freed pages are reused).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { AttestationReport } from '../../src/attest/report.js';
import { AttestedConnector } from '../../src/connection/attested-connector.js';
import { clearVerdicts, VerificationCache } from '../../src/connection/verification-cache.js';
import type { BenchContext } from '../lib/context.js';
import { createVariantPool, fill, POOL_LABELS, type PoolVariant } from '../lib/pools.js';
import type { Row, Section } from '../lib/results.js';
import { interleave, median, pairedDifference } from '../lib/stats.js';

/** How much to measure. */
export interface MemorySettings {
  readonly rounds: number;
  /** Connections held open per measurement. */
  readonly connections: number;
  /** Reports held in the cache per measurement. */
  readonly reports: number;
}

interface Footprint {
  /** V8 heap used + external, bytes. */
  readonly heap: number;
}

/** Measures memory per connection (RaTlsPool vs pg.Pool) and per cached attestation report. */
export async function memorySuite(
  context: BenchContext,
  settings: MemorySettings,
  progress: (line: string) => void,
): Promise<Section> {
  const collect = garbageCollector();
  const footprint = async (): Promise<Footprint> => {
    for (let i = 0; i < 3; i++) {
      collect();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const usage = process.memoryUsage();
    return { heap: usage.heapUsed + usage.external };
  };

  const variants = ['raTls', 'sidecarTls'] as const satisfies readonly PoolVariant[];
  const perConnection = await interleave(settings.rounds, variants, async (variant) => {
    // The code paths of opening many connections at once are compiled first,
    // by a pool of their own: V8's compiled code is in the heap figure and
    // was otherwise counted as memory of the connections (heap snapshots: ~12
    // KiB per connection of code in both variants, retained objects alike).
    const warmUp = createVariantPool(context, variant, settings.connections);
    try {
      await fill(warmUp, settings.connections);
    } finally {
      await warmUp.end();
    }
    const pool = createVariantPool(context, variant, settings.connections);
    try {
      // One connection first, so that one-off costs (pool machinery, a verification) are not counted.
      await fill(pool, 1);
      const before = await footprint();
      await fill(pool, settings.connections);
      const after = await footprint();
      const opened = settings.connections - 1;
      return { heap: (after.heap - before.heap) / opened };
    } finally {
      await pool.end();
    }
  });
  progress('memory: per connection measured');

  // Real reports: one verified by the stack, then copied with distinct
  // fingerprints (each copy owns its strings, as reports of distinct
  // certificates would) into a real VerificationCache.
  const connector = new AttestedConnector({
    verifier: context.sharedVerifier,
    policy: context.policy,
    clientIdentity: context.identity,
  });
  const target = {
    host: context.endpoints.sidecar.host,
    port: context.endpoints.sidecar.port,
    connectTimeoutMs: 10_000,
    handshakeTimeoutMs: 10_000,
  };
  const probe = await connector.probe(target);
  const { report } = await connector.verifyCertificate(probe.certificateDer);
  connector.close();
  const perReport: number[] = [];
  for (let round = 0; round < settings.rounds; round++) {
    const cache = new VerificationCache({ maxAgeMs: 3_600_000 });
    const before = await footprint();
    for (let i = 0; i < settings.reports; i++) {
      const copy: AttestationReport = {
        ...structuredClone(report),
        fingerprint: `${i.toString(16).padStart(8, '0')}${report.fingerprint.slice(8)}`,
      };
      await cache.verify(copy.fingerprint, async () => copy);
    }
    const after = await footprint();
    perReport.push((after.heap - before.heap) / settings.reports);
    if (cache.size !== settings.reports) throw new Error('the cache did not keep every report');
    // Verdicts are process wide: the copies must not outlive the round (nor
    // stay in the heap of the suites after this one).
    clearVerdicts();
  }
  progress('memory: per cached attestation measured');

  const kib = (bytes: number) => bytes / 1024;
  const rows: Row[] = [];
  for (const variant of variants) {
    rows.push({
      id: `memory.connection.heap.${variant}`,
      label: `per connection, heap + external — ${POOL_LABELS[variant]}`,
      unit: 'KiB',
      median: kib(median(perConnection[variant].map((sample) => sample.heap))),
      samples: settings.rounds,
    });
  }
  rows.push({
    id: 'memory.connection.heap.overhead',
    label: 'RaTlsPool heap + external per connection over pg.Pool (same path)',
    unit: 'KiB',
    median: kib(
      pairedDifference(
        perConnection.raTls.map((sample) => sample.heap),
        perConnection.sidecarTls.map((sample) => sample.heap),
      ),
    ),
    samples: settings.rounds,
  });
  rows.push({
    id: 'memory.report',
    label: 'per cached attestation report (VerificationCache entry)',
    unit: 'KiB',
    median: kib(median(perReport)),
    samples: settings.rounds,
    note: `${settings.reports} reports per round`,
  });
  return {
    id: 'memory',
    title: 'Memory',
    method:
      `Growth after forced GC while ${settings.connections - 1} more connections are opened ` +
      '(a pool holding one already, after another pool of the same variant opened as many and ' +
      'was ended, so code compiled on first use is not counted), divided by their number; ' +
      'cached reports likewise.',
    rows,
  };
}

/** `global.gc` without restarting Node with --expose-gc. */
function garbageCollector(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed !== undefined) return exposed;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}
