// Preloaded next to Stryker's own hook by `npm run mutate` only (stryker.config.mjs),
// never by the library or its tests. The DCAP engines run in worker threads
// (src/verification/engines/engine-worker.ts); Stryker's tap runner reads
// mutant coverage from the test process's main thread only, so code that runs
// only in a worker was reported "no coverage" and never mutated. Each worker
// reports the first time it reaches a mutant; the main thread adds it to the
// coverage Stryker collects.
'use strict';
const { BroadcastChannel, isMainThread } = require('node:worker_threads');

const namespace = process.env.STRYKER_NAMESPACE ?? '__stryker__';
const channel = new BroadcastChannel('pg-ra-tls:stryker-worker-coverage');
channel.unref();

/** Stryker's namespace object in this thread, created if its hook has not. */
function strykerNamespace() {
  if (globalThis[namespace] === undefined) globalThis[namespace] = {};
  return globalThis[namespace];
}

if (isMainThread) {
  channel.onmessage = ({ data }) => {
    const stryker = strykerNamespace();
    if (stryker.mutantCoverage === undefined) stryker.mutantCoverage = { static: {}, perTest: {} };
    const coverage = stryker.mutantCoverage;
    for (const id of data) coverage.static[id] = (coverage.static[id] ?? 0) + 1;
  };
} else {
  // Stryker's hook, inherited by the worker, would write this thread's (empty)
  // result over the main thread's at exit: the same file, named by the pid.
  process.removeAllListeners('exit');
  const stryker = strykerNamespace();
  const reached = {};
  stryker.mutantCoverage = {
    static: new Proxy(reached, {
      set(target, id, count) {
        if (!(id in target)) channel.postMessage([id]);
        target[id] = count;
        return true;
      },
    }),
    perTest: {},
  };
}
