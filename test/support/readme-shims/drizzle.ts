/**
 * `pg-ra-tls/drizzle` for README snippets: the real entry, with `createPool`
 * and `drizzle({ connection })` defaulting `verifier` to the local stack's
 * (see stack-verifier.ts).
 */
import * as integration from '../../../integrations/drizzle/index.js';
import { withStackVerifier, withStackVerifierClass } from './stack-verifier.js';

export * from '../../../integrations/drizzle/index.js';

/** `createPool`, defaulting `verifier` to the stack's. */
export const createPool: typeof integration.createPool = (options) =>
  integration.createPool(withStackVerifier(options));

/** `RaTlsPool`, whose `new` defaults `verifier` to the stack's. */
export const RaTlsPool = withStackVerifierClass(integration.RaTlsPool);
/** The pool's instance type, as the real entry exports it. */
export type RaTlsPool = integration.RaTlsPool;

/** `drizzle`, defaulting `verifier` in `connection` to the stack's; a given `client` is kept. */
export const drizzle: typeof integration.drizzle = (config) =>
  integration.drizzle(
    config !== null && typeof config === 'object' && 'connection' in config
      ? { ...config, connection: withStackVerifier(config.connection) }
      : config,
  );
