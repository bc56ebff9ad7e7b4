/**
 * pgBase / linkPgBase (src/connection/pg-base.ts): the placeholder parent that
 * keeps `import 'pg-ra-tls'` from loading node-postgres, and the link that
 * makes a class extending it an ordinary subclass of pg's class.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pg from 'pg';
import { linkPgBase, pgBase } from '../src/connection/pg-base.js';

describe('pgBase', () => {
  test('constructing through a placeholder that was never linked is a TypeError naming the pg class', () => {
    const Placeholder = pgBase('Pool') as unknown as new () => unknown;
    assert.throws(
      () => new Placeholder(),
      (error: unknown) =>
        error instanceof TypeError &&
        error.message === 'pg-ra-tls: pg.Pool was not linked before construction',
    );
  });

  test('linked (once or again), the class is a subclass of pg’s', () => {
    class Linked extends pgBase('Client') {}
    linkPgBase(Linked, 'Client');
    linkPgBase(Linked, 'Client');
    assert.equal(Object.getPrototypeOf(Linked), pg.Client);
    assert.equal(Object.getPrototypeOf(Linked.prototype), pg.Client.prototype);
    const client = new Linked();
    assert.ok(client instanceof pg.Client);
  });
});
