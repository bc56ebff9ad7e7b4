import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { normalizeCollateral } from '../src/verification/collateral.js';
import {
  COLLATERAL_SETS_PER_THREAD,
  type EngineRequest,
  engineThreadStatus,
  engineWorkers,
  stopEngineThreads,
  ThreadedEngine,
  WARM_VERIFICATIONS,
  warmUpEngines,
  workerExecArgv,
} from '../src/verification/engines/engine-worker.js';

const FIXTURE = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE)));
const collateral = normalizeCollateral(
  JSON.parse(readFileSync(new URL('collateral.json', FIXTURE), 'utf8')),
);
const NOW_SECONDS = 1751328000;
const ADVICE = 'The next verification starts a new thread; if this repeats, reinstall dependencies';

/** The ENGINE_UNAVAILABLE refusal `verdict` ends in (code, message, details). */
async function unavailable(verdict: Promise<unknown>) {
  try {
    await verdict;
  } catch (error) {
    assert.ok(isRaTlsError(error, 'ENGINE_UNAVAILABLE'), String(error));
    return { message: error.message, details: error.details };
  }
  return assert.fail('accepted');
}

/** Records every request the main thread posts to the running thread of `engine`. */
function recordRequests(engine: 'js' | 'wasm'): EngineRequest[] {
  const worker = engineWorkers().get(engine);
  assert.ok(worker !== undefined);
  const sent: EngineRequest[] = [];
  const post = worker.postMessage.bind(worker);
  worker.postMessage = (request: EngineRequest) => {
    sent.push(request);
    post(request);
  };
  return sent;
}

describe('workerExecArgv: the Node options a thread started from a file inherits', () => {
  it('drops --input-type in both spellings and keeps every other option in order', () => {
    assert.deepEqual(
      workerExecArgv([
        '--enable-source-maps',
        '--input-type',
        'module',
        '--conditions=x',
        '--input-type=commonjs',
        '--max-old-space-size=64',
      ]),
      ['--enable-source-maps', '--conditions=x', '--max-old-space-size=64'],
    );
    assert.deepEqual(workerExecArgv(['--trace-warnings', '--input-type']), ['--trace-warnings']);
    assert.deepEqual(workerExecArgv([]), []);
  });
});

