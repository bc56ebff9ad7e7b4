/**
 * The engine thread's own side of its message protocol (engine-thread.ts),
 * driven directly: a real engine thread started with the workerData
 * engine-worker.ts gives it, but with this test's own warm-up count and its
 * own count of real verifications in flight, so the test decides when "a real
 * verification is in flight in the process" and sees when the thread waits on
 * that count (Atomics.notify reports how many waiters it woke). Real engines,
 * the real v4 fixture. Postgres-free.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { afterEach, describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { normalizeCollateral } from '../src/verification/collateral.js';
import { PINNED_VERSION } from '../src/verification/engines/dcap-qvl-parse-cache.js';
import type { EngineName } from '../src/verification/engines/engine.js';
import type { EngineReply, EngineRequest } from '../src/verification/engines/engine-worker.js';

const FIXTURE = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE)));
const collateral = normalizeCollateral(
  JSON.parse(readFileSync(new URL('collateral.json', FIXTURE), 'utf8')),
);
const NOW_SECONDS = 1751328000;

type Request = EngineRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

/** An engine thread of this test's own, and the count of real verifications it is told are in flight. */
class Thread {
  readonly inFlight = new Int32Array(new SharedArrayBuffer(4));
  readonly #worker: Worker;
  readonly #waiting = new Map<number, (reply: EngineReply) => void>();
  #nextId = 1;

  constructor(engine: EngineName, warmVerifications: number, inFlight = 0) {
    Atomics.store(this.inFlight, 0, inFlight);
    // As engine-worker.ts does under tsx: the worker registers tsx before importing the source.
    const source = JSON.stringify(
      new URL('../src/verification/engines/engine-thread.ts', import.meta.url).href,
    );
    const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
    this.#worker = new Worker(
      `import(${tsx}).then((api) => { api.register(); return import(${source}); });`,
      { eval: true, workerData: { engine, warmVerifications, realInFlight: this.inFlight } },
    );
    this.#worker.on('message', (reply: EngineReply) => {
      this.#waiting.get(reply.id)?.(reply);
      this.#waiting.delete(reply.id);
    });
  }

  request(request: Request): { id: number; reply: Promise<EngineReply> } {
    const id = this.#nextId++;
    const reply = new Promise<EngineReply>((resolve) => this.#waiting.set(id, resolve));
    this.#worker.postMessage({ ...request, id });
    return { id, reply };
  }

  verify(fields: Partial<Extract<Request, { kind: 'verify' }>> = {}) {
    return this.request({
      kind: 'verify',
      quote,
      collateralId: 1,
      collateral,
      nowSeconds: NOW_SECONDS,
      rootCa: undefined,
      ...fields,
    });
  }

  async status(afterWarmUp = false) {
    const reply = await this.request({ kind: 'status', afterWarmUp }).reply;
    assert.ok(reply.ok && reply.status !== undefined, JSON.stringify(reply));
    return reply.status;
  }

  /** Ends the count of real verifications in flight (as the last one ending does). */
  release(): void {
    Atomics.store(this.inFlight, 0, 0);
    Atomics.notify(this.inFlight, 0);
  }

  /**
   * Whether the thread comes to wait on the in-flight count before `settled`
   * settles. Each probe wakes a waiter, which (count unchanged) waits again.
   */
  async waitsBefore(settled: Promise<unknown>): Promise<boolean> {
    let done = false;
    void settled.finally(() => {
      done = true;
    });
    while (!done) {
      if (Atomics.notify(this.inFlight, 0) > 0) return true;
      await nextTurn();
    }
    return false;
  }

  terminate(): Promise<number> {
    return this.#worker.terminate();
  }
}

const threads: Thread[] = [];
function thread(engine: EngineName, warmVerifications: number, inFlight = 0): Thread {
  const started = new Thread(engine, warmVerifications, inFlight);
  threads.push(started);
  return started;
}
afterEach(async () => {
  await Promise.all(threads.splice(0).map((started) => started.terminate()));
});

