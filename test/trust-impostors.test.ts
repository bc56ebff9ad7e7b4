/**
 * Issue 9, as an attacker plays it on the local stack: genuine firmware
 * booting a foreign kernel that writes the victim's app events, and a genuine
 * image keyed by a foreign KMS. Each is refused before the first byte of
 * Postgres, through every entry point; the old MRTD + app policy is shown
 * accepting the first, loudly.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Kysely, sql } from 'kysely';
import { raTlsDialect } from '../integrations/kysely/index.js';
import { createPool } from '../integrations/pg/index.js';
import { main } from '../src/cli/main.js';
import { verifyServer } from '../src/connection/verify-server.js';
import { isRaTlsError } from '../src/errors.js';
import type { Policy } from '../src/policy/types.js';
import type { SidecarImpostor } from '../src/testing/stack/sidecar.js';
import { attemptsSince, useLocalStack } from './support/integration-stack.js';

const stack = useLocalStack();
let scratch: string;

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'pg-ra-tls-trust-'));
});
after(async () => {
  if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
});

/** The stack's own policy: boot chain + KMS root + app pins. */
const fullPolicy = (): Policy => stack().clientOptions.policy;

/** Only the KMS root and the app pins: no boot measurement at all. */
const kmsOnlyPolicy = (): Policy => ({
  trustedKmsRoots: [stack().expected.kmsRoot],
  allowedAppIds: [stack().expected.appId],
  allowedComposeHashes: [stack().expected.composeHash],
});

/** What the README asked for before issue 9: MRTD, app-id and compose-hash. */
const oldPolicy = (): Policy => ({
  allowedMrtds: [stack().expected.mrtd],
  allowedAppIds: [stack().expected.appId],
  allowedComposeHashes: [stack().expected.composeHash],
});

/**
 * Runs `attempt` while the sidecar presents `impostor`, expects a RaTlsError
 * with `code`, and proves that no connection of the attempt forwarded a byte.
 */
async function refusedBeforeAnyByte(
  impostor: SidecarImpostor,
  code: string,
  attempt: () => Promise<unknown>,
): Promise<void> {
  const watermark = stack().sidecar.stats.accepted;
  stack().sidecar.misbehave({ impostor });
  try {
    await assert.rejects(attempt(), (error: unknown) => {
      assert.ok(isRaTlsError(error), String(error));
      assert.equal(error.code, code, error.message);
      return true;
    });
  } finally {
    stack().sidecar.reset();
  }
  const attempts = attemptsSince(stack(), watermark);
  assert.ok(attempts.length >= 1, 'the impostor was dialled');
  assert.deepEqual(
    attempts.map((connection) => connection.bytesToUpstream),
    attempts.map(() => 0),
    'no byte reached Postgres',
  );
}

const quiet = () => {};

const viaPool = (policy: Policy) => async () => {
  const pool = createPool({
    connectionString: stack().databaseUrl,
    ...stack().clientOptions,
    policy,
    logger: quiet,
  });
  try {
    await pool.query('SELECT 1');
  } finally {
    await pool.end();
  }
};

const viaKysely = (policy: Policy) => async () => {
  const db = new Kysely<Record<string, never>>({
    dialect: raTlsDialect({
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      policy,
      logger: quiet,
    }),
  });
  try {
    await sql`SELECT 1`.execute(db);
  } finally {
    await db.destroy();
  }
};

const viaVerifyServer = (policy: Policy) => () =>
  verifyServer(`127.0.0.1:${stack().sidecar.port}`, {
    ...stack().clientOptions,
    policy,
    logger: quiet,
  });

/** `pg-ra-tls verify` in-process; rejects with a RaTlsError-shaped value carrying the printed code. */
async function cli(
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const rootCa = join(scratch, 'test-root.pem');
  await writeFile(rootCa, stack().trustRoot.rootCaPem);
  const code = await main(
    [
      'verify',
      `127.0.0.1:${stack().sidecar.port}`,
      '--root-ca',
      rootCa,
      '--pccs-url',
      stack().pccsUrl,
      '--dstack-endpoint',
      stack().dstackEndpoint,
      ...args,
    ],
    {
      stdout: (text) => {
        stdout += text;
      },
      stderr: (text) => {
        stderr += text;
      },
      env: {},
      process,
    },
  );
  return { code, stdout, stderr };
}

