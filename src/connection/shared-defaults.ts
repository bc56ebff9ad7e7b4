import { closeSharedClientIdentities } from '../identity/shared-identity.js';
import { DcapVerifier } from '../verification/dcap-verifier.js';
import { clearVerdicts } from './verification-cache.js';

export { sharedClientIdentity } from '../identity/shared-identity.js';

let sharedDcapVerifier: DcapVerifier | undefined;

/**
 * The verifier used when none is passed: one process-wide DcapVerifier against
 * Intel's root with collateral from Intel PCS (docs/protocol.md §3), so its
 * collateral cache is shared. Never a test root: those are only accepted when
 * passed explicitly.
 */
export function sharedVerifier(): DcapVerifier {
  sharedDcapVerifier ??= new DcapVerifier();
  return sharedDcapVerifier;
}

/**
 * Closes the process-wide defaults (the shared verifier, the shared client
 * identities of standalone clients and `verifyServer`, and the process-wide
 * verdicts every pool and client reuse) and forgets them; the
 * next use creates fresh ones. Pools own their defaults and close them in
 * `end()`; this is for the rest, e.g. at the end of a test file.
 */
export function closeSharedDefaults(): void {
  sharedDcapVerifier?.close();
  sharedDcapVerifier = undefined;
  closeSharedClientIdentities();
  clearVerdicts();
}
