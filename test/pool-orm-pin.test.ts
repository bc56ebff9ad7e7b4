/**
 * ORMs that keep their own pool (Sequelize, MikroORM through Knex) get their
 * clients from a bound pg module. Those clients obey the same ServerPin as a
 * RaTlsPool's: `onServerChange` applies, and a connection attested to a
 * certificate no longer pinned is not fresh, so the ORM's pool replaces it.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { boundPgModule } from '../integrations/shared/pg-module.js';
import { isRaTlsError } from '../src/errors.js';
import type { RaTlsPoolOptions } from '../src/pool/ra-tls-pool.js';
import { type PoolStack, raTlsCredentials, stackOptions, startPoolStack } from './pool-harness.js';

let stack: PoolStack;
let originalCredentials: PoolStack['serverCredentials'];
before(async () => {
  stack = await startPoolStack();
  originalCredentials = stack.serverCredentials;
});
after(() => stack.close());
beforeEach(() => {
  stack.serverCredentials = originalCredentials;
});

function ormModule(extra: Partial<RaTlsPoolOptions>) {
  return boundPgModule(stackOptions(stack, { reattestEvery: '1m', ...extra }), 'TestORM', 'refuse');
}

describe("an ORM's own pool keeps the pin", () => {
  test("'reject': a second certificate is refused with SERVER_CHANGED and the first connection is retired", async () => {
    const module = ormModule({ onServerChange: 'reject' });
    const first = new module.Client();
    await first.connect();
    try {
      assert.equal(module.fresh(first), true);
      stack.serverCredentials = raTlsCredentials(stack.authority);
      const before = stack.sidecar.stats.connections.length;
      await assert.rejects(new module.Client().connect(), (error: unknown) =>
        isRaTlsError(error, 'SERVER_CHANGED'),
      );
      assert.equal(stack.sidecar.stats.connections.slice(before)[0]?.bytesToUpstream, 0);
      assert.equal(module.fresh(first), false, 'the server was refused: nothing is fresh');
    } finally {
      await first.end();
    }
  });

  test("'reverify': a new verified certificate is pinned and connections to the old one are retired", async () => {
    const module = ormModule({});
    const first = new module.Client();
    await first.connect();
    stack.serverCredentials = raTlsCredentials(stack.authority);
    const second = new module.Client();
    await second.connect();
    try {
      assert.equal(module.fresh(second), true);
      assert.equal(module.fresh(first), false, 'attested to a certificate no longer pinned');
    } finally {
      await Promise.all([first.end(), second.end()]);
    }
  });
});
