/**
 * Each DCAP engine runs in its own persistent worker thread, shared by every
 * verifier of the process: with engine `'both'` the two engines verify
 * concurrently (the cost is the slower engine, not the sum), and no
 * verification blocks the main thread's event loop for the engines' 5–15 ms.
 *
 * A thread is started on first use and unref'd while idle, so it never keeps
 * the process alive; it is ref'd while a verification or warm-up waits on it,
 * so a script whose only work is a verification still gets its answer. When a thread fails
 * (cannot load, crashes, is terminated) every verification waiting on it fails
 * with ENGINE_UNAVAILABLE: never a silent fallback to one engine. The next
 * verification starts a fresh thread.
 */
import type { Worker } from 'node:worker_threads';
import { describeCause, type ErrorCode, RaTlsError } from '../../errors.js';
import type { NormalizedCollateral } from '../collateral.js';
import type { ParseCacheState } from './dcap-qvl-parse-cache.js';
import type { DcapEngine, EngineName, EngineVerdict } from './engine.js';

/**
 * A message to an engine thread. A collateral set crosses to a thread once:
 * later verifications name it by `collateralId` (the thread keeps the last
 * {@link COLLATERAL_SETS_PER_THREAD} sets it was sent; `forget` lists those it
 * may drop), so a verification sends the quote, not ~20 KB of collateral.
 */
export type EngineRequest =
  | {
      readonly id: number;
      readonly kind: 'verify';
      readonly quote: Uint8Array;
      readonly collateralId: number;
      /** Present the first time this thread sees `collateralId`. */
      readonly collateral?: NormalizedCollateral;
      /** The sets the thread may drop (empty when none). */
      readonly forget?: readonly number[];
      readonly nowSeconds: number;
      /** DER of a test root CA (JS engine only). */
      readonly rootCa: Uint8Array | undefined;
    }
  | { readonly id: number; readonly kind: 'warmUp' }
  /** The thread's {@link EngineThreadStatus}; with `afterWarmUp`, once its warm-up is over. */
  | { readonly id: number; readonly kind: 'status'; readonly afterWarmUp: boolean };

/**
 * Verifications (warm-up or real) after which each engine runs at its steady
 * cost, measured on the bundled quote: the JS engine's parse results are kept
 * from the first call (dcap-qvl-parse-cache.ts) and its code is JIT-compiled
 * after ~3–5; the WASM engine's functions are optimised in the background
 * after their first run (wasm-engine.ts) and that code is in place after
 * ~6–10. A small margin on top: every round is CPU the machine's other work
 * (and the other engine's compilation) does not get.
 */
export const WARM_VERIFICATIONS: Readonly<Record<EngineName, number>> = { js: 10, wasm: 12 };

/** What an engine thread reports about itself (diagnostics, tests, benchmarks). */
export interface EngineThreadStatus {
  /** Verifications its engine ran, warm-up and real. */
  readonly verifications: number;
  /** Whether its warm-up has run (to {@link WARM_VERIFICATIONS}, or failed). */
  readonly warmedUp: boolean;
  /** JS engine only: whether dcap-qvl's parse results are kept across calls, or why not. */
  readonly parseCache?: ParseCacheState;
}

/** How many collateral sets a thread holds; a set used again after eviction is sent again. */
export const COLLATERAL_SETS_PER_THREAD = 16;

/** An engine thread's answer: the verdict, or the engine's typed error as plain data. */
export type EngineReply =
  | {
      readonly id: number;
      readonly ok: true;
      readonly verdict?: EngineVerdict;
      readonly status?: EngineThreadStatus;
    }
  | {
      readonly id: number;
      readonly ok: false;
      readonly error: {
        readonly code: ErrorCode;
        readonly message: string;
        readonly details: Record<string, unknown>;
      };
    };

const LABEL: Record<EngineName, string> = {
  wasm: '@phala/dcap-qvl-web (WASM)',
  js: '@phala/dcap-qvl (JS)',
};

/**
 * How many real verifications the process is waiting on, in all engine threads
 * (shared with them): a thread starts a warm-up round only while this is 0, so
 * warm-up never takes a core from a real verification, in its own thread or the other.
 */
const REAL_IN_FLIGHT = new Int32Array(new SharedArrayBuffer(4));

