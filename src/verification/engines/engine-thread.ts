/**
 * The body of an engine worker thread (see engine-worker.ts): runs one DCAP
 * engine, named in workerData, off the main thread. Requests are answered in
 * order; the engine module is loaded on the first request, so the main thread
 * never loads @phala/dcap-qvl or @phala/dcap-qvl-web for verification.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { describeCause, RaTlsError } from '../../errors.js';
import { fromHex, toHex } from '../../util/bytes.js';
import type { NormalizedCollateral } from '../collateral.js';
import type { DcapEngine, EngineName, EngineVerdict } from './engine.js';
import { engineFailure } from './engine.js';
import type { EngineReply, EngineRequest } from './engine-worker.js';

const engineName = (workerData as { engine: EngineName }).engine;
const port = parentPort!;

// One engine per root of trust; a process uses one or two roots at most.
const engines = new Map<string, Promise<DcapEngine>>();

function engineFor(rootCa: Uint8Array | undefined): Promise<DcapEngine> {
  const key = rootCa === undefined ? '' : toHex(rootCa);
  let engine = engines.get(key);
  if (engine === undefined) {
    engine =
      engineName === 'js'
        ? import('./js-engine.js').then(({ JsEngine }) => new JsEngine(rootCa))
        : import('./wasm-engine.js').then(async ({ initWasmEngine, WasmEngine }) => {
            await initWasmEngine();
            return new WasmEngine();
          });
    engine.catch(() => engines.delete(key));
    engines.set(key, engine);
  }
  return engine;
}

/** The collateral sets this thread was sent, by id (engine-worker.ts keeps the same set). */
const collaterals = new Map<number, NormalizedCollateral>();

type Verify = Extract<EngineRequest, { kind: 'verify' }>;

/**
 * Verifications of the bundled quote after the first: measured, the engines
 * reach steady-state speed after 5–10 calls (JIT and WASM tier-up), so one
 * warm-up call leaves the next real verification 2–4× slower than steady.
 */
const EXTRA_WARM_UP_ROUNDS = 8;

/** False once real work has arrived: it warms the engine itself, so warm-up rounds stop. */
let warmUpWanted = true;

async function warmUp(): Promise<void> {
  const [fixture, engine] = await Promise.all([
    import('./warm-up-fixture.js'),
    engineFor(undefined),
  ]);
  const round = () =>
    engine.verify(
      fromHex(fixture.WARM_UP_QUOTE_HEX),
      fixture.WARM_UP_COLLATERAL,
      fixture.WARM_UP_NOW_SECONDS,
    );
  // A real verification waiting for the engine warms it just as well: do not make it wait longer.
  if (!warmUpWanted) return;
  await round();
  // The caller is answered now (so warm-up never keeps a process alive longer than one
  // verification); the further rounds run while the thread is otherwise idle, each
  // yielding first so that a real request never waits for more than one of them.
  void (async () => {
    for (let i = 0; i < EXTRA_WARM_UP_ROUNDS; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      if (!warmUpWanted) return;
      await round();
    }
  })().catch(() => {
    // Warm-up decides nothing; the first real verification reports a broken engine.
  });
}

async function verify(
  request: Verify,
  collateral: NormalizedCollateral | undefined,
): Promise<EngineVerdict> {
  if (collateral === undefined) {
    throw new RaTlsError(
      'ENGINE_UNAVAILABLE',
      `The ${engineName} engine thread does not hold collateral set ${request.collateralId}; the quote was not verified`,
      { details: { engine: engineName } },
    );
  }
  const engine = await engineFor(request.rootCa);
  return engine.verify(request.quote, collateral, request.nowSeconds);
}

async function answer(work: Promise<EngineVerdict | undefined>, id: number): Promise<EngineReply> {
  try {
    const verdict = await work;
    return verdict === undefined ? { id, ok: true } : { id, ok: true, verdict };
  } catch (cause) {
    const error =
      cause instanceof RaTlsError ? cause : engineFailure(engineName, describeCause(cause));
    return {
      id,
      ok: false,
      error: { code: error.code, message: error.message, details: { ...error.details } },
    };
  }
}

port.on('message', (request: EngineRequest) => {
  if (request.kind === 'warmUp') {
    void answer(
      warmUp().then(() => undefined),
      request.id,
    ).then((reply) => port.postMessage(reply));
    return;
  }
  // Synchronously, in arrival order: a later message may make this thread forget a set.
  if (request.collateral !== undefined) collaterals.set(request.collateralId, request.collateral);
  const collateral = collaterals.get(request.collateralId);
  for (const id of request.forget ?? []) collaterals.delete(id);
  warmUpWanted = false;
  void answer(verify(request, collateral), request.id).then((reply) => port.postMessage(reply));
});
