/**
 * Scaffolding of the fault matrix (test/fault-matrix-*.test.ts, issue 10):
 * one fault at a time against the local stack, and the four things every
 * scenario asserts — the exact error codes callers see, recovery once the
 * fault clears within a stated bound (polled, never timed), no byte reaching
 * Postgres from a connection that failed verification, and no socket left
 * once the pool has ended.
 */
import assert from 'node:assert/strict';
import pg from 'pg';
import { isRaTlsError } from '../../src/errors.js';
import { createPool, type RaTlsPool, type RaTlsPoolOptions } from '../../src/pool/ra-tls-pool.js';
import type { LocalStack } from '../../src/testing/local-stack.js';
import { DcapVerifier, type DcapVerifierOptions } from '../../src/verification/dcap-verifier.js';

export const quiet = (): void => {};

/** A clock the test moves forward (for `now`), starting at the real time. */
export function testClock(): { now: () => Date; ms: () => number; advance: (ms: number) => void } {
  let offset = 0;
  return {
    now: () => new Date(Date.now() + offset),
    ms: () => Date.now() + offset,
    advance: (ms: number) => {
      offset += ms;
    },
  };
}

/** A verifier of its own (cold collateral cache) against the stack's PCCS and test root. */
export function freshVerifier(
  stack: LocalStack,
  extra: Partial<DcapVerifierOptions> = {},
): DcapVerifier {
  return new DcapVerifier({
    engine: 'js',
    rootCa: stack.trustRoot.rootCaDer,
    pccsUrl: stack.pccsUrl,
    logger: quiet,
    ...extra,
  });
}

/**
 * The stable code of whatever a caller got: a RaTlsError's code, a Postgres
 * SQLSTATE, or `no code: <message>` (which no scenario expects).
 */
export function codeOf(error: unknown): string {
  if (isRaTlsError(error)) return error.code;
  const sqlState = (error as { code?: unknown } | null)?.code;
  if (typeof sqlState === 'string' && /^[0-9A-Z]{5}$/.test(sqlState)) return sqlState;
  return `no code: ${error instanceof Error ? error.message : String(error)}`;
}

/** Asserts that every one of `attempts` rejects with exactly `code`. */
export async function rejectsAllWith(
  code: string,
  attempts: readonly Promise<unknown>[],
): Promise<void> {
  assert.ok(attempts.length > 0, 'no attempt to judge');
  const outcomes = await Promise.allSettled(attempts);
  assert.deepEqual(
    outcomes.map((outcome) =>
      outcome.status === 'fulfilled' ? 'fulfilled' : codeOf(outcome.reason),
    ),
    outcomes.map(() => code),
  );
}

/** Recovery polling: a try every RECOVERY_POLL_MS until it works or the bound passes. */
const RECOVERY_POLL_MS = 50;

/**
 * Retries `attempt` until it succeeds, at most `boundMs` after the call (the
 * scenario's stated recovery bound). Resolves with what the failed tries
 * said, by code; rejects naming them when the bound passes.
 */
export async function recoversWithin(
  boundMs: number,
  attempt: () => Promise<unknown>,
): Promise<{ readonly tries: number; readonly failures: readonly string[] }> {
  const deadline = Date.now() + boundMs;
  const failures: string[] = [];
  for (let tries = 1; ; tries++) {
    try {
      await attempt();
      return { tries, failures };
    } catch (error) {
      failures.push(codeOf(error));
      if (Date.now() >= deadline) {
        assert.fail(
          `no recovery within ${boundMs} ms (${tries} tries): ${[...new Set(failures)].join(', ')}`,
        );
      }
    }
    await new Promise((resolve) => setTimeout(resolve, RECOVERY_POLL_MS));
  }
}

/**
 * The sidecar's records of the connections accepted after `from` (a
 * `stats.accepted` taken earlier) and up to `to` when given: the attempts
 * made while a fault was on.
 */
export function connectionsBetween(stack: LocalStack, from: number, to?: number) {
  return stack.sidecar.stats.connections.filter(
    (connection) => connection.id > from && (to === undefined || connection.id <= to),
  );
}

