/**
 * A knexfile as a user writes one for the `knex` CLI, reading the environment
 * `pg-ra-tls dev` prints (test/knex-cli.test.ts runs `npx knex` with it).
 */
import { knexConfig } from '../../../integrations/knex/index.js';
import { clientOptionsFromEnv } from '../../../src/testing/client-options-from-env.js';

export default knexConfig({
  connection: {
    connectionString: process.env.DATABASE_URL,
    ...clientOptionsFromEnv(process.env, () => {}),
  },
  migrations: { directory: '../migrations/knex', loadExtensions: ['.ts'] },
});
