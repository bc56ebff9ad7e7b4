import { existsSync } from 'node:fs';
import { RaTlsError } from '../errors.js';

/** Unix socket paths of the dstack guest agent, in the order dstack probes them (docs/protocol.md §4). */
export const DSTACK_SOCKET_PATHS: readonly string[] = Object.freeze([
  '/var/run/dstack.sock',
  '/run/dstack.sock',
  '/var/run/dstack/dstack.sock',
  '/run/dstack/dstack.sock',
]);

/**
 * Picks the guest agent endpoint: the explicit `dstackEndpoint` option, else
 * DSTACK_SIMULATOR_ENDPOINT, else the first existing socket path (docs/protocol.md §4).
 * Touches only the file system (existence checks); throws MISSING_DSTACK_SOCKET
 * when nothing is found, before any network I/O.
 */
export function resolveDstackEndpoint(
  explicit?: string,
  env: NodeJS.ProcessEnv = process.env,
  exists: (path: string) => boolean = existsSync,
): string {
  if (explicit !== undefined && explicit !== '') {
    if (explicit.startsWith('/') && !exists(explicit)) {
      throw new RaTlsError(
        'MISSING_DSTACK_SOCKET',
        `dstackEndpoint ${JSON.stringify(explicit)} does not exist: run inside a dstack CVM, ` +
          'or point dstackEndpoint at the guest agent socket or simulator URL',
        { details: { option: 'dstackEndpoint' } },
      );
    }
    return explicit;
  }
  const simulator = env['DSTACK_SIMULATOR_ENDPOINT'];
  if (simulator !== undefined && simulator !== '') return simulator;
  const found = DSTACK_SOCKET_PATHS.find((path) => exists(path));
  if (found !== undefined) return found;
  throw new RaTlsError(
    'MISSING_DSTACK_SOCKET',
    `no dstack guest agent found (looked for ${DSTACK_SOCKET_PATHS.join(', ')} and ` +
      'DSTACK_SIMULATOR_ENDPOINT): the teesql sidecar needs an attested client certificate; ' +
      'run inside a dstack CVM, set DSTACK_SIMULATOR_ENDPOINT, or pass dstackEndpoint',
  );
}
