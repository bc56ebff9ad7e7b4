/**
 * `pg-ra-tls/prisma` for README snippets: the real entry, with
 * `prismaAdapter` defaulting `verifier` to the local stack's (see
 * stack-verifier.ts) when it creates the pool itself.
 */
import * as integration from '../../../integrations/prisma/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/prisma/index.js';

/** `prismaAdapter`, defaulting `verifier` to the stack's; a given pool is kept. */
export const prismaAdapter: typeof integration.prismaAdapter = (poolOrOptions, options) =>
  integration.prismaAdapter(withStackVerifier(poolOrOptions), options);
