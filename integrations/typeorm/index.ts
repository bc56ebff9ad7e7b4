/**
 * pg-ra-tls/typeorm: TypeORM (postgres driver) over attested connections.
 *
 * TypeORM's postgres driver takes the `pg` module to use as its `driver`
 * option and builds its pools with `new driver.Pool(...)`. The module given
 * here is pg with an attested Pool: every connection TypeORM opens (queries,
 * transactions, migrations, schema sync) is attested before Postgres sees a
 * byte, and re-attested at checkout once its report is older than
 * `reattestEvery`. It has no `native`, so TypeORM cannot switch to pg-native.
 *
 * This module imports nothing of TypeORM at run time (TypeORM loads
 * reflect-metadata globally; that stays the application's choice).
 */
import type { DataSource } from 'typeorm';
import { RaTlsError, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';
import { type AttestedPgModule, boundPgModule } from '../shared/pg-module.js';

export { createPool, RaTlsPool, type RaTlsPoolOptions } from '../../src/index.js';
export type { AttestedPgModule } from '../shared/pg-module.js';

/** The postgres DataSource options {@link typeormOptions} returns. */
export interface RaTlsTypeOrmOptions {
  readonly type: 'postgres';
  readonly driver: AttestedPgModule;
}

/**
 * The postgres DataSource options that make every TypeORM connection attested:
 * `new DataSource({ ...typeormOptions({ connectionString, policy }), entities, migrations })`.
 *
 * Where and as whom to connect are set here only: a DataSource that also sets
 * `url`, `host`, `port`, `username`, `password`, `database`, `ssl` (or
 * `replication`) fails `initialize()` with BAD_CONFIG. TypeORM's `poolSize`,
 * `connectTimeoutMS`, `applicationName` and pool settings in `extra` (`max`,
 * `idleTimeoutMillis`, ...) apply. Configuration errors in `options` throw
 * BAD_CONFIG here, before any network I/O; an attestation failure rejects
 * `initialize()` or the query with the RaTlsError itself.
 */
export function typeormOptions(options: RaTlsPoolOptions): RaTlsTypeOrmOptions {
  const driver = boundPgModule(options, 'TypeORM', 'refuse');
  return { type: 'postgres', driver };
}

/**
 * The attested pool of an initialized DataSource made with
 * {@link typeormOptions}: its events (`attested`, `reattested`,
 * `serverChanged`), `attestation` and counters. Undefined before
 * `initialize()` and after `destroy()`.
 */
export function attestedPool(dataSource: DataSource): RaTlsPool | undefined {
  if (dataSource === null || typeof dataSource !== 'object') {
    throw new RaTlsError('BAD_CONFIG', 'attestedPool needs a TypeORM DataSource', {
      details: { option: 'dataSource' },
    });
  }
  const master = (dataSource.driver as { master?: unknown } | undefined)?.master;
  return master instanceof RaTlsPool ? master : undefined;
}
