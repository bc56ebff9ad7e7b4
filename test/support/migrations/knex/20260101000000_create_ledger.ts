import type { Knex } from 'knex';

/** A Knex migration for test/integration-knex.test.ts: run by `knex.migrate.latest()`. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('ledger', (table) => {
    table.increments('id');
    table.text('entry').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('ledger');
}
