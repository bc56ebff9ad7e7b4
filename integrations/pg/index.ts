/**
 * pg-ra-tls/pg: node-postgres with attested connections. The pool is a real
 * `pg.Pool` (`instanceof pg.Pool` holds), so code written for pg keeps working:
 * `query`, `connect`/`release`, events, `totalCount`/`idleCount`/`waitingCount`,
 * `end`. Every connection is attested before Postgres sees a byte.
 */
import {
  createPool as createRaTlsPool,
  RaTlsClient,
  type RaTlsClientOptions,
  RaTlsPool,
  type RaTlsPoolOptions,
} from '../../src/index.js';

export type {
  AttestationFailedEvent,
  AttestationReport,
  ErrorCode,
  Policy,
  RaTlsClientOptions,
  RaTlsPoolOptions,
  ServerChangedEvent,
} from '../../src/index.js';
export { isRaTlsError, RaTlsClient, RaTlsError, RaTlsPool } from '../../src/index.js';

/**
 * Creates an attested pool: a `pg.Pool` whose connections are attested and
 * re-attested (see {@link RaTlsPool}). Configuration errors throw here, before
 * any network I/O.
 */
export function createPool(options: RaTlsPoolOptions): RaTlsPool {
  return createRaTlsPool(options);
}

/**
 * Creates one attested `pg.Client`, not yet connected: `await client.connect()`
 * dials, attests the server and only then starts the Postgres session. A
 * client connects once; create a new one (or use a pool) to reconnect.
 */
export function createClient(options: RaTlsClientOptions): RaTlsClient {
  return new RaTlsClient(options);
}

/** Drop-in names for `import { Pool, Client } from 'pg'`: `new Pool({ connectionString, policy })`. */
export { RaTlsClient as Client, RaTlsPool as Pool };
