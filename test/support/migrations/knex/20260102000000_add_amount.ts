import type { Knex } from 'knex';

/** The second migration: proves several run in order, each in its own transaction. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('ledger', (table) => {
    table.integer('amount').notNullable().defaultTo(0);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('ledger', (table) => {
    table.dropColumn('amount');
  });
}
