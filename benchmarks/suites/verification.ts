/**
 * Verification alone, without sockets: the DCAP engines on the real Intel
 * TDX v4 fixture (first call in a fresh process, and steady state), collateral
 * fetched vs cached on the stack's test-root quote, and the cheap steps around
 * every verifier (certificate parsing and binding, RTMR3 replay, policy).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { attestCertificate } from '../../src/attest/attest-certificate.js';
import { AttestedConnector } from '../../src/connection/attested-connector.js';
import { checkBinding } from '../../src/evidence/binding.js';
import { readRaTlsCertificate } from '../../src/evidence/certificate.js';
import { parseQuote } from '../../src/evidence/quote.js';
import { verifyAppIdentity } from '../../src/evidence/rtmr3.js';
import { decodeVersionedAttestation } from '../../src/evidence/versioned-attestation.js';
import { applyPolicy, normalizePolicy } from '../../src/policy/policy.js';
import { normalizeCollateral } from '../../src/verification/collateral.js';
import { DcapVerifier } from '../../src/verification/dcap-verifier.js';
import { JsEngine } from '../../src/verification/engines/js-engine.js';
import { PccsClient } from '../../src/verification/pccs-client.js';
import { readPckInfo } from '../../src/verification/pck-info.js';
import type { FirstVerification } from '../first-verification.js';
import { FIXTURE_DIR, FIXTURE_NOW } from '../first-verification.js';
import type { BenchContext } from '../lib/context.js';
import { longestEventLoopBlock } from '../lib/event-loop-block.js';
import type { Row, Section } from '../lib/results.js';
import { interleave, median, nowMs, p95, quantile } from '../lib/stats.js';

/** How much to measure. */
export interface VerificationSettings {
  readonly rounds: number;
  /** Verifications per engine per round. */
  readonly callsPerRound: number;
  /** Fresh processes per engine for the first-call figure. */
  readonly freshProcesses: number;
  /** Collateral fetches (a new verifier each) per round. */
  readonly coldPerRound: number;
  /** Iterations of the sub-millisecond steps per round. */
  readonly microIterations: number;
}

// 'wasm' alone is no longer a configuration (it ignores the QE identity).
const ENGINES = ['js', 'both'] as const;
type Engine = (typeof ENGINES)[number];
const run = promisify(execFile);

