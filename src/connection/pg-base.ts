import type pg from 'pg';
import { lazyRequire } from '../util/lazy-require.js';

/** node-postgres, loaded when the first RaTlsClient or RaTlsPool is constructed. */
export const pgModule = lazyRequire<typeof pg>('pg');

type PgClassName = 'Client' | 'Pool';

/**
 * What RaTlsClient and RaTlsPool extend in place of `pg.Client` and `pg.Pool`,
 * so that `import 'pg-ra-tls'` does not load node-postgres (a third of the
 * package's import time): a placeholder constructor typed as the pg class,
 * which {@link linkPgBase} replaces by the real one before the first instance
 * is built. `super(...)` and `super.method()` look the parent up when they
 * run, so once linked the class is an ordinary subclass of the pg class:
 * `instanceof pg.Pool` holds and pg's methods and statics are inherited.
 */
export function pgBase<K extends PgClassName>(name: K): (typeof pg)[K] {
  const placeholder = function PgBase() {
    throw new TypeError(`pg-ra-tls: pg.${name} was not linked before construction`);
  };
  return placeholder as unknown as (typeof pg)[K];
}

/**
 * Makes `derived` (a class declared `extends pgBase(name)`) extend pg's class:
 * called first thing in its constructor, before `super(...)`. Idempotent.
 */
export function linkPgBase(
  derived: abstract new (...args: never[]) => unknown,
  name: PgClassName,
): void {
  const base = pgModule()[name];
  // Setting the prototype it already has changes nothing (so linking again is harmless).
  Object.setPrototypeOf(derived, base);
  Object.setPrototypeOf(derived.prototype, base.prototype);
}