describe('engine thread: warm-up and the real verifications in flight in the process', () => {
  it('no warm-up round runs while a real verification is in flight; it runs once none is', async () => {
    const js = thread('js', 1, 1);
    const warmUp = js.request({ kind: 'warmUp' });
    assert.equal(await js.waitsBefore(warmUp.reply), true, 'the round waits for the real one');
    assert.deepEqual(await js.status(), {
      verifications: 0,
      warmedUp: false,
      parseCache: { active: true, version: PINNED_VERSION },
    });
    js.release();
    assert.deepEqual(await warmUp.reply, { id: warmUp.id, ok: true });
    assert.deepEqual(await js.status(true), {
      verifications: 1,
      warmedUp: true,
      parseCache: { active: true, version: PINNED_VERSION },
    });
  });

  it('one of two real verifications ending does not start a round: it waits for the other', async () => {
    const wasm = thread('wasm', 1, 2);
    const warmUp = wasm.request({ kind: 'warmUp' });
    assert.equal(await wasm.waitsBefore(warmUp.reply), true);
    Atomics.store(wasm.inFlight, 0, 1);
    Atomics.notify(wasm.inFlight, 0);
    assert.equal(await wasm.waitsBefore(warmUp.reply), true, 'still waiting for the other');
    wasm.release();
    assert.deepEqual(await warmUp.reply, { id: warmUp.id, ok: true });
    assert.deepEqual(await wasm.status(true), { verifications: 1, warmedUp: true });
  });

  it('a real verification that never ends holds a round back for a while, not for ever', async () => {
    const js = thread('js', 2, 1);
    const warmUp = js.request({ kind: 'warmUp' });
    assert.deepEqual(await warmUp.reply, { id: warmUp.id, ok: true });
    assert.deepEqual(await js.status(true), {
      verifications: 2,
      warmedUp: true,
      parseCache: { active: true, version: PINNED_VERSION },
    });
  });

  it('with no real verification in flight, warm-up never waits on the count', async () => {
    const wasm = thread('wasm', 3);
    const warmUp = wasm.request({ kind: 'warmUp' });
    const warm = warmUp.reply.then(() => wasm.status(true));
    assert.equal(await wasm.waitsBefore(warm), false);
    assert.deepEqual(await warm, { verifications: 3, warmedUp: true });
  });

  it('a real verification made while a round waits counts: no round runs past the warm-up count', async () => {
    const js = thread('js', 1, 1);
    const warmUp = js.request({ kind: 'warmUp' });
    assert.equal(await js.waitsBefore(warmUp.reply), true);
    // The thread answers a real verification while its warm-up waits.
    const real = await js.verify().reply;
    assert.ok(real.ok && real.verdict?.status === 'UpToDate', JSON.stringify(real));
    js.release();
    assert.deepEqual(await warmUp.reply, { id: warmUp.id, ok: true });
    assert.equal((await js.status(true)).verifications, 1);
  });

  it('an engine already warm from real verifications answers a warm-up at once, even while one is in flight', async () => {
    const wasm = thread('wasm', 1);
    const real = await wasm.verify().reply;
    assert.ok(real.ok && real.verdict?.engine === 'wasm', JSON.stringify(real));
    Atomics.store(wasm.inFlight, 0, 1);
    const warmUp = wasm.request({ kind: 'warmUp' });
    assert.equal(await wasm.waitsBefore(warmUp.reply), false);
    assert.deepEqual(await warmUp.reply, { id: warmUp.id, ok: true });
    assert.deepEqual(await wasm.status(true), { verifications: 1, warmedUp: true });
  });
});

describe('engine thread: the collateral sets it holds', () => {
  it('refuses a verification naming a set it was never sent, saying the quote was not verified', async () => {
    const js = thread('js', 0);
    const { id, reply } = js.verify({ collateralId: 7, collateral: undefined });
    assert.deepEqual(await reply, {
      id,
      ok: false,
      error: {
        code: 'ENGINE_UNAVAILABLE',
        message: 'The js engine thread does not hold collateral set 7; the quote was not verified',
        details: { engine: 'js' },
      },
    });
  });

  it('uses a set sent with the request that forgets it, then no longer holds it', async () => {
    const wasm = thread('wasm', 0);
    const first = await wasm.verify({ collateralId: 3, forget: [3] }).reply;
    assert.ok(first.ok && first.verdict?.status === 'UpToDate', JSON.stringify(first));
    const again = await wasm.verify({ collateralId: 3, collateral: undefined }).reply;
    assert.ok(!again.ok && again.error.code === 'ENGINE_UNAVAILABLE', JSON.stringify(again));
    assert.deepEqual(again.error.details, { engine: 'wasm' });
    assert.match(again.error.message, /^The wasm engine thread does not hold collateral set 3;/);
  });
});

describe('engine thread: one engine per root of trust', () => {
  it("a verification against another root never uses the engine for Intel's root, whichever came first", async () => {
    // An empty root (hex '') is no root of trust: it verifies nothing, Intel's root verifies the fixture.
    for (const emptyFirst of [true, false]) {
      const js = thread('js', 0);
      const byEmpty = () => js.verify({ rootCa: new Uint8Array(0) }).reply;
      const byIntel = () => js.verify().reply;
      const [empty, intel] = emptyFirst
        ? [await byEmpty(), await byIntel()]
        : [await byIntel(), await byEmpty()].reverse();
      assert.equal(empty?.ok, false, `empty root ${emptyFirst ? 'first' : 'second'}`);
      assert.ok(intel?.ok && intel.verdict?.status === 'UpToDate', JSON.stringify(intel));
    }
  });
});
