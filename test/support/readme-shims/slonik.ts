/**
 * `pg-ra-tls/slonik` for README snippets: the real entry, with
 * `createRaTlsDriverFactory` defaulting `verifier` to the local stack's (see
 * stack-verifier.ts).
 */
import * as integration from '../../../integrations/slonik/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/slonik/index.js';

/** `createRaTlsDriverFactory`, defaulting `options.verifier` to the stack's. */
export const createRaTlsDriverFactory: typeof integration.createRaTlsDriverFactory = (options) =>
  integration.createRaTlsDriverFactory(withStackVerifier(options ?? {}));
