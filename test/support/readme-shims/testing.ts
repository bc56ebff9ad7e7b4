/**
 * `pg-ra-tls/testing` for README snippets: the real entry, untouched. Code
 * that uses the local stack passes `stack.clientOptions` (its verifier)
 * itself, so nothing needs a default here.
 */
export * from '../../../src/testing/index.js';