/** Starts the worker running engine-thread. */
function startWorker(engine: EngineName): Worker {
  // Loaded at the first thread started, not when pg-ra-tls is imported.
  const { Worker } = process.getBuiltinModule('node:worker_threads');
  const workerData = {
    engine,
    warmVerifications: WARM_VERIFICATIONS[engine],
    realInFlight: REAL_IN_FLIGHT,
  };
  if (!import.meta.url.endsWith('.ts')) {
    return new Worker(new URL('./engine-thread.js', import.meta.url), {
      workerData,
      execArgv: workerExecArgv(process.execArgv),
    });
  }
  // Only when running from the TypeScript sources under tsx (tests, benchmarks):
  // tsx's --import hooks do not reach a worker's entry point, so the worker
  // registers tsx itself before importing the thread's source.
  const source = JSON.stringify(new URL('./engine-thread.ts', import.meta.url).href);
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return new Worker(
    `import(${tsx}).then((api) => { api.register(); return import(${source}); });`,
    { eval: true, workerData },
  );
}

/**
 * The process's Node options for a thread started from a file: without
 * `--input-type`, which a worker inherits and then refuses for a file entry
 * (`node --input-type=module -e …` importing pg-ra-tls would otherwise fail
 * every verification with ENGINE_UNAVAILABLE).
 */
export function workerExecArgv(execArgv: readonly string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const arg = execArgv[i]!;
    if (arg === '--input-type') i++;
    else if (!arg.startsWith('--input-type=')) kept.push(arg);
  }
  return kept;
}

// One id per collateral object (a fetch or a fixed set), shared by all threads.
const collateralIds = new WeakMap<NormalizedCollateral, number>();
let nextCollateralId = 1;

function collateralId(collateral: NormalizedCollateral): number {
  let id = collateralIds.get(collateral);
  if (id === undefined) {
    id = nextCollateralId++;
    collateralIds.set(collateral, id);
  }
  return id;
}

interface Pending {
  readonly resolve: (reply: EngineReply) => void;
  readonly reject: (error: RaTlsError) => void;
}

class EngineThread {
  readonly engine: EngineName;
  readonly worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #warmedUp: Promise<void> | undefined;
  #dead = false;
  /** Ids of the collateral sets the thread holds, least recently used first. */
  readonly #sent = new Set<number>();

