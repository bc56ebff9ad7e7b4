/**
 * `pg-ra-tls/postgres-js` for README snippets: the real entry, with its
 * factories defaulting `verifier` to the local stack's (see stack-verifier.ts).
 */
import * as integration from '../../../integrations/postgres-js/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/postgres-js/index.js';

/** `postgresOptions`, defaulting `verifier` to the stack's. */
export const postgresOptions: typeof integration.postgresOptions = (options) =>
  integration.postgresOptions(withStackVerifier(options));

/** `raTlsPostgres`, defaulting `verifier` to the stack's. */
export const raTlsPostgres: typeof integration.raTlsPostgres = (options) =>
  integration.raTlsPostgres(withStackVerifier(options));