const viaCli = (args: () => Promise<string[]>) => async () => {
  const result = await cli(await args());
  assert.equal(result.code, 1, result.stdout + result.stderr);
  const code = /^result +REFUSED: (\w+)/m.exec(result.stdout)?.[1];
  // The CLI reports, it does not throw: surface its verdict as the library's error.
  const { RaTlsError } = await import('../src/errors.js');
  throw new RaTlsError((code ?? 'BAD_CONFIG') as never, result.stdout);
};

async function kmsRootFile(): Promise<string> {
  const path = join(scratch, 'kms-root.pem');
  await writeFile(path, stack().serverIssuer.rootCertificatePem);
  return path;
}

function bootChainFlags(): string[] {
  const { mrtd, rtmr0, rtmr1, rtmr2 } = stack().expected;
  return ['--mrtd', mrtd, '--rtmr0', rtmr0, '--rtmr1', rtmr1, '--rtmr2', rtmr2];
}

describe('same firmware, foreign kernel writing the victim app events', () => {
  test('measurements pinned: createPool, Kysely, verifyServer and the CLI refuse it with MEASUREMENT_NOT_ALLOWED', async () => {
    await refusedBeforeAnyByte('foreign-kernel', 'MEASUREMENT_NOT_ALLOWED', viaPool(fullPolicy()));
    await refusedBeforeAnyByte(
      'foreign-kernel',
      'MEASUREMENT_NOT_ALLOWED',
      viaKysely(fullPolicy()),
    );
    await refusedBeforeAnyByte(
      'foreign-kernel',
      'MEASUREMENT_NOT_ALLOWED',
      viaVerifyServer(fullPolicy()),
    );
    await refusedBeforeAnyByte(
      'foreign-kernel',
      'MEASUREMENT_NOT_ALLOWED',
      viaCli(async () => bootChainFlags()),
    );
  });

  test('the refusal names RTMR1, the kernel, which is what the impostor changed', async () => {
    stack().sidecar.misbehave({ impostor: 'foreign-kernel' });
    try {
      await assert.rejects(viaVerifyServer(fullPolicy())(), (error: unknown) => {
        assert.ok(isRaTlsError(error, 'MEASUREMENT_NOT_ALLOWED'));
        assert.equal(error.details.register, 'RTMR1');
        return true;
      });
    } finally {
      stack().sidecar.reset();
    }
  });

  test('only the KMS root pinned: createPool, Kysely, verifyServer and the CLI refuse it with KMS_NOT_TRUSTED', async () => {
    await refusedBeforeAnyByte('foreign-kernel', 'KMS_NOT_TRUSTED', viaPool(kmsOnlyPolicy()));
    await refusedBeforeAnyByte('foreign-kernel', 'KMS_NOT_TRUSTED', viaKysely(kmsOnlyPolicy()));
    await refusedBeforeAnyByte(
      'foreign-kernel',
      'KMS_NOT_TRUSTED',
      viaVerifyServer(kmsOnlyPolicy()),
    );
    await refusedBeforeAnyByte(
      'foreign-kernel',
      'KMS_NOT_TRUSTED',
      viaCli(async () => ['--kms-root', await kmsRootFile(), '--app-id', stack().expected.appId]),
    );
  });

  test('the old MRTD + app-id + compose-hash policy accepts it, and says loudly why it should not be used', async () => {
    stack().sidecar.misbehave({ impostor: 'foreign-kernel' });
    const logged: string[] = [];
    try {
      const report = await verifyServer(`127.0.0.1:${stack().sidecar.port}`, {
        ...stack().clientOptions,
        policy: oldPolicy(),
        logger: (message) => logged.push(message),
      });
      assert.equal(report.mrtd, stack().expected.mrtd);
      assert.equal(report.app?.appId, stack().expected.appId, 'the forged app events replayed');
      assert.notEqual(report.rtmr1, stack().expected.rtmr1);
      assert.notEqual(report.kms?.rootSpkiSha256, stack().expected.kmsRoot);
      assert.equal(logged.length, 1);
      assert.match(logged[0]!, /foreign kernel on genuine firmware/);
      assert.deepEqual(
        report.warnings
          .filter((warning) => !/TEST root of trust/.test(warning))
          .map((warning) => `pg-ra-tls: ${warning}`),
        logged,
      );
    } finally {
      stack().sidecar.reset();
    }
  });
});

