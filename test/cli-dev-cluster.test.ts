import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseDevArguments } from '../src/cli/dev.js';
import { isRaTlsError } from '../src/errors.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const READY = '# pg-ra-tls dev: running';

test('dev --cluster options: defaults, and mistakes refused', () => {
  assert.deepEqual(parseDevArguments(['--cluster']).cluster, { standbys: 2, synchronous: false });
  assert.deepEqual(parseDevArguments(['--cluster', '--standbys', '1', '--synchronous']).cluster, {
    standbys: 1,
    synchronous: true,
  });
  assert.equal(parseDevArguments([]).cluster, undefined);
  for (const args of [
    ['--standbys', '1'],
    ['--cluster', '--standbys', 'many'],
    ['--cluster', '--database-url', 'postgres://x@y/z'],
  ]) {
    assert.throws(
      () => parseDevArguments(args),
      (e: unknown) => isRaTlsError(e, 'BAD_CONFIG'),
    );
  }
});

test('pg-ra-tls dev --cluster prints what a cluster pool needs, and stops on SIGINT', async () => {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', 'bin/pg-ra-tls.ts', 'dev', '--cluster', '--standbys', '1'],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  const exited = once(child, 'exit');
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        stdout += chunk.toString('utf8');
        if (stdout.includes(READY)) resolve();
      });
      exited.then(() => reject(new Error(`the CLI exited early:\n${stderr}`)));
    });
    const env: Record<string, string> = {};
    for (const match of stdout.matchAll(/^export ([A-Z0-9_]+)='([^']*)'$/gm)) {
      env[match[1]!] = match[2]!;
    }
    assert.ok(env['PG_RA_TLS_MEMBER_1_URL'] !== undefined);
    const rootPem = (await import('node:fs/promises')).readFile(
      env['PG_RA_TLS_TRUST_ROOT']!,
      'utf8',
    );
    const pool = createPool({
      connectionString: env['DATABASE_URL']!,
      dstackEndpoint: env['DSTACK_SIMULATOR_ENDPOINT']!,
      cluster: {
        domain: env['PG_RA_TLS_CLUSTER_DOMAIN']!,
        signer: env['PG_RA_TLS_CLUSTER_SIGNER']!,
        resolver: env['PG_RA_TLS_CLUSTER_RESOLVER']!.split(','),
      },
      verifier: new DcapVerifier({
        engine: 'js',
        rootCa: new Uint8Array(new X509Certificate(await rootPem).raw),
        pccsUrl: env['PG_RA_TLS_PCCS_URL']!,
        logger: () => {},
      }),
      policy: {
        allowedMrtds: [env['PG_RA_TLS_EXPECTED_MRTD']!],
        allowedAppIds: [env['PG_RA_TLS_EXPECTED_APP_ID']!],
      },
    });
    try {
      const { rows } = await pool.query('SELECT pg_is_in_recovery() AS standby');
      assert.deepEqual(rows, [{ standby: false }]);
    } finally {
      await pool.end();
    }
    child.kill('SIGINT');
    const [code] = await exited;
    assert.equal(code, 0, stderr);
    assert.match(stderr, /pg-ra-tls dev: stopped\n$/);
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }
});