/**
 * Asserts that connections were made in the window and that none of them
 * forwarded a byte to Postgres (the window holds only refused attempts).
 */
export function assertNoBytesToPostgres(stack: LocalStack, from: number, to?: number): void {
  const refused = connectionsBetween(stack, from, to);
  assert.ok(refused.length > 0, 'the fault window holds no connection to judge');
  assert.deepEqual(
    refused.map((connection) => ({
      id: connection.id,
      bytesToUpstream: connection.bytesToUpstream,
    })),
    refused.map((connection) => ({ id: connection.id, bytesToUpstream: 0 })),
    'a connection that failed verification forwarded bytes to Postgres',
  );
}

/** Open TCP and TLS handles (stdout/stderr pipes of the runner left out). */
export function openSockets(): number {
  return process.getActiveResourcesInfo().filter((name) => /TCP|TLS/.test(name)).length;
}

/** Polls (bounded) until the open sockets are back to `baseline` or fewer. */
export async function socketsBackTo(baseline: number): Promise<void> {
  for (let i = 0; i < 200 && openSockets() > baseline; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.ok(
    openSockets() <= baseline,
    `sockets left open: ${openSockets()} > ${baseline} (${process.getActiveResourcesInfo().join(', ')})`,
  );
}

/** What a scenario body gets: pools it creates are ended and checked for leaks afterwards. */
export interface ScenarioKit {
  /** A pool against the stack (its options, quiet) plus `extra`; ended after the scenario. */
  pool(extra?: Partial<RaTlsPoolOptions>): RaTlsPool;
  /** A cold verifier of its own ({@link freshVerifier}); closed after the scenario. */
  verifier(extra?: Partial<DcapVerifierOptions>): DcapVerifier;
  /** Errors pools emitted for idle clients (pg-pool's 'error' event), by code. */
  readonly idleErrors: string[];
  /** A superuser client on the application database; ended after the scenario. */
  admin(): Promise<pg.Client>;
}

/**
 * Runs one scenario: afterwards every pool it made is ended (even when it
 * failed) and the process's sockets must come back to what they were before.
 */
export async function runScenario(
  stack: LocalStack,
  body: (kit: ScenarioKit) => Promise<void>,
): Promise<void> {
  const baseline = openSockets();
  const pools: RaTlsPool[] = [];
  const admins: pg.Client[] = [];
  const verifiers: DcapVerifier[] = [];
  const idleErrors: string[] = [];
  const kit: ScenarioKit = {
    pool: (extra = {}) => {
      const pool = createPool({
        connectionString: stack.databaseUrl,
        ...stack.clientOptions,
        logger: quiet,
        ...extra,
      } as RaTlsPoolOptions);
      // An idle client's backend dying is reported here, not to a caller.
      pool.on('error', (error: Error) => idleErrors.push(codeOf(error)));
      pools.push(pool);
      return pool;
    },
    verifier: (extra = {}) => {
      const verifier = freshVerifier(stack, extra);
      verifiers.push(verifier);
      return verifier;
    },
    idleErrors,
    admin: async () => {
      const url = new URL(stack.postgres!.superuserUrl);
      url.pathname = `/${stack.postgres!.database}`;
      const client = new pg.Client({ connectionString: url.toString() });
      client.on('error', () => {});
      admins.push(client);
      await client.connect();
      return client;
    },
  };
  try {
    await body(kit);
  } finally {
    stack.sidecar.reset();
    stack.pccs.setDown(false);
    stack.pccs.setStalled(false);
    stack.pccs.setFlooding(false);
    stack.guestAgent.setDown(false);
    await Promise.all(pools.map((pool) => (pool.ending ? undefined : pool.end())));
    await Promise.all(admins.map((client) => client.end().catch(() => {})));
    // Aborts collateral fetches still waiting on a stalled PCCS.
    for (const verifier of verifiers) verifier.close();
  }
  await socketsBackTo(baseline);
}
