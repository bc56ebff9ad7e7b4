/**
 * Scaffolding shared by the test/integration-*.test.ts files: one local stack
 * per file, a check that it left no socket behind, and a sidecar that presents
 * a foreign MRTD so each integration can prove its refusal reaches the caller
 * before Postgres sees a byte.
 */
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { createDstackIssuer } from '../../src/testing/dstack-issuer.js';
import { type LocalStack, startLocalStack } from '../../src/testing/local-stack.js';
import type { SidecarConnectionStats } from '../../src/testing/stack/sidecar.js';

/** What a test file adds to the stack's lifecycle. */
export interface LocalStackHooks {
  /**
   * Prepares the file's tables and long-lived clients once the stack is up.
   * It runs inside the stack's own `before`, not in a `before` of the file's:
   * in Node 20 a top-level `before` starts as soon as it is registered, without
   * waiting for an earlier one, so it could run before the stack exists.
   */
  readonly setup?: (stack: LocalStack) => Promise<void>;
  /**
   * Closes the file's long-lived clients. It runs before the stack stops, not in
   * an `after` of the file's own: node:test runs `after` hooks in the order they
   * were registered, so a later one would come after the socket check.
   */
  readonly teardown?: () => Promise<void>;
}

/**
 * Registers `before`/`after` hooks that start a quiet local stack for the
 * calling test file and, once it is stopped, assert that no TCP, TLS or pipe
 * handle is left open. Call it once, at the top level of the file; the file's
 * own preparation and clean-up go in `hooks`.
 *
 * @returns The running stack; calling it before the `before` hook has run throws.
 */
export function useLocalStack(hooks: LocalStackHooks = {}): () => LocalStack {
  let stack: LocalStack | undefined;
  before(async () => {
    stack = await startLocalStack({ logger: () => {} });
    await hooks.setup?.(stack);
  });
  after(async () => {
    try {
      await hooks.teardown?.();
    } finally {
      // Stop even when the file's teardown failed, or the stack outlives the test run.
      await stack?.stop();
    }
    assert.deepEqual(openSockets(), [], 'every socket and server is closed');
  });
  return () => {
    if (stack === undefined) throw new Error('the local stack is not started yet');
    return stack;
  };
}

/**
 * Makes the sidecar present a certificate of the stack's own test authority
 * whose identity differs from `stack.expected` only in the MRTD, so a refusal
 * can come from the MRTD pin alone. It applies to connections accepted from
 * now on, until `stack.sidecar.reset()`.
 *
 * @returns The last sidecar connection id before the switch, for {@link attemptsSince}.
 */
export async function presentForeignMrtd(stack: LocalStack): Promise<number> {
  const impostor = createDstackIssuer({
    authority: stack.authority,
    identity: { ...stack.expected, mrtd: 'ee'.repeat(48) },
  });
  const issued = await impostor.issueTlsKey({ usageRaTls: true, usageServerAuth: true });
  const watermark = stack.sidecar.stats.accepted;
  stack.sidecar.misbehave({
    credentials: { key: issued.key, cert: issued.certificateChain.join('\n') },
  });
  return watermark;
}

/**
 * The sidecar's records of the connections accepted after `watermark` (ids are
 * 1-based in accept order, so `stats.accepted` taken earlier is a watermark),
 * e.g. to check how many bytes each forwarded to Postgres.
 */
export function attemptsSince(
  stack: LocalStack,
  watermark: number,
): readonly SidecarConnectionStats[] {
  return stack.sidecar.stats.connections.filter((connection) => connection.id > watermark);
}

/**
 * Open TCP, TLS and pipe handles. `PipeWrap` is left out: under `node --test`
 * this process's stdout and stderr are pipes to the runner, open to the end.
 */
function openSockets(): string[] {
  return process
    .getActiveResourcesInfo()
    .filter((name) => /TCP|TLS|Pipe/.test(name) && name !== 'PipeWrap');
}
