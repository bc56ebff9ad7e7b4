import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { findRaTlsError, isRaTlsError, RaTlsError } from '../src/errors.js';
import { parseDuration } from '../src/util/duration.js';

describe('RaTlsError', () => {
  test('carries a stable code, details and cause', () => {
    const cause = new Error('inner');
    const error = new RaTlsError('PUBKEY_MISMATCH', 'quote does not bind the key', {
      cause,
      details: { fingerprint: 'ab' },
    });
    assert.equal(error.code, 'PUBKEY_MISMATCH');
    assert.equal(error.cause, cause);
    assert.deepEqual(error.details, { fingerprint: 'ab' });
    assert.ok(isRaTlsError(error, 'PUBKEY_MISMATCH'));
    assert.ok(!isRaTlsError(error, 'NOT_TDX'));
  });

  test('instanceof works for an error branded by another copy of the package', () => {
    const foreign = Object.assign(new Error('x'), { [Symbol.for('pg-ra-tls.error')]: true });
    assert.ok(foreign instanceof RaTlsError);
    assert.ok(!(new Error('plain') instanceof RaTlsError));
  });
});

describe('parseDuration', () => {
  test('reads numbers and unit strings', () => {
    assert.equal(parseDuration(250, 'x'), 250);
    assert.equal(parseDuration('250ms', 'x'), 250);
    assert.equal(parseDuration('30s', 'x'), 30_000);
    assert.equal(parseDuration('5m', 'x'), 300_000);
    assert.equal(parseDuration(' 1h ', 'x'), 3_600_000);
  });

  test('rejects nonsense with BAD_CONFIG naming the option', () => {
    for (const bad of ['5 minutes', '-1s', '', 'm', Number.NaN, -5]) {
      assert.throws(
        () => parseDuration(bad as never, 'reattestEvery'),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CONFIG') && /reattestEvery/.test(error.message),
      );
    }
  });
});

describe('findRaTlsError: the RaTlsError behind a query layer’s error', () => {
  const ours = new RaTlsError('MRTD_NOT_ALLOWED', 'MRTD 9c3c… is not in allowedMrtds', {
    details: { mrtd: '9c3c' },
  });

  test('each wrapper shape leads to our error, and isRaTlsError sees through it', () => {
    const shapes: [string, object][] = [
      ['Error cause (Drizzle, MikroORM)', new Error('Failed query', { cause: ours })],
      [
        'Sequelize parent/original',
        Object.assign(new Error('x'), { parent: ours, original: ours }),
      ],
      ['TypeORM driverError', Object.assign(new Error('x'), { driverError: ours })],
      ['previous', Object.assign(new Error('x'), { previous: ours })],
      ['two levels', new Error('outer', { cause: new Error('inner', { cause: ours }) })],
    ];
    for (const [name, wrapper] of shapes) {
      assert.equal(findRaTlsError(wrapper), ours, name);
      assert.ok(isRaTlsError(wrapper, 'MRTD_NOT_ALLOWED'), name);
      assert.ok(!isRaTlsError(wrapper, 'PUBKEY_MISMATCH'), name);
    }
  });

  test('a PrismaClientKnownRequestError with our code is rebuilt as a RaTlsError', () => {
    // Prisma Client copies the code, message and meta of an adapter error that has a
    // code into its own PrismaClientKnownRequestError, without the error itself.
    class PrismaClientKnownRequestError extends Error {
      override name = 'PrismaClientKnownRequestError';
      constructor(
        message: string,
        readonly code: string,
        readonly meta?: Record<string, unknown>,
      ) {
        super(message);
      }
    }
    const prisma = new PrismaClientKnownRequestError(
      `Invalid \`prisma.$queryRaw()\` invocation:\n\n${ours.message}`,
      ours.code,
      { mrtd: '9c3c' },
    );
    const found = findRaTlsError(prisma);
    assert.ok(found instanceof RaTlsError);
    assert.equal(found.code, 'MRTD_NOT_ALLOWED');
    assert.equal(found.cause, prisma);
    assert.deepEqual(found.details, { mrtd: '9c3c' });
    assert.ok(isRaTlsError(prisma, 'MRTD_NOT_ALLOWED'));
    // Prisma's own codes are not ours.
    assert.equal(findRaTlsError(new PrismaClientKnownRequestError('unique', 'P2002')), undefined);
  });

  test('cycles, depth and throwing getters end the search without a result', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    Object.assign(a, { cause: b });
    assert.equal(findRaTlsError(a), undefined);
    let deep: unknown = ours;
    for (let i = 0; i < 20; i++) deep = new Error(`level ${i}`, { cause: deep });
    assert.equal(findRaTlsError(deep), undefined, 'more wrappers than any ORM nests');
    const hostile = Object.defineProperty(new Error('x'), 'cause', {
      get() {
        throw new Error('no');
      },
    });
    assert.equal(findRaTlsError(hostile), undefined);
    for (const value of [undefined, null, 'MRTD_NOT_ALLOWED', 42, { code: 'MRTD_NOT_ALLOWED' }]) {
      assert.equal(findRaTlsError(value), undefined);
      assert.ok(!isRaTlsError(value));
    }
  });
});
