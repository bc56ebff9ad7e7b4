/**
 * `pg-ra-tls/sequelize` for README snippets: the real entry, with
 * `sequelizeOptions` defaulting `verifier` to the local stack's (see stack-verifier.ts).
 */
import * as integration from '../../../integrations/sequelize/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/sequelize/index.js';

/** `sequelizeOptions`, defaulting `verifier` to the stack's. */
export const sequelizeOptions: typeof integration.sequelizeOptions = (options) =>
  integration.sequelizeOptions(withStackVerifier(options));
