import { ClientIdentity } from './client-identity.js';
import { resolveDstackEndpoint } from './dstack-endpoint.js';

const shared = new Map<string, ClientIdentity>();

/**
 * One process-wide {@link ClientIdentity} per guest agent endpoint, for clients
 * created outside a pool, so that each new connection does not cost a GetTlsKey
 * call. Its refresh timer is unref'd; {@link closeSharedClientIdentities}
 * closes them (the next use creates new ones). Throws
 * MISSING_DSTACK_SOCKET (before any network I/O) when there is no agent.
 */
export function sharedClientIdentity(
  dstackEndpoint?: string,
  env: NodeJS.ProcessEnv = process.env,
): ClientIdentity {
  const endpoint = resolveDstackEndpoint(dstackEndpoint, env);
  let identity = shared.get(endpoint);
  if (identity === undefined) {
    identity = new ClientIdentity({ dstackEndpoint: endpoint, env });
    shared.set(endpoint, identity);
  }
  return identity;
}

/**
 * Closes every shared identity (its refresh timer and agent client) and
 * forgets it: for tests and for processes that want a clean exit.
 */
export function closeSharedClientIdentities(): void {
  for (const identity of shared.values()) identity.close();
  shared.clear();
}