describe('genuine quote, chain from a foreign KMS root', () => {
  test('createPool, Kysely, verifyServer and the CLI refuse it with KMS_NOT_TRUSTED', async () => {
    await refusedBeforeAnyByte('foreign-kms', 'KMS_NOT_TRUSTED', viaPool(fullPolicy()));
    await refusedBeforeAnyByte('foreign-kms', 'KMS_NOT_TRUSTED', viaKysely(fullPolicy()));
    await refusedBeforeAnyByte('foreign-kms', 'KMS_NOT_TRUSTED', viaVerifyServer(fullPolicy()));
    await refusedBeforeAnyByte(
      'foreign-kms',
      'KMS_NOT_TRUSTED',
      viaCli(async () => [...bootChainFlags(), '--kms-root', await kmsRootFile()]),
    );
  });
});

describe('the genuine server under the full policy', () => {
  test('a pool re-attests with the chain of its own handshakes', async () => {
    let offsetMs = 0;
    const pool = createPool({
      connectionString: stack().databaseUrl,
      ...stack().clientOptions,
      reattestEvery: '1m',
      now: () => new Date(Date.now() + offsetMs),
      max: 1,
    });
    const reattested: unknown[] = [];
    pool.on('reattested', (report) => reattested.push(report));
    try {
      await pool.query('SELECT 1');
      offsetMs = 120_000;
      await pool.query('SELECT 2');
      assert.equal(reattested.length, 1, 'the checkout re-attested');
      assert.equal(pool.attestation?.kms?.pinned, true);
    } finally {
      await pool.end();
    }
  });

  test('the CLI prints the boot chain and KMS root to copy, and accepts them as pins', async () => {
    const first = await cli([]);
    assert.equal(first.code, 0, first.stderr);
    const field = (label: string) => new RegExp(`^${label} +(.*)$`, 'm').exec(first.stdout)?.[1];
    assert.equal(field('rtmr1'), stack().expected.rtmr1);
    assert.match(
      field('kms root') ?? '',
      new RegExp(`^spki sha256 ${stack().expected.kmsRoot} \\(not pinned\\)`),
    );
    assert.match(field('key-provider') ?? '', /"name":"kms"/);

    const json = await cli(['--json']);
    const measurements = join(scratch, 'measurements.json');
    await writeFile(measurements, json.stdout);
    const kmsRoot = join(scratch, 'kms-root.hex');
    await writeFile(kmsRoot, `${JSON.parse(json.stdout).attestation.kms.rootSpkiSha256}\n`);
    const pinned = await cli(['--measurements', measurements, '--kms-root', kmsRoot, '--json']);
    assert.equal(pinned.code, 0, pinned.stdout + pinned.stderr);
    const report = JSON.parse(pinned.stdout);
    assert.equal(report.attestation.kms.pinned, true);
    assert.equal(report.policy.allowedMeasurements.length, 1);
    assert.deepEqual(report.policy.trustedKmsRoots, [stack().expected.kmsRoot]);
    assert.deepEqual(report.policy.warnings, []);
  });

  test('the CLI prints the weak-pin warning for --mrtd and --app-id alone, and not once the boot chain is pinned', async () => {
    const weak = await cli(['--mrtd', stack().expected.mrtd, '--app-id', stack().expected.appId]);
    assert.equal(weak.code, 0, weak.stderr);
    assert.match(
      weak.stdout,
      /^warning +--mrtd, --app-id are pinned without .*--kms-root: .*foreign kernel/m,
    );
    const pinned = await cli([...bootChainFlags(), '--app-id', stack().expected.appId]);
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.doesNotMatch(pinned.stdout, /^warning/m);
  });

  test('CLI pins that pin nothing are usage errors (exit 2)', async () => {
    const { mrtd, rtmr1 } = stack().expected;
    for (const args of [
      ['--rtmr1', rtmr1],
      ['--mrtd', mrtd, '--rtmr1', rtmr1],
      ['--measurements', join(scratch, 'missing.json')],
    ]) {
      const result = await cli(args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    }
    const empty = join(scratch, 'empty.json');
    await writeFile(empty, '[]');
    assert.equal((await cli(['--measurements', empty])).code, 2);
  });
});
