import type { Socket } from 'node:net';
import type pg from 'pg';
import { RaTlsError } from '../errors.js';

/**
 * The only module that touches node-postgres and pg-pool internals. pg-ra-tls
 * needs a handful: pg-pool's idle list and removal (to drain connections to
 * a replaced or stale server), pg's connection stream (to hand it the attested
 * socket), the backend key (for an attested cancel) and the two paths by which
 * pg reports a session's errors (to type a lost connection). Their shape is checked
 * once, when a pool or client is created, so an incompatible pg release fails
 * there with PG_UNSUPPORTED_VERSION instead of in a timer later.
 * Supported: the `pg` peer range in package.json (pg 8.11+, pg-pool 3.x).
 */

interface PgPoolPrivates {
  _idle: { client: pg.PoolClient }[];
  _remove(client: pg.PoolClient, callback?: () => void): void;
  _pulseQueue(): void;
}

interface PgClientPrivates {
  connection: { stream: unknown };
  processID: number | null;
  secretKey: number | null;
  _errorAllQueries(error: Error): void;
  _handleErrorEvent(error: Error): void;
  _queryable: boolean;
  _ending: boolean;
}

/**
 * Why a new query on a client is refused at once, without sending it: pg's
 * own two states (a connection error, end() called), and a connect() that
 * failed, on which pg would queue the query for ever.
 */
export type UnusableState = 'failed' | 'broken' | 'ending';

/** The pg-pool internals the pool uses, checked. */
export interface PoolInternals {
  /** The clients idle in the pool right now. */
  idleClients(): pg.PoolClient[];
  /** Closes an idle client and lets waiting checkouts use the freed slot. */
  removeIdle(client: pg.PoolClient): void;
}

/** The pg Client internals RaTlsClient uses, checked. */
export interface ClientInternals {
  /** pg's stream: its unconnected placeholder socket until {@link setStream}. */
  stream(): Socket;
  /** Makes `socket` the stream pg speaks the protocol on. */
  setStream(socket: Socket): void;
  /** The BackendKeyData of the session, once Postgres sent it. */
  backendKey(): { processID: number; secretKey: number } | undefined;
  /**
   * Passes every error pg is about to give the session's queries or emit as
   * `error` (a lost connection, a socket error) through `map` first.
   */
  mapSessionErrors(map: (error: Error) => Error): void;
  /**
   * Where pg would fail a new query at once with its untyped "not queryable"
   * Error (after a connection error, or once end() was called), fails it with
   * `refusal(state)` instead, through the same path pg would use: the
   * submittable's handleError, the callback, or the returned promise. Nothing
   * is written in either case. `connectFailed` says whether the client's
   * connect() failed: pg never sends what is queued then (the session never
   * became ready), so such queries are refused too ('failed').
   */
  refuseQueriesWhenUnusable(
    refusal: (state: UnusableState) => Error,
    connectFailed: () => boolean,
  ): void;
  /** Fails the queries waiting in pg's queue (and the active one) with `error`. */
  failQueued(error: Error): void;
}

type QueryCallback = (error: Error) => void;
type Submittable = {
  submit: unknown;
  callback?: QueryCallback;
  handleError(error: Error, connection: unknown): void;
};

function unsupported(what: string): RaTlsError {
  return new RaTlsError(
    'PG_UNSUPPORTED_VERSION',
    `the installed pg/pg-pool has no ${what}, which pg-ra-tls relies on: ` +
      'install a pg release within the supported peer range (^8.11.0)',
    { details: { missing: what } },
  );
}

/** Checks `pool` (a constructed pg.Pool) has the internals the pool needs. */
export function poolInternals(pool: pg.Pool): PoolInternals {
  const privates = pool as unknown as PgPoolPrivates;
  if (!Array.isArray(privates._idle)) throw unsupported('Pool#_idle list');
  if (typeof privates._remove !== 'function') throw unsupported('Pool#_remove()');
  if (typeof privates._pulseQueue !== 'function') throw unsupported('Pool#_pulseQueue()');
  return {
    idleClients: () => privates._idle.map((item) => item.client),
    // pg-pool passes _pulseQueue itself when it removes a client; without it a
    // checkout waiting for a free slot would not see the one freed here.
    removeIdle: (client) => privates._remove(client, () => privates._pulseQueue()),
  };
}

