/**
 * The body of an engine worker thread (see engine-worker.ts): runs one DCAP
 * engine, named in workerData, off the main thread. Requests are answered in
 * order; the engine module is loaded on the first request, so the main thread
 * never loads @phala/dcap-qvl or @phala/dcap-qvl-web for verification.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { describeCause, RaTlsError } from '../../errors.js';
import { fromHex, toHex } from '../../util/bytes.js';
import type { DcapEngine, EngineName } from './engine.js';
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

async function answer(request: EngineRequest): Promise<EngineReply> {
  try {
    if (request.kind === 'warmUp') {
      const fixture = await import('./warm-up-fixture.js');
      const engine = await engineFor(undefined);
      await engine.verify(
        fromHex(fixture.WARM_UP_QUOTE_HEX),
        fixture.WARM_UP_COLLATERAL,
        fixture.WARM_UP_NOW_SECONDS,
      );
      return { id: request.id, ok: true };
    }
    const engine = await engineFor(request.rootCa);
    const verdict = await engine.verify(request.quote, request.collateral, request.nowSeconds);
    return { id: request.id, ok: true, verdict };
  } catch (cause) {
    const error =
      cause instanceof RaTlsError ? cause : engineFailure(engineName, describeCause(cause));
    return {
      id: request.id,
      ok: false,
      error: { code: error.code, message: error.message, details: { ...error.details } },
    };
  }
}

port.on('message', (request: EngineRequest) => {
  void answer(request).then((reply) => port.postMessage(reply));
});
