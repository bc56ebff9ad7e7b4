/**
 * `pg-ra-tls/typeorm` for README snippets: the real entry, with
 * `typeormOptions` defaulting `verifier` to the local stack's (see stack-verifier.ts).
 */
import * as integration from '../../../integrations/typeorm/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/typeorm/index.js';

/** `typeormOptions`, defaulting `verifier` to the stack's. */
export const typeormOptions: typeof integration.typeormOptions = (options) =>
  integration.typeormOptions(withStackVerifier(options));
