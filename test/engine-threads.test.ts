import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AttestedConnector } from '../src/connection/attested-connector.js';
import { isRaTlsError } from '../src/errors.js';
import { createRaTlsCertificate } from '../src/testing/ra-tls-certificate.js';
import { type Collateral, normalizeCollateral } from '../src/verification/collateral.js';
import { DcapVerifier, verifyWithCollateral } from '../src/verification/dcap-verifier.js';
import { PINNED_VERSION } from '../src/verification/engines/dcap-qvl-parse-cache.js';
import {
  COLLATERAL_SETS_PER_THREAD,
  engineThreadStatus,
  engineWorkers,
  stopEngineThreads,
  ThreadedEngine,
  WARM_VERIFICATIONS,
} from '../src/verification/engines/engine-worker.js';
import { JsEngine } from '../src/verification/engines/js-engine.js';

const FIXTURE = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE)));
const collateral: Collateral = JSON.parse(
  readFileSync(new URL('collateral.json', FIXTURE), 'utf8'),
);
const NOW = new Date(1751328000 * 1000);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Runs `source` (ESM, TypeScript) in a fresh Node.js process; resolves with its exit code and stdout. */
function runScript(
  source: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', source],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk;
    });
    // A process kept alive by an engine thread never exits: stop it and report that.
    const guard = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(guard);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('DCAP engines in worker threads', () => {
  it("with engine 'both' each engine verifies in its own thread, shared by every verifier", async () => {
    await stopEngineThreads();
    const result = await verifyWithCollateral(quote, collateral, NOW, { engine: 'both' });
    assert.equal(result.tcbStatus, 'UpToDate');
    const workers = engineWorkers();
    const wasm = workers.get('wasm');
    const js = workers.get('js');
    assert.ok(wasm !== undefined && js !== undefined, 'one thread per engine');
    assert.notEqual(wasm.threadId, js.threadId);

    const verifier = new DcapVerifier({ collateral, engine: 'both' });
    await verifier.verify(quote, { now: NOW });
    assert.equal(engineWorkers().get('wasm'), wasm, 'the same WASM thread');
    assert.equal(engineWorkers().get('js'), js, 'the same JS thread');
  });

  it('a thread that dies during a verification fails it with ENGINE_UNAVAILABLE, never a one-engine verdict', async () => {
    await stopEngineThreads();
    const verifying = verifyWithCollateral(quote, collateral, NOW, { engine: 'both' });
    // The request is already posted; the new thread cannot have answered within this tick.
    const js = engineWorkers().get('js');
    assert.ok(js !== undefined);
    await js.terminate();
    await assert.rejects(verifying, (error: unknown) => {
      assert.ok(isRaTlsError(error, 'ENGINE_UNAVAILABLE'), String(error));
      assert.match(
        error.message,
        /@phala\/dcap-qvl \(JS\) is unavailable \(it exited \(code \d+\)\)/,
      );
      return true;
    });

    // The next verification starts a new thread and both engines decide again.
    const result = await verifyWithCollateral(quote, collateral, NOW, { engine: 'both' });
    assert.equal(result.verifier, 'dcap:both');
    assert.notEqual(engineWorkers().get('js'), js);
  });

  it('stopping the threads fails waiting verifications with ENGINE_UNAVAILABLE (engine js alone)', async () => {
    const verifying = assert.rejects(
      verifyWithCollateral(quote, collateral, NOW, { engine: 'js' }),
      (error: unknown) => isRaTlsError(error, 'ENGINE_UNAVAILABLE'),
    );
    await stopEngineThreads();
    await verifying;
    assert.equal(engineWorkers().size, 0);
  });

  it('a request that cannot be sent to the thread is ENGINE_UNAVAILABLE and leaves the thread usable', async () => {
    const unsendable = { ...collateral, tcb_info: () => 'not cloneable' } as never;
    await assert.rejects(
      new ThreadedEngine('js').verify(quote, unsendable, 1751328000),
      (error: unknown) => isRaTlsError(error, 'ENGINE_UNAVAILABLE'),
    );
    const result = await verifyWithCollateral(quote, collateral, NOW, { engine: 'js' });
    assert.equal(result.tcbStatus, 'UpToDate');
  });

  it("an engine's refusal crosses the thread as the engine made it: code, message and details", async () => {
    const tampered = normalizeCollateral({
      ...collateral,
      tcb_info_signature: `00${normalizeCollateral(collateral).tcb_info_signature.slice(2)}`,
    });
    const refusal = async (verdict: Promise<unknown>) => {
      try {
        await verdict;
      } catch (error) {
        assert.ok(isRaTlsError(error), String(error));
        return { code: error.code, message: error.message, details: error.details };
      }
      assert.fail('accepted');
    };
    const inProcess = await refusal(new JsEngine().verify(quote, tampered, 1751328000));
    assert.equal(inProcess.code, 'QUOTE_INVALID');
    assert.deepEqual(
      await refusal(new ThreadedEngine('js').verify(quote, tampered, 1751328000)),
      inProcess,
    );
  });

  it('each verification is judged on its own collateral set, also past the sets a thread holds', async () => {
    const normalized = normalizeCollateral(collateral);
    const sets = Array.from({ length: COLLATERAL_SETS_PER_THREAD + 3 }, () =>
      Object.freeze({ ...normalized }),
    );
    const tampered = 5;
    sets[tampered] = Object.freeze({
      ...normalized,
      tcb_info_signature: `00${normalized.tcb_info_signature.slice(2)}`,
    });
    const engine = new ThreadedEngine('js');
    // Twice round: the second pass finds the first sets evicted and sends them again.
    // Each set twice in a row: the second time the thread holds it and gets its id only.
    for (let pass = 0; pass < 2; pass++) {
      for (const [i, set] of sets.entries()) {
        for (let call = 0; call < 2; call++) {
          const verdict = engine.verify(quote, set, 1751328000);
          if (i === tampered) {
            await assert.rejects(verdict, (error: unknown) => isRaTlsError(error, 'QUOTE_INVALID'));
          } else {
            assert.equal(
              (await verdict).status,
              'UpToDate',
              `set ${i}, pass ${pass}, call ${call}`,
            );
          }
        }
      }
    }
  });

  it('warmUp() starts exactly the engines of the verifier and never rejects', async () => {
    await stopEngineThreads();
    await new DcapVerifier({ collateral, engine: 'js' }).warmUp();
    assert.deepEqual([...engineWorkers().keys()], ['js']);
    const both = new DcapVerifier({ collateral });
    await both.warmUp();
    const js = engineWorkers().get('js');
    assert.ok(js !== undefined);
    const result = await both.verify(quote, { now: NOW });
    assert.equal(result.verifier, 'dcap:both');
    assert.equal(engineWorkers().get('js'), js, 'the warmed thread verified');
    await stopEngineThreads();
  });
});