/** Checks `client` (a constructed pg.Client) has the internals RaTlsClient needs. */
export function clientInternals(client: pg.Client): ClientInternals {
  const privates = client as unknown as PgClientPrivates;
  const connection = privates.connection;
  if (connection === null || typeof connection !== 'object') {
    throw unsupported('Client#connection');
  }
  const stream = connection.stream as Partial<Socket> | null | undefined;
  if (stream === null || typeof stream !== 'object' || typeof stream.once !== 'function') {
    throw unsupported('Connection#stream socket');
  }
  if (!('processID' in privates) || !('secretKey' in privates)) {
    throw unsupported('Client#processID/secretKey');
  }
  if (typeof privates._errorAllQueries !== 'function') {
    throw unsupported('Client#_errorAllQueries()');
  }
  if (typeof privates._handleErrorEvent !== 'function') {
    throw unsupported('Client#_handleErrorEvent()');
  }
  if (typeof privates._queryable !== 'boolean' || typeof privates._ending !== 'boolean') {
    throw unsupported('Client#_queryable/_ending state');
  }
  return {
    stream: () => connection.stream as Socket,
    setStream: (socket) => {
      connection.stream = socket;
    },
    backendKey: () => {
      const { processID, secretKey } = privates;
      return typeof processID === 'number' && typeof secretKey === 'number'
        ? { processID, secretKey }
        : undefined;
    },
    mapSessionErrors: (map) => {
      // pg fails queries through _errorAllQueries and reports the session's
      // errors through _handleErrorEvent (bound as the connection's error
      // listener at connect, so this must run before connect()).
      const errorAllQueries = privates._errorAllQueries;
      const handleErrorEvent = privates._handleErrorEvent;
      privates._errorAllQueries = (error) => errorAllQueries.call(client, map(error));
      privates._handleErrorEvent = (error) => handleErrorEvent.call(client, map(error));
    },
    failQueued: (error) => privates._errorAllQueries.call(client, error),
    refuseQueriesWhenUnusable: (refusal, connectFailed) => {
      const query = client.query as (
        config: unknown,
        values: unknown,
        callback: unknown,
      ) => unknown;
      // Runs on every query: three parameters passed through, no arguments array.
      const guarded = function (
        this: pg.Client,
        config: unknown,
        values?: unknown,
        callback?: unknown,
      ): unknown {
        // pg's own checks, in pg's order: a missing query is its TypeError.
        const state: UnusableState | undefined =
          config == null
            ? undefined
            : privates._queryable === false
              ? 'broken'
              : privates._ending
                ? 'ending'
                : connectFailed()
                  ? 'failed'
                  : undefined;
        if (state === undefined) return query.call(this, config, values, callback);
        const error = refusal(state);
        if (typeof (config as Partial<Submittable>).submit === 'function') {
          const submittable = config as Submittable;
          // pg's order: a submittable's own callback, else a function passed after it
          // (never a non-function: handleError would call it).
          submittable.callback ??= (
            typeof values === 'function'
              ? values
              : typeof callback === 'function'
                ? callback
                : undefined
          ) as QueryCallback | undefined;
          process.nextTick(() => submittable.handleError(error, connection));
          return submittable;
        }
        const done =
          typeof values === 'function'
            ? values
            : typeof callback === 'function'
              ? callback
              : (config as { callback?: unknown }).callback;
        if (typeof done !== 'function') return Promise.reject(error);
        process.nextTick(() => (done as QueryCallback)(error));
        return undefined;
      };
      Object.defineProperty(client, 'query', {
        value: guarded,
        configurable: true,
        writable: true,
      });
    },
  };
}