  constructor(engine: EngineName) {
    this.engine = engine;
    this.worker = startWorker(engine);
    this.worker.on('message', (reply: EngineReply) => this.#settle(reply));
    this.worker.on('error', (error) => this.fail(`it failed: ${describeCause(error)}`));
    this.worker.on('messageerror', (error) =>
      this.fail(`a message could not be read: ${describeCause(error)}`),
    );
    this.worker.on('exit', (code) => this.fail(`it exited (code ${code})`));
    // After the listeners: adding a 'message' listener refs the worker's port again.
    this.worker.unref();
  }

  /** Verifies in the thread, sending `collateral` only if the thread does not hold it. */
  verify(
    quote: Uint8Array,
    collateral: NormalizedCollateral,
    nowSeconds: number,
    rootCa: Uint8Array | undefined,
  ): Promise<EngineReply> {
    const id = collateralId(collateral);
    // Only a frozen set (normalizeCollateral's) is known not to have changed since it was sent.
    const held = this.#sent.delete(id) && Object.isFrozen(collateral);
    this.#sent.add(id);
    const forget: number[] = [];
    for (const old of this.#sent) {
      if (this.#sent.size - forget.length <= COLLATERAL_SETS_PER_THREAD) break;
      forget.push(old);
    }
    for (const old of forget) this.#sent.delete(old);
    return this.request({
      kind: 'verify',
      quote,
      collateralId: id,
      ...(held ? {} : { collateral }),
      forget,
      nowSeconds,
      rootCa,
    });
  }

  request(request: DistributiveOmit<EngineRequest, 'id'>): Promise<EngineReply> {
    if (this.#dead) return Promise.reject(this.#unavailable('it has stopped'));
    const id = this.#nextId++;
    return new Promise<EngineReply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      // Whoever awaits an answer keeps the process alive until it comes (ref() is not counted).
      this.worker.ref();
      try {
        this.worker.postMessage({ ...request, id });
      } catch (cause) {
        this.#sent.clear(); // whatever this message carried did not arrive
        this.#pending.delete(id);
        if (this.#pending.size === 0) this.worker.unref();
        reject(this.#unavailable(`the request could not be sent: ${describeCause(cause)}`));
      }
    });
  }

  /** The thread's one warm-up (verifications of the bundled quote), started on first call. */
  warmUp(): Promise<void> {
    this.#warmedUp ??= this.request({ kind: 'warmUp' }).then(() => undefined);
    return this.#warmedUp;
  }

  /** Rejects everything waiting with ENGINE_UNAVAILABLE; the thread is not used again. */
  fail(why: string): void {
    if (!this.#dead) {
      this.#dead = true;
      if (threads.get(this.engine) === this) threads.delete(this.engine);
      this.worker.unref();
    }
    const error = this.#unavailable(why);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const entry of pending) entry.reject(error);
  }

  #settle(reply: EngineReply): void {
    const entry = this.#pending.get(reply.id);
    if (entry === undefined) return;
    this.#pending.delete(reply.id);
    if (this.#pending.size === 0) this.worker.unref();
    entry.resolve(reply);
  }

  #unavailable(why: string): RaTlsError {
    return new RaTlsError(
      'ENGINE_UNAVAILABLE',
      `The DCAP engine thread running ${LABEL[this.engine]} is unavailable (${why}); the quote was not verified. ` +
        'The next verification starts a new thread; if this repeats, reinstall dependencies',
      { details: { engine: this.engine } },
    );
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

const threads = new Map<EngineName, EngineThread>();

function threadFor(engine: EngineName): EngineThread {
  let thread = threads.get(engine);
  if (thread === undefined) {
    try {
      thread = new EngineThread(engine);
    } catch (cause) {
      throw new RaTlsError(
        'ENGINE_UNAVAILABLE',
        `The DCAP engine thread for ${LABEL[engine]} could not be started: ${describeCause(cause)}`,
        { cause, details: { engine } },
      );
    }
    threads.set(engine, thread);
  }
  return thread;
}

/** A {@link DcapEngine} whose verifications run in the process's thread for that engine. */
export class ThreadedEngine implements DcapEngine {
  readonly name: EngineName;
  readonly #rootCa: Uint8Array | undefined;

  /** `rootCa` (JS engine only) replaces Intel's SGX Root CA: only for test roots of trust. */
  constructor(name: EngineName, rootCa?: Uint8Array) {
    this.name = name;
    this.#rootCa = rootCa === undefined ? undefined : new Uint8Array(rootCa);
  }

  async verify(
    quote: Uint8Array,
    collateral: NormalizedCollateral,
    nowSeconds: number,
  ): Promise<EngineVerdict> {
    Atomics.add(REAL_IN_FLIGHT, 0, 1);
    let reply: EngineReply;
    try {
      reply = await threadFor(this.name).verify(quote, collateral, nowSeconds, this.#rootCa);
    } finally {
      Atomics.sub(REAL_IN_FLIGHT, 0, 1);
      Atomics.notify(REAL_IN_FLIGHT, 0);
    }
    if (!reply.ok) {
      throw new RaTlsError(reply.error.code, reply.error.message, {
        details: reply.error.details,
      });
    }
    if (reply.verdict?.engine !== this.name) {
      throw new RaTlsError(
        'ENGINE_UNAVAILABLE',
        `The DCAP engine thread for ${LABEL[this.name]} answered without a verdict of that engine`,
        { details: { engine: this.name } },
      );
    }
    return reply.verdict;
  }
}

/**
 * Starts the threads of `engines` (if not running) and has each verify a
 * bundled quote in the background, so that the first real verification runs
 * at steady-state cost. Resolves after each thread's first such verification;
 * the thread goes on while idle until its engine has run
 * {@link WARM_VERIFICATIONS} (real ones count), yielding to a real verification
 * before each round (engine-thread.ts). Never rejects: a thread that cannot start
 * fails the verifications that need it instead. Like a verification, a warm-up
 * keeps the process alive until it resolves (one verification's time), never longer.
 */
export function warmUpEngines(engines: readonly EngineName[]): Promise<void> {
  return Promise.all(
    engines.map(async (engine) => {
      try {
        await threadFor(engine).warmUp();
      } catch {
        // Reported by the first verification that needs this engine.
      }
    }),
  ).then(() => undefined);
}

/**
 * The status of the running thread of `engine` (started if it is not); with
 * `afterWarmUp`, answered once its warm-up is over (at once if none was asked for).
 */
export async function engineThreadStatus(
  engine: EngineName,
  options: { readonly afterWarmUp?: boolean } = {},
): Promise<EngineThreadStatus> {
  const reply = await threadFor(engine).request({
    kind: 'status',
    afterWarmUp: options.afterWarmUp ?? false,
  });
  if (!reply.ok || reply.status === undefined) {
    throw new RaTlsError('ENGINE_UNAVAILABLE', `The ${LABEL[engine]} thread gave no status`, {
      details: { engine },
    });
  }
  return reply.status;
}

/**
 * Stops every engine thread (verifications waiting on one fail with
 * ENGINE_UNAVAILABLE); the next verification starts new ones. Threads never
 * keep the process alive, so this is needed only where a test asserts that no
 * worker remains.
 */
export async function stopEngineThreads(): Promise<void> {
  const stopping = [...threads.values()];
  for (const thread of stopping) thread.fail('it was stopped');
  await Promise.all(stopping.map((thread) => thread.worker.terminate()));
}

/** The running engine threads' workers (for tests). */
export function engineWorkers(): ReadonlyMap<EngineName, Worker> {
  return new Map([...threads].map(([engine, thread]) => [engine, thread.worker]));
}