describe('warm-up when a pool or client is created', () => {
  it('each engine thread goes on verifying the bundled quote in the background until it is warm, counting real verifications', async () => {
    await stopEngineThreads();
    try {
      // A real verification first: it counts towards the warm-up, which then stops at the same number.
      await verifyWithCollateral(quote, collateral, NOW, { engine: 'both' });
      await new DcapVerifier({ collateral, engine: 'both' }).warmUp();
      for (const engine of ['js', 'wasm'] as const) {
        const status = await engineThreadStatus(engine, { afterWarmUp: true });
        assert.equal(status.warmedUp, true, engine);
        assert.equal(status.verifications, WARM_VERIFICATIONS[engine], engine);
      }
      // Warm, a thread verifies only what it is asked to.
      await verifyWithCollateral(quote, collateral, NOW, { engine: 'js' });
      assert.equal((await engineThreadStatus('js')).verifications, WARM_VERIFICATIONS.js + 1);
    } finally {
      await stopEngineThreads();
    }
  });

  it("the JS engine's thread keeps dcap-qvl's parse results (the pinned version is installed)", async () => {
    try {
      const status = await engineThreadStatus('js');
      assert.deepEqual(status.parseCache, { active: true, version: PINNED_VERSION });
      assert.equal((await engineThreadStatus('wasm')).parseCache, undefined);
    } finally {
      await stopEngineThreads();
    }
  });

  it("creating a connector starts the verifier's engine threads and warms each once", async () => {
    await stopEngineThreads();
    const client = createRaTlsCertificate({ subject: 'CN=warm-up test' });
    const clientCertOverride = { key: client.privateKeyPem, cert: client.certificatePem };
    let warmUps = 0;
    const verifier = new DcapVerifier({ collateral, engine: 'both' });
    const warmUp = verifier.warmUp.bind(verifier);
    verifier.warmUp = () => {
      warmUps++;
      return warmUp();
    };
    const connector = new AttestedConnector({
      verifier,
      clientCertOverride,
      policy: {},
      logger: () => {},
    });
    try {
      assert.equal(warmUps, 1);
      assert.deepEqual([...engineWorkers().keys()].sort(), ['js', 'wasm']);
      const js = engineWorkers().get('js');
      await verifier.warmUp();
      const again = new AttestedConnector({
        verifier,
        clientCertOverride,
        policy: {},
        logger: () => {},
      });
      again.close();
      assert.equal(engineWorkers().get('js'), js, 'the running thread is reused');
    } finally {
      connector.close();
      await stopEngineThreads();
    }
  });

  it('a verifier whose warmUp throws or rejects does not stop a connector from being created', () => {
    const client = createRaTlsCertificate({ subject: 'CN=warm-up test' });
    const clientCertOverride = { key: client.privateKeyPem, cert: client.certificatePem };
    const base = new DcapVerifier({ collateral, engine: 'js' });
    for (const warmUp of [
      () => {
        throw new Error('boom');
      },
      () => Promise.reject(new Error('boom')),
    ]) {
      const verifier = { name: 'custom', verify: base.verify.bind(base), warmUp };
      new AttestedConnector({ verifier, clientCertOverride, policy: {}, logger: () => {} }).close();
    }
  });
});

