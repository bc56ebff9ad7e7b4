/**
 * `pg-ra-tls/pg` for README snippets: the real entry, with its factories and
 * drop-in classes defaulting `verifier` to the local stack's (see
 * stack-verifier.ts).
 */
import * as integration from '../../../integrations/pg/index.js';
import { withStackVerifier, withStackVerifierClass } from './stack-verifier.js';

export * from '../../../integrations/pg/index.js';

/** `createPool`, defaulting `verifier` to the stack's. */
export const createPool: typeof integration.createPool = (options) =>
  integration.createPool(withStackVerifier(options));

/** `createClient`, defaulting `verifier` to the stack's. */
export const createClient: typeof integration.createClient = (options) =>
  integration.createClient(withStackVerifier(options));

/** `RaTlsPool` (also exported as `Pool`), whose `new` defaults `verifier` to the stack's. */
export const RaTlsPool = withStackVerifierClass(integration.RaTlsPool);
/** The pool's instance type, as the real entry exports it. */
export type RaTlsPool = integration.RaTlsPool;
export { RaTlsPool as Pool };

/** `RaTlsClient` (also exported as `Client`), whose `new` defaults `verifier` to the stack's. */
export const RaTlsClient = withStackVerifierClass(integration.RaTlsClient);
/** The client's instance type, as the real entry exports it. */
export type RaTlsClient = integration.RaTlsClient;
export { RaTlsClient as Client };
