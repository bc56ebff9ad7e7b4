/**
 * `pg-ra-tls/mikro-orm` for README snippets: the real entry, with
 * `mikroOrmOptions` defaulting `verifier` to the local stack's (see stack-verifier.ts).
 */
import * as integration from '../../../integrations/mikro-orm/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/mikro-orm/index.js';

/** `mikroOrmOptions`, defaulting `verifier` to the stack's. */
export const mikroOrmOptions: typeof integration.mikroOrmOptions = (options) =>
  integration.mikroOrmOptions(withStackVerifier(options));
