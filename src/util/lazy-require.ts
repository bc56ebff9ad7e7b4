/** Created at the first load: even that is measurable in `import 'pg-ra-tls'`. */
let require: NodeJS.Require | undefined;

/** Loaders of every {@link lazyRequire} dependency, in the order they were declared. */
const loaders: (() => unknown)[] = [];

/**
 * A CommonJS dependency loaded at its first use rather than when pg-ra-tls is
 * imported: `import 'pg-ra-tls'` stays cheap, and a program that never
 * verifies (or never uses a cluster) never pays for the parsers it would need.
 * Synchronous, so pure functions such as certificate parsing stay synchronous;
 * a failed load (package missing) throws at that first use and is retried at
 * the next. Types come from `import type`, so nothing loads at import time.
 */
export function lazyRequire<T>(specifier: string, options: { preload?: boolean } = {}): () => T {
  let loaded: T | undefined;
  const load = (): T => {
    require ??= process.getBuiltinModule('node:module').createRequire(import.meta.url);
    loaded ??= require(specifier) as T;
    return loaded;
  };
  if (options.preload !== false) loaders.push(load);
  return load;
}

let preloading: Promise<void> | undefined;

/**
 * Loads the attestation path's dependencies in the background, one per turn
 * of the event loop, so a new pool's first connection finds them loaded while
 * its TCP and TLS handshakes were in flight instead of loading them itself.
 * Called when a pool or client is created; idempotent. The promise (never
 * rejected: a dependency that fails to load fails its first use) settles once
 * all are loaded; the pending turns never keep the process alive.
 */
export function preloadDependencies(): Promise<void> {
  preloading ??= new Promise<void>((resolve) => {
    const pending = [...loaders];
    const next = (): void => {
      const load = pending.shift();
      if (load === undefined) {
        resolve();
        return;
      }
      try {
        load();
      } catch {
        // Reported by the first use that needs it, with its own context.
      }
      setImmediate(next).unref();
    };
    setImmediate(next).unref();
  });
  return preloading;
}
