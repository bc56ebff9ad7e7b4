/** The README's ORM section (Knex, TypeORM, ...): its blocks run as readme.test.ts runs the rest. */
import { describeReadmeBlocks } from './support/readme-blocks.js';

describeReadmeBlocks(
  "every ts block of the README's ORM section runs against the local stack",
  (block) => block.heading.startsWith('Knex, TypeORM'),
  { typeCheck: false, concurrency: 1 },
);
