/** Ctrl-C during the demo, in the single-server part and in the failover act. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leftovers, processesMentioning, runDemo } from './support/demo-runner.js';

test('Ctrl-C during the demo stops the stack, exits 130 and leaves nothing behind', async () => {
  await runDemo(
    async ({ code, stdout, stderr, scratch }) => {
      assert.equal(code, 130, `stdout:\n${stdout}\nstderr:\n${stderr}`);
      assert.match(stderr, /pg-ra-tls demo: SIGINT: stopped; temporary files removed/);
      assert.doesNotMatch(stdout, /^done in /m);
      assert.deepEqual(await leftovers(scratch), [], 'every temp dir was removed');
      assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
    },
    (stdout, child) => {
      // Interrupt once the stack is up and the first connection is being made.
      if (stdout.includes('[2/7]') && child.exitCode === null) child.kill('SIGINT');
    },
  );
});

test('Ctrl-C during the failover act stops the cluster too, exits 130 and leaves nothing behind', async () => {
  await runDemo(
    async ({ code, stdout, stderr, scratch }) => {
      assert.equal(code, 130, `stdout:\n${stdout}\nstderr:\n${stderr}`);
      assert.match(stdout, /cluster up in /);
      assert.match(stderr, /pg-ra-tls demo: SIGINT: stopped; temporary files removed/);
      assert.doesNotMatch(stdout, /^done in /m);
      assert.deepEqual(await leftovers(scratch), [], 'every temp dir was removed');
      assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
    },
    (stdout, child) => {
      // Interrupt once the cluster (a primary and a standby) is up.
      if (stdout.includes('cluster up in ') && child.exitCode === null) child.kill('SIGINT');
    },
  );
});
