/**
 * `pg-ra-tls/knex` for README snippets: the real entry, with `knex` defaulting
 * the pool's `verifier` to the local stack's (see stack-verifier.ts).
 */
import * as integration from '../../../integrations/knex/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/knex/index.js';

/** `knex`, defaulting `connection.verifier` to the stack's (an existing pool carries its own). */
export const knex: typeof integration.knex = (config) =>
  integration.knex(
    'connection' in config
      ? { ...config, connection: withStackVerifier(config.connection) }
      : config,
  );
