/**
 * A local Postgres never outlives the process that started it: its watchdog
 * stops it and removes its files when the owner is SIGKILLed, and when the
 * watchdog was killed too, the next start reaps what was left.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isAlive, reapOrphans } from '../src/testing/stack/watchdog.js';

const root = fileURLToPath(new URL('..', import.meta.url));

interface Started {
  readonly owner: ReturnType<typeof spawn>;
  readonly pid: number;
  readonly watchdogPid: number;
  readonly dataDirectory: string;
}

/** A child process that starts an embedded Postgres, reports it, and waits to be killed. */
async function startOwner(): Promise<Started> {
  const script = `
    import { startPostgres } from './src/testing/stack/postgres.ts';
    const postgres = await startPostgres();
    console.log(JSON.stringify({ pid: postgres.pid, watchdogPid: postgres.watchdogPid, dataDirectory: postgres.dataDirectory }));
    setInterval(() => {}, 1 << 30);
  `;
  const owner = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: owner.stdout! }), 'line')) as [string];
  const started = JSON.parse(line) as Omit<Started, 'owner'>;
  assert.ok(isAlive(started.pid), 'Postgres runs');
  assert.ok(isAlive(started.watchdogPid), 'its watchdog runs');
  return { owner, ...started };
}

/** Waits (bounded by the test timeout) for a condition another process brings about. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await delay(25);
}

async function kill(child: ReturnType<typeof spawn>): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

test('a SIGKILLed owner takes its Postgres and its files with it', async () => {
  const started = await startOwner();
  await kill(started.owner);
  // The watchdog exits once it has stopped the server and removed the files.
  await until(() => !isAlive(started.watchdogPid));
  assert.equal(isAlive(started.pid), false, 'Postgres is gone');
  assert.equal(existsSync(started.dataDirectory), false, 'its data directory is gone');
});

test('when the watchdog died too, the next start reaps the orphan', async () => {
  const started = await startOwner();
  process.kill(started.watchdogPid, 'SIGKILL');
  await until(() => !isAlive(started.watchdogPid));
  await kill(started.owner);
  assert.equal(isAlive(started.pid), true, 'the orphaned Postgres still runs');
  assert.equal(existsSync(started.dataDirectory), true);
  const reaped = await reapOrphans(dirname(dirname(started.dataDirectory)));
  assert.ok(reaped >= 1, `reaped ${reaped}`);
  assert.equal(isAlive(started.pid), false, 'the orphan was stopped');
  assert.equal(existsSync(started.dataDirectory), false, 'its files were removed');
});

test('a SIGKILLed owner takes a replication standby and its files with it too', async () => {
  const script = `
    import { startPostgres } from './src/testing/stack/postgres.ts';
    import { REPLICATION_SETTINGS, startStandby } from './src/testing/cluster/replication.ts';
    const primary = await startPostgres({ settings: REPLICATION_SETTINGS });
    const standby = await startStandby({
      superuserUrl: primary.superuserUrl,
      primaryDataDirectory: primary.dataDirectory,
      applicationName: 'watchdog_test',
    });
    console.log(JSON.stringify({ pid: standby.pid, dataDirectory: standby.dataDirectory, primaryPid: primary.pid }));
    setInterval(() => {}, 1 << 30);
  `;
  const owner = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: owner.stdout! }), 'line')) as [string];
  const standby = JSON.parse(line) as { pid: number; dataDirectory: string; primaryPid: number };
  assert.ok(isAlive(standby.pid), 'the standby runs');
  await kill(owner);
  await until(() => !isAlive(standby.pid) && !isAlive(standby.primaryPid));
  await until(() => !existsSync(standby.dataDirectory));
  assert.equal(isAlive(standby.pid), false, 'the standby is gone');
});