/** Measures verification costs; the stack is used only for its test-root quote and PCCS. */
export async function verificationSuite(
  context: BenchContext,
  settings: VerificationSettings,
  progress: (line: string) => void,
): Promise<Section> {
  const rows: Row[] = [];

  // 1. First verification after process start, per engine, in fresh processes.
  const script = fileURLToPath(new URL('../first-verification.ts', import.meta.url));
  const FIRST_MODES = [...ENGINES, 'warm0', 'warm200', 'warmed'] as const;
  const fresh = await interleave(settings.freshProcesses, FIRST_MODES, async (engine) => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', script, engine], {
      timeout: 60_000,
    });
    return JSON.parse(stdout.trim()) as FirstVerification;
  });
  progress('verification: first calls measured');
  for (const engine of ENGINES) {
    const firsts = fresh[engine].map((result) => result.firstMs);
    rows.push({
      id: `verify.first.${engine}`,
      label: `first verification after process start, engine ${engine} (engine load included)`,
      unit: 'ms',
      median: median(firsts),
      samples: firsts.length,
      note: `import of the built package: ${median(fresh[engine].map((r) => r.importMs)).toFixed(0)} ms, not included`,
    });
  }
  const warm0 = fresh.warm0.map((result) => result.firstMs);
  rows.push({
    id: 'verify.first.warm0',
    label:
      "first verification when the query comes at once after pool creation (warmUp started), engine 'both'",
    unit: 'ms',
    median: median(warm0),
    spreadP25: quantile(warm0, 0.25),
    spreadP75: quantile(warm0, 0.75),
    samples: warm0.length,
  });
  const warm200 = fresh.warm200.map((result) => result.firstMs);
  rows.push({
    id: 'verify.first.warm200',
    label:
      "first verification when the query comes 200 ms after pool creation (warmUp started), engine 'both'",
    unit: 'ms',
    median: median(warm200),
    spreadP25: quantile(warm200, 0.25),
    spreadP75: quantile(warm200, 0.75),
    samples: warm200.length,
  });

  const warmed = fresh.warmed;
  const warmUpMs = warmed.map((result) => result.warmUpMs ?? Number.NaN);
  rows.push({
    id: 'verify.warmUp.done',
    label:
      "warm-up of both engine threads, from pool creation until each has run its warm verifications, engine 'both'",
    unit: 'ms',
    median: median(warmUpMs),
    spreadP25: quantile(warmUpMs, 0.25),
    spreadP75: quantile(warmUpMs, 0.75),
    samples: warmUpMs.length,
    note: `CPU of all threads meanwhile: ${median(warmed.map((r) => r.warmUpCpuMs ?? Number.NaN)).toFixed(0)} ms (2 cores)`,
  });
  const warmedRatios = warmed.map((result) => result.firstMs / (result.steadyMs ?? Number.NaN));
  rows.push({
    id: 'verify.first.warmed.vsSteady',
    label:
      "first verification once the warm-up is over ÷ the same process's steady state, engine 'both'",
    unit: 'ms',
    median: median(warmed.map((result) => result.firstMs)),
    ratio: median(warmedRatios),
    ratioP25: quantile(warmedRatios, 0.25),
    ratioP75: quantile(warmedRatios, 0.75),
    ratioTo: "steady-state verification in the same process, engine 'both'",
    samples: warmedRatios.length,
  });

  // 2. Steady state per engine, collateral in memory (the fixture's).
  const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE_DIR)));
  const collateral = JSON.parse(readFileSync(new URL('collateral.json', FIXTURE_DIR), 'utf8'));
  const verifiers = Object.fromEntries(
    ENGINES.map((engine) => [engine, new DcapVerifier({ engine, collateral })]),
  ) as Record<Engine, DcapVerifier>;
  for (const engine of ENGINES) {
    // Let the JIT and the WASM tiers settle before timing.
    for (let i = 0; i < 20; i++) await verifiers[engine].verify(quote, { now: FIXTURE_NOW });
  }
  const steady = await interleave(settings.rounds, ENGINES, async (engine) => {
    const times: number[] = [];
    for (let i = 0; i < settings.callsPerRound; i++) {
      const started = nowMs();
      await verifiers[engine].verify(quote, { now: FIXTURE_NOW });
      times.push(nowMs() - started);
    }
    return times;
  });
  progress('verification: steady state measured');
  for (const engine of ENGINES) {
    const roundMedians = steady[engine].map((times) => median(times));
    rows.push({
      id: `verify.steady.${engine}`,
      label: `DCAP verification, steady state, engine ${engine} (Intel TDX v4 fixture, collateral cached)`,
      unit: 'ms',
      median: median(roundMedians),
      spreadP25: quantile(roundMedians, 0.25),
      spreadP75: quantile(roundMedians, 0.75),
      p95: p95(steady[engine].flat()),
      samples: steady[engine].flat().length,
    });
  }
  // Paired in each fresh process: its first verification ÷ its own steady state
  // (median of six later calls), so a busy phase of the machine hits both alike.
  const firstRatios = fresh.warm200.map(
    (result) => result.firstMs / (result.steadyMs ?? Number.NaN),
  );
  rows.push({
    id: 'verify.first.warm200.vsSteady',
    label:
      "first verification 200 ms after pool creation ÷ the same process's steady state, engine 'both'",
    unit: 'ms',
    median: median(warm200),
    ratio: median(firstRatios),
    ratioP25: quantile(firstRatios, 0.25),
    ratioP75: quantile(firstRatios, 0.75),
    ratioTo: "steady-state verification in the same process, engine 'both'",
    samples: firstRatios.length,
  });

  // 2b. The longest event-loop block while a verification runs (lib/event-loop-block.ts).
  const normalized = normalizeCollateral(collateral, 'BAD_CONFIG');
  const inlineJs = new JsEngine();
  const blockVariants = [...ENGINES, 'inlineJs'] as const;
  const blocks = await interleave(settings.rounds, blockVariants, async (variant) => {
    const gaps: number[] = [];
    for (let i = 0; i < settings.callsPerRound; i++) {
      gaps.push(
        await longestEventLoopBlock(() =>
          variant === 'inlineJs'
            ? inlineJs.verify(quote, normalized, FIXTURE_NOW.getTime() / 1000)
            : verifiers[variant].verify(quote, { now: FIXTURE_NOW }),
        ),
      );
    }
    return gaps;
  });
  progress('verification: event-loop blocks measured');
  for (const variant of blockVariants) {
    const roundMedians = blocks[variant].map((gaps) => median(gaps));
    rows.push({
      id: `verify.eventLoopBlock.${variant}`,
      label:
        variant === 'inlineJs'
          ? 'longest event-loop block during a verification: JS engine on the main thread (before issue 11, context)'
          : `longest event-loop block during a verification, engine ${variant} (engine threads)`,
      unit: 'ms',
      median: median(roundMedians),
      spreadP25: quantile(roundMedians, 0.25),
      spreadP75: quantile(roundMedians, 0.75),
      p95: p95(blocks[variant].flat()),
      samples: blocks[variant].flat().length,
      note: 'median over rounds of the per-round median of each verification’s longest gap',
    });
  }

  // 3. Collateral from the PCCS vs cached, on the stack's test-root quote (JS engine:
  //    the only one that accepts a test root, docs/protocol.md §8).
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
  const { certificateDer, issuersDer } = await connector.probe(target);
  connector.close();
  const certificate = readRaTlsCertificate(certificateDer);
  const stackQuote = certificate.attestation.quote;
  const pccs = new PccsClient({ url: context.endpoints.pccsUrl });
  const pck = readPckInfo(stackQuote);
  const policy = normalizePolicy(context.policy);
  const cached = context.sharedVerifier;
  await cached.verify(stackQuote);
  const collateralVariants = ['fetchOnly', 'coldVerify', 'cachedVerify', 'attest'] as const;
  const collateralRuns = await interleave(settings.rounds, collateralVariants, async (variant) => {
    const times: number[] = [];
    const count = variant === 'cachedVerify' || variant === 'attest' ? settings.callsPerRound : 0;
    for (let i = 0; i < Math.max(count, settings.coldPerRound); i++) {
      const started = nowMs();
      if (variant === 'fetchOnly') await pccs.fetchCollateral(pck);
      else if (variant === 'coldVerify') {
        const verifier = context.newVerifier();
        await verifier.verify(stackQuote);
        verifier.close();
      } else if (variant === 'cachedVerify') await cached.verify(stackQuote);
      else await attestCertificate(certificateDer, { verifier: cached, policy });
      times.push(nowMs() - started);
    }
    return times;
  });
  progress('verification: collateral measured');
  const collateralLabels: Record<(typeof collateralVariants)[number], string> = {
    fetchOnly: 'collateral fetch alone from the local PCCS (4 HTTP requests)',
    coldVerify: 'DCAP verification, collateral fetched (new verifier), engine js, test root',
    cachedVerify: 'DCAP verification, collateral cached, engine js, test root',
    attest:
      'attestCertificate end to end (parse, binding, RTMR3, DCAP js, policy), collateral cached',
  };
  for (const variant of collateralVariants) {
    rows.push({
      id: `verify.collateral.${variant}`,
      label: collateralLabels[variant],
      unit: 'ms',
      median: median(collateralRuns[variant].map((times) => median(times))),
      p95: p95(collateralRuns[variant].flat()),
      samples: collateralRuns[variant].flat().length,
    });
  }

  // 3b. The longest event-loop block of a whole attestation with engine 'js' (the
  //     stack's quote and KMS chain, as a connect captures them): the certificate,
  //     quote and binding, RTMR3, the KMS chain, the strict CRL check and the
  //     policy run on the main thread, the engine in its thread.
  const attestBlocks = await interleave(settings.rounds, ['attest'] as const, async () => {
    const gaps: number[] = [];
    for (let i = 0; i < settings.callsPerRound; i++) {
      gaps.push(
        await longestEventLoopBlock(() =>
          attestCertificate(certificateDer, { verifier: cached, policy, chain: issuersDer }),
        ),
      );
    }
    return gaps;
  });
  const attestRoundMedians = attestBlocks.attest.map((gaps) => median(gaps));
  rows.push({
    id: 'verify.eventLoopBlock.attest',
    label:
      'longest event-loop block during attestCertificate end to end (parse, binding, RTMR3, KMS chain, DCAP js in its thread, strict CRL check, policy), collateral cached',
    unit: 'ms',
    median: median(attestRoundMedians),
    spreadP25: quantile(attestRoundMedians, 0.25),
    spreadP75: quantile(attestRoundMedians, 0.75),
    p95: p95(attestBlocks.attest.flat()),
    samples: attestBlocks.attest.flat().length,
    note: 'median over rounds of the per-round median of each attestation’s longest gap',
  });

  // 4. The steps pg-ra-tls runs around every verifier, per call.
  const dstack = decodeVersionedAttestation(
    readFileSync(
      new URL('../../test/fixtures/dstack-attestation-v0/attestation.bin', import.meta.url),
    ),
  );
  const dstackQuote = parseQuote(dstack.quote);
  const parsedStackQuote = parseQuote(stackQuote);
  const app = verifyAppIdentity(certificate.attestation.runtimeEvents, parsedStackQuote.rtmr3);
  const micro = {
    parse: () => {
      const read = readRaTlsCertificate(certificateDer);
      checkBinding(read, parseQuote(read.attestation.quote));
    },
    rtmr3: () => verifyAppIdentity(dstack.runtimeEvents, dstackQuote.rtmr3),
    policy: () => applyPolicy({ quote: parsedStackQuote, tcbStatus: 'UpToDate', app }, policy),
  };
  const microRuns = await interleave(
    settings.rounds,
    Object.keys(micro) as (keyof typeof micro)[],
    async (step) => {
      const started = nowMs();
      for (let i = 0; i < settings.microIterations; i++) micro[step]();
      return ((nowMs() - started) * 1000) / settings.microIterations;
    },
  );
  const microLabels: Record<keyof typeof micro, string> = {
    parse: 'certificate parsing + quote parsing + key binding (stack certificate)',
    rtmr3: `RTMR3 replay + app identity (${dstack.runtimeEvents.length} events, dstack fixture)`,
    policy: 'applyPolicy (MRTD, app-id, compose-hash pinned)',
  };
  for (const step of Object.keys(micro) as (keyof typeof micro)[]) {
    rows.push({
      id: `verify.micro.${step}`,
      label: microLabels[step],
      unit: 'µs',
      median: median(microRuns[step]),
      samples: settings.rounds,
      note: `${settings.microIterations} calls per round`,
    });
  }
  for (const verifier of Object.values(verifiers)) verifier.close();
  return {
    id: 'verification',
    title: 'Verification alone',
    method:
      'First call: a fresh Node process per sample imports the built package and constructs a DcapVerifier with the fixture ' +
      'collateral and verifies once (WASM instantiation and JIT included, module import ' +
      'excluded). Steady state: after 20 warm-up calls, median of per-round medians. ' +
      'Collateral rows use the local stack’s test-root quote and PCCS (engine js). ' +
      'Sub-millisecond steps: mean per call over a batch, median over rounds. Warm-up rows: a ' +
      'fresh process starts the verifier’s warmUp() (what creating a pool does) and verifies at ' +
      'once, 200 ms later, or once both engine threads report their warm-up over (that row also ' +
      'gives how long the warm-up took); the 200 ms and warm-up rows are judged against the median ' +
      'of six later calls in the same process. Event-loop block: a probe that runs once per turn ' +
      'of the loop (and sleeps 0.1 ms, uncounted, so that it never competes with the engine ' +
      'threads for a core) records the longest gap between two turns of the main loop while one ' +
      'verification runs.',
    rows,
  };
}
