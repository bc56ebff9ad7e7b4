/**
 * `pg-ra-tls/pg-promise` for README snippets: the real entry, whose
 * `usePgRaTls(pgp)` returns the instance with `pgp(cn)` defaulting the
 * connection's `verifier` to the local stack's (see stack-verifier.ts).
 */
import * as integration from '../../../integrations/pg-promise/index.js';
import { withStackVerifier } from './stack-verifier.js';

export * from '../../../integrations/pg-promise/index.js';

/** `usePgRaTls`, whose returned `pgp(cn)` defaults `cn.verifier` to the stack's. */
export const usePgRaTls: typeof integration.usePgRaTls = (pgp) =>
  new Proxy(integration.usePgRaTls(pgp), {
    apply(target, self, [cn, ...rest]: unknown[]) {
      return Reflect.apply(target, self, [withStackVerifier(cn), ...rest]);
    },
  });