// One engine thread per child process: under tsx each thread compiles the sources itself.
describe('engine threads and process exit', () => {
  it('a script whose only work is a verification gets its answer, then exits by itself', async () => {
    const { code, stdout, stderr } = await runScript(`
      import { readFileSync } from 'node:fs';
      import { verifyWithCollateral } from './src/verification/dcap-verifier.ts';
      const dir = './test/fixtures/intel-tdx-v4/';
      const result = await verifyWithCollateral(
        new Uint8Array(readFileSync(dir + 'quote.bin')),
        JSON.parse(readFileSync(dir + 'collateral.json', 'utf8')),
        new Date(1751328000 * 1000),
        { engine: 'js' },
      );
      console.log('status', result.tcbStatus, result.verifier);
    `);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /status UpToDate dcap:js/);
  });

  it('two verifications waiting on one thread both get their answers before the process exits', async () => {
    const { code, stdout, stderr } = await runScript(`
      import { readFileSync } from 'node:fs';
      import { normalizeCollateral } from './src/verification/collateral.ts';
      import { ThreadedEngine } from './src/verification/engines/engine-worker.ts';
      const dir = './test/fixtures/intel-tdx-v4/';
      const quote = new Uint8Array(readFileSync(dir + 'quote.bin'));
      const collateral = normalizeCollateral(JSON.parse(readFileSync(dir + 'collateral.json', 'utf8')));
      const engine = new ThreadedEngine('js');
      const verdicts = await Promise.all([1, 2].map(() => engine.verify(quote, collateral, 1751328000)));
      console.log('statuses', verdicts.map((verdict) => verdict.status).join(' '));
    `);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /statuses UpToDate UpToDate/);
  });

  it('a request that cannot be sent neither lets the process exit under a waiting verification nor keeps it alive', async () => {
    const { code, stdout, stderr } = await runScript(`
      import { readFileSync } from 'node:fs';
      import { normalizeCollateral } from './src/verification/collateral.ts';
      import { ThreadedEngine } from './src/verification/engines/engine-worker.ts';
      const dir = './test/fixtures/intel-tdx-v4/';
      const quote = new Uint8Array(readFileSync(dir + 'quote.bin'));
      const collateral = normalizeCollateral(JSON.parse(readFileSync(dir + 'collateral.json', 'utf8')));
      const unsendable = { ...collateral, tcb_info: () => 'not cloneable' };
      const engine = new ThreadedEngine('js');
      const waiting = engine.verify(quote, collateral, 1751328000);
      const refused = await engine.verify(quote, unsendable, 1751328000).catch((error) => error.code);
      console.log('with another waiting', refused, (await waiting).status);
      console.log('alone', await engine.verify(quote, unsendable, 1751328000).catch((error) => error.code));
    `);
    assert.equal(code, 0, stderr);
    assert.match(
      stdout,
      /with another waiting ENGINE_UNAVAILABLE UpToDate\nalone ENGINE_UNAVAILABLE\n/,
    );
  });

  it('a warm-up nobody awaits keeps the process only until it is done', async () => {
    const { code, stdout, stderr } = await runScript(`
      import { readFileSync } from 'node:fs';
      import { DcapVerifier } from './src/verification/dcap-verifier.ts';
      const collateral = JSON.parse(readFileSync('./test/fixtures/intel-tdx-v4/collateral.json', 'utf8'));
      void new DcapVerifier({ collateral, engine: 'js' }).warmUp();
      console.log('warming');
    `);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /warming/);
  });
});
