/**
 * Connection setup: from `new Client()` to a Postgres session ready for
 * queries, one connection at a time, for every path (see lib/context.ts).
 */
import pg from 'pg';
import { AttestedConnector } from '../../src/connection/attested-connector.js';
import { RaTlsClient } from '../../src/connection/ra-tls-client.js';
import { type BenchContext, STACK_ENGINE } from '../lib/context.js';
import type { Row, Section } from '../lib/results.js';
import { interleave, median, nowMs, p95, quantile, ratioWithSpread } from '../lib/stats.js';

/** How much to measure. */
export interface ConnectSettings {
  readonly rounds: number;
  /** Connects per variant per round. */
  readonly connectsPerRound: number;
  /** Cold connects (with a collateral fetch) per round: each costs a full verification. */
  readonly coldPerRound: number;
}

const VARIANTS = [
  'plain',
  'tls',
  'sidecarTls',
  'forwarderWarm',
  'raTlsCold',
  'raTlsColdCachedCollateral',
  'raTlsWarm',
] as const;
type Variant = (typeof VARIANTS)[number];

const LABELS: Record<Variant, string> = {
  plain: 'pg, plain TCP → Postgres',
  tls: 'pg, ordinary TLS (sslmode=require) → Postgres',
  sidecarTls: 'pg, mutual TLS → sidecar, no verification',
  forwarderWarm: "pg, plain → the peers' loopback forwarder → sidecar, verification cached",
  raTlsCold: `pg-ra-tls cold: full DCAP verification, collateral fetched from the PCCS (${STACK_ENGINE})`,
  raTlsColdCachedCollateral: `pg-ra-tls cold: full DCAP verification, collateral cached (${STACK_ENGINE})`,
  raTlsWarm: 'pg-ra-tls warm: verification cached by fingerprint',
};

/** Measures connection setup latency of every variant in interleaved rounds. */
export async function connectSuite(
  context: BenchContext,
  settings: ConnectSettings,
  progress: (line: string) => void,
): Promise<Section> {
  const sidecarUrl = context.endpoints.sidecarUrl;
  const attestation = { policy: context.policy, clientIdentity: context.identity };
  const warm = new AttestedConnector({ verifier: context.sharedVerifier, ...attestation });

  const connectOnce = async (variant: Variant): Promise<number> => {
    let client: pg.Client;
    let connector: AttestedConnector | undefined;
    const started = nowMs();
    if (variant === 'forwarderWarm') {
      client = new pg.Client(context.pgConfig('forwarder'));
    } else if (variant === 'plain' || variant === 'tls' || variant === 'sidecarTls') {
      client = new pg.Client(context.pgConfig(variant));
    } else {
      if (variant === 'raTlsCold') {
        connector = new AttestedConnector({ verifier: context.newVerifier(), ...attestation });
      } else if (variant === 'raTlsColdCachedCollateral') {
        connector = new AttestedConnector({ verifier: context.sharedVerifier, ...attestation });
      }
      client = new RaTlsClient({ connectionString: sidecarUrl, connector: connector ?? warm });
    }
    await client.connect();
    const elapsed = nowMs() - started;
    await client.end();
    connector?.close();
    return elapsed;
  };

  // Prime what "warm" means (one verification, collateral fetched) outside the timing.
  await connectOnce('raTlsWarm');
  await connectOnce('forwarderWarm');
  const samples = await interleave(settings.rounds, VARIANTS, async (variant, round) => {
    const count = variant === 'raTlsCold' ? settings.coldPerRound : settings.connectsPerRound;
    const times: number[] = [];
    for (let i = 0; i < count; i++) times.push(await connectOnce(variant));
    if (variant === VARIANTS[0]) progress(`connect: round ${round + 1}/${settings.rounds}`);
    return times;
  });
  warm.close();

  const roundMedians = (variant: Variant) => samples[variant].map((times) => median(times));
  const all = (variant: Variant) => samples[variant].flat();
  const rows: Row[] = VARIANTS.map((variant) => ({
    id: `connect.${variant}`,
    label: LABELS[variant],
    unit: 'ms',
    median: median(roundMedians(variant)),
    spreadP25: quantile(roundMedians(variant), 0.25),
    spreadP75: quantile(roundMedians(variant), 0.75),
    p95: p95(all(variant)),
    ...ratioWithSpread(roundMedians(variant), roundMedians('tls')),
    ratioTo: LABELS.tls,
    samples: all(variant).length,
  }));
  for (const variant of [
    'forwarderWarm',
    'raTlsCold',
    'raTlsColdCachedCollateral',
    'raTlsWarm',
  ] as const) {
    rows.push({
      id: `connect.${variant}.vsSidecarTls`,
      label: `${LABELS[variant]} — against the same path`,
      unit: 'ms',
      median: median(roundMedians(variant)),
      ...ratioWithSpread(roundMedians(variant), roundMedians('sidecarTls')),
      ratioTo: LABELS.sidecarTls,
      samples: all(variant).length,
    });
  }
  return {
    id: 'connect',
    title: 'Connection setup',
    method:
      'Time from `new Client()` to `await client.connect()` resolving (session ready), one ' +
      'connection at a time, each closed before the next. Median of per-round medians; p95 ' +
      'over all samples; ratio = median over rounds of (variant ÷ baseline) in the same round. ' +
      'Every sidecar path includes the sidecar verifying the client certificate (server side, ' +
      'another process).',
    rows,
  };
}