describe('the main-thread side of the engine threads', () => {
  after(() => stopEngineThreads());

  it('a collateral set crosses to a thread once, and at most COLLATERAL_SETS_PER_THREAD are held', async () => {
    await stopEngineThreads();
    await engineThreadStatus('js');
    const sent = recordRequests('js');
    const engine = new ThreadedEngine('js');
    const verify = async (set: typeof collateral) => {
      assert.equal((await engine.verify(quote, set, NOW_SECONDS)).status, 'UpToDate');
      const request = sent.at(-1);
      assert.ok(request?.kind === 'verify');
      return {
        id: request.collateralId,
        sent: request.collateral !== undefined,
        forget: request.forget ?? [],
      };
    };
    const sets = Array.from({ length: COLLATERAL_SETS_PER_THREAD + 1 }, () =>
      Object.freeze({ ...collateral }),
    );
    const first = await verify(sets[0]!);
    assert.deepEqual(first, { id: first.id, sent: true, forget: [] });
    assert.deepEqual(await verify(sets[0]!), { ...first, sent: false }, 'held: only its id');
    const unfrozen = { ...collateral };
    assert.equal((await verify(unfrozen)).sent, true);
    const unfrozenAgain = await verify(unfrozen);
    assert.equal(unfrozenAgain.sent, true, 'a set that may have changed is sent again');

    const ids = [first.id];
    for (const set of sets.slice(1, COLLATERAL_SETS_PER_THREAD - 2)) {
      const request = await verify(set);
      assert.deepEqual(request.forget, []);
      ids.push(request.id);
    }
    // Held: set 0, the unfrozen set, sets 1 to 13 (15). Set 0 used again moves to the end.
    assert.deepEqual(await verify(sets[0]!), { ...first, sent: false });
    const full = await verify(sets[COLLATERAL_SETS_PER_THREAD - 2]!);
    assert.deepEqual(full.forget, [], `${COLLATERAL_SETS_PER_THREAD} sets: none to drop yet`);
    const over = await verify(sets[COLLATERAL_SETS_PER_THREAD - 1]!);
    assert.deepEqual(
      { sent: over.sent, forget: over.forget },
      { sent: true, forget: [unfrozenAgain.id] },
      'one more: the least recently used set is dropped',
    );
    const held = await verify(sets[1]!);
    assert.deepEqual({ sent: held.sent, forget: held.forget }, { sent: false, forget: [] });
    const dropped = await verify(unfrozen);
    assert.deepEqual(
      { sent: dropped.sent, forget: dropped.forget },
      { sent: true, forget: [ids[2]] },
    );
  });

  it('a thread that crashes fails what waits on it, saying how it failed', async () => {
    await stopEngineThreads();
    await engineThreadStatus('js');
    const worker = engineWorkers().get('js');
    assert.ok(worker !== undefined);
    // A message the thread cannot handle throws in it: an uncaught error, then exit.
    worker.postMessage(null);
    const refusal = await unavailable(new ThreadedEngine('js').verify(quote, collateral, 0));
    assert.match(
      refusal.message,
      /^The DCAP engine thread running @phala\/dcap-qvl \(JS\) is unavailable \(it failed: .+\); the quote was not verified\. /,
    );
    assert.ok(refusal.message.endsWith(ADVICE), refusal.message);
    assert.deepEqual(refusal.details, { engine: 'js' });
  });

  it('a WASM thread that exits fails its verification naming the WASM engine and the exit', async () => {
    const verifying = new ThreadedEngine('wasm').verify(quote, collateral, NOW_SECONDS);
    const worker = engineWorkers().get('wasm');
    assert.ok(worker !== undefined);
    await worker.terminate();
    const refusal = await unavailable(verifying);
    assert.match(
      refusal.message,
      /^The DCAP engine thread running @phala\/dcap-qvl-web \(WASM\) is unavailable \(it exited \(code \d+\)\)/,
    );
    assert.ok(refusal.message.endsWith(ADVICE), refusal.message);
    assert.deepEqual(refusal.details, { engine: 'wasm' });
  });

  it('stopping the threads terminates them and says so to what waits', async () => {
    const refused = unavailable(new ThreadedEngine('js').verify(quote, collateral, NOW_SECONDS));
    const worker = engineWorkers().get('js');
    assert.ok(worker !== undefined);
    let exited = false;
    worker.once('exit', () => {
      exited = true;
    });
    await stopEngineThreads();
    assert.equal(exited, true, 'the worker has exited when stopEngineThreads resolves');
    assert.match((await refused).message, /\(it was stopped\)/);
  });

  it('a request that cannot be sent says so', async () => {
    const unsendable = { ...collateral, tcb_info: () => 'not cloneable' } as never;
    assert.match(
      (await unavailable(new ThreadedEngine('js').verify(quote, unsendable, NOW_SECONDS))).message,
      /\(the request could not be sent: .*could not be cloned.*\)/,
    );
  });

  it('a status asked for without afterWarmUp is answered at once, during the warm-up', async () => {
    await stopEngineThreads();
    const warming = warmUpEngines(['wasm']);
    // The warm-up is posted first, but the thread answers a plain status before loading its engine.
    assert.deepEqual(await engineThreadStatus('wasm'), { verifications: 0, warmedUp: false });
    await warming;
    assert.deepEqual(await engineThreadStatus('wasm', { afterWarmUp: true }), {
      verifications: WARM_VERIFICATIONS.wasm,
      warmedUp: true,
    });
    await stopEngineThreads();
  });
});
