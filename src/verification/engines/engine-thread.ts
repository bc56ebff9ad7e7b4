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
import type { EngineReply, EngineRequest, EngineThreadStatus } from './engine-worker.js';

const {
  engine: engineName,
  warmVerifications,
  realInFlight,
} = workerData as {
  engine: EngineName;
  /** engine-worker.ts's WARM_VERIFICATIONS for this engine. */
  warmVerifications: number;
  /** engine-worker.ts's REAL_IN_FLIGHT: real verifications the process waits on. */
  realInFlight: Int32Array;
};
const port = parentPort!;

// One engine per root of trust; a process uses one or two roots at most.
const engines = new Map<string, Promise<DcapEngine>>();

function engineFor(rootCa: Uint8Array | undefined): Promise<DcapEngine> {
  // Intel's root under a key no root's hex can be (an empty root's hex is '').
  const key = rootCa === undefined ? 'intel' : toHex(rootCa);
  let engine = engines.get(key);
  // Stryker disable next-line ConditionalExpression: true (a new engine per call) costs memory and time only; verdicts are the same
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

/** Verifications this thread's engine ran so far, warm-up and real. */
let verifications = 0;
let warming: Promise<void> | undefined;
/** Settles when the warm-up loop is over. */
let warmedUp: Promise<void> | undefined;
let warmUpOver = false;

/**
 * Two event-loop turns: a message that arrived while this thread was busy is
 * delivered in the poll phase between them, so a real verification already
 * waiting starts before the next warm-up round.
 */
function yieldToMessages(): Promise<void> {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}

/** Atomics.waitAsync (ES2024; in Node.js since 16). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      array: Int32Array,
      index: number,
      value: number,
      timeoutMs: number,
    ): { value: Promise<string> | string };
  }
).waitAsync;

/**
 * Resolves once no real verification is in flight in any engine thread of
 * the process, so a warm-up round never competes with one for a core (a
 * second at most: warm-up decides nothing, so a miscount may only delay it).
 */
async function realVerificationsDone(): Promise<void> {
  for (let count = Atomics.load(realInFlight, 0); count > 0; ) {
    // A string at once ('not-equal') when the count has changed already, else a promise.
    if ((await waitAsync(realInFlight, 0, count, 1000).value) === 'timed-out') return;
    count = Atomics.load(realInFlight, 0);
  }
}

/**
 * Starts the warm-up once: verifications of the bundled quote, each after a
 * yield to waiting requests and only while no real verification is in flight
 * in the process, until the engine has run
 * engine-worker.ts's WARM_VERIFICATIONS (real ones count). Resolves after the first round
 * (so warm-up keeps the process alive for one verification's time at most);
 * the rest run while the thread is otherwise idle, and a real verification
 * never waits for more than the one round in progress.
 */
function warmUp(): Promise<void> {
  warming ??= new Promise<void>((firstRoundDone) => {
    warmedUp = (async () => {
      const [fixture, engine] = await Promise.all([
        import('./warm-up-fixture.js'),
        engineFor(undefined),
      ]);
      const quote = fromHex(fixture.WARM_UP_QUOTE_HEX);
      while (verifications < warmVerifications) {
        await yieldToMessages();
        await realVerificationsDone();
        if (verifications >= warmVerifications) break;
        verifications++;
        await engine.verify(quote, fixture.WARM_UP_COLLATERAL, fixture.WARM_UP_NOW_SECONDS);
        firstRoundDone();
      }
    })()
      .catch(() => {
        // Warm-up decides nothing; the first real verification reports a broken engine.
      })
      .finally(() => {
        warmUpOver = true;
        firstRoundDone();
      });
  });
  return warming;
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
  verifications++;
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

async function status(afterWarmUp: boolean): Promise<EngineThreadStatus> {
  if (afterWarmUp) await warmedUp;
  if (engineName === 'wasm') return { verifications, warmedUp: warmUpOver };
  // The cache is installed when the engine is constructed: load it to report on it.
  await engineFor(undefined).catch(() => undefined);
  const { parseCacheState } = await import('./dcap-qvl-parse-cache.js');
  const parseCache = parseCacheState();
  return {
    verifications,
    warmedUp: warmUpOver,
    ...(parseCache === undefined ? {} : { parseCache }),
  };
}

port.on('message', (request: EngineRequest) => {
  if (request.kind === 'status') {
    void status(request.afterWarmUp).then((status) =>
      port.postMessage({ id: request.id, ok: true, status }),
    );
    return;
  }
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
  void answer(verify(request, collateral), request.id).then((reply) => port.postMessage(reply));
});
