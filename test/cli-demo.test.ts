import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leftovers, processesMentioning, runDemo } from './support/demo-runner.js';

test('pg-ra-tls demo runs end to end, exits 0 and leaves no process or temp dir behind', async () => {
  await runDemo(async ({ code, stdout, stderr, scratch }) => {
    assert.equal(code, 0, `stdout:\n${stdout}\nstderr:\n${stderr}`);
    assert.match(stdout, /TEST root of trust, not Intel's/);
    assert.match(stdout, /connecting with Kysely through the gateway \(SNI [0-9a-f]{40}-5433s\./);
    assert.match(stdout, /MRTD +[0-9a-f]{96}\n/);
    assert.match(stdout, /app-id +[0-9a-f]{40}\n/);
    assert.match(stdout, /compose-hash +[0-9a-f]{64}\n/);
    assert.match(stdout, /fingerprint +sha256 [0-9a-f]{64}\n/);
    assert.match(stdout, /TCB status +UpToDate/);
    assert.match(stdout, /inserted 3 rows, read back 3: "attested", "before", "the first byte"/);
    assert.match(
      stdout,
      /INSERT refused by Postgres: 42501 permission denied for table demo_notes/,
    );
    assert.match(
      stdout,
      /unpinned image .*: refused before any SQL with MRTD_NOT_ALLOWED; bytes forwarded to Postgres: 0\n/,
    );
    assert.match(
      stdout,
      /foreign kernel forging the app events: refused before any SQL with MEASUREMENT_NOT_ALLOWED; bytes forwarded to Postgres: 0\n/,
    );
    assert.match(stdout, /KMS root +spki sha256 [0-9a-f]{16}… \(pinned\)/);
    assert.match(
      stdout,
      /replayed with another key: refused before any SQL with PUBKEY_MISMATCH; bytes forwarded to Postgres: 0\n/,
    );
    // The failover act: the pool follows the new leader, no acknowledged write is lost,
    // and every error callers saw during the switch carried a code.
    assert.match(
      stdout,
      /\[6\/7\] a replicated cluster fails over: leader stopped, standby promoted, manifest republished/,
    );
    assert.match(stdout, /cluster up in .*: a leader and a synchronous hot standby/);
    assert.match(
      stdout,
      /4 writers, one pool following the manifest: 20 rows on leader [0-9a-f]{12}…/,
    );
    assert.match(
      stdout,
      /manifest epoch 2 published; the pool attested [0-9a-f]{12}… and wrote there \d+ ms later\n/,
    );
    assert.match(
      stdout,
      /all (\d+) acknowledged writes are on the new leader; \d+ failed during the switch, each typed: (none|[A-Z0-9_]+ ×\d+(, [A-Z0-9_]+ ×\d+)*)\n/,
    );
    assert.match(stdout, /^done in /m);
    const lines = stdout.trimEnd().split('\n');
    assert.ok(lines.length <= 32, `compact output, got ${lines.length} lines`);
    assert.doesNotMatch(stderr, /error/i);

    const left = await leftovers(scratch);
    assert.deepEqual(left, [], 'every temp dir was removed');
    assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
  });
});

test('a closed stdout (pg-ra-tls demo | head) stops the stack and leaves nothing behind', async () => {
  let closed = false;
  await runDemo(
    async ({ code, stderr, scratch }) => {
      assert.equal(code, 141, `stderr:\n${stderr}`);
      assert.match(stderr, /pg-ra-tls demo: SIGPIPE: stopped; temporary files removed/);
      assert.doesNotMatch(stderr, /Unhandled|EPIPE/);
      assert.deepEqual(await leftovers(scratch), [], 'every temp dir was removed');
      assert.deepEqual(await processesMentioning(scratch), [], 'no Postgres is left running');
    },
    (stdout, child) => {
      // What `head -3` does: read a few lines, then close the pipe.
      if (!closed && stdout.includes('[2/7]')) {
        closed = true;
        child.stdout.destroy();
      }
    },
  );
});
