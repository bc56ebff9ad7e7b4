/**
 * `pg-ra-tls/kysely` for README snippets: the real entry, with `raTlsDialect`
 * defaulting `verifier` to the local stack's (see stack-verifier.ts) when it
 * creates the pool itself.
 */
import * as integration from '../../../integrations/kysely/index.js';
import { RaTlsPool } from '../../../src/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/kysely/index.js';

/**
 * `raTlsDialect`, defaulting `verifier` to the stack's. Given an existing
 * pool, which carries its own verifier, it adds nothing (the real dialect
 * refuses options next to a pool).
 */
export const raTlsDialect: typeof integration.raTlsDialect = (options) =>
  integration.raTlsDialect(
    options instanceof RaTlsPool || options?.pool instanceof RaTlsPool
      ? options
      : withStackVerifier(options),
  );
