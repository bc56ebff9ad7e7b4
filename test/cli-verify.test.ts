import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { main } from '../src/cli/main.js';
import { createDstackIssuer } from '../src/testing/dstack-issuer.js';
import { type LocalStack, startLocalStack } from '../src/testing/local-stack.js';
import type { SidecarCredentials } from '../src/testing/stack/sidecar.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

let stack: LocalStack;
let scratch: string;
let rootCaPath: string;

before(async () => {
  stack = await startLocalStack({ logger: () => {} });
  scratch = await mkdtemp(join(tmpdir(), 'pg-ra-tls-cli-verify-'));
  rootCaPath = join(scratch, 'test-root.pem');
  await writeFile(rootCaPath, stack.trustRoot.rootCaPem);
});

after(async () => {
  await stack?.stop();
  if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
});

interface Result {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `pg-ra-tls verify <args>` in-process with captured output and the given environment. */
async function verify(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  let stdout = '';
  let stderr = '';
  const code = await main(['verify', ...args], {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
    env,
    process,
  });
  return { code, stdout, stderr };
}

/** The flags that trust this stack's test root and its PCCS. */
function trustStack(): string[] {
  return ['--root-ca', rootCaPath, '--pccs-url', stack.pccsUrl];
}

function pinStack(): string[] {
  return [
    '--mrtd',
    stack.expected.mrtd,
    '--app-id',
    stack.expected.appId,
    '--compose-hash',
    stack.expected.composeHash,
  ];
}

function sidecarAddress(): string {
  return `127.0.0.1:${stack.sidecar.port}`;
}

async function withSidecarPresenting<T>(
  credentials: SidecarCredentials,
  body: () => Promise<T>,
): Promise<T> {
  stack.sidecar.misbehave({ credentials });
  try {
    return await body();
  } finally {
    stack.sidecar.reset();
  }
}

function field(stdout: string, label: string): string | undefined {
  return new RegExp(`^${label} +(.*)$`, 'm').exec(stdout)?.[1];
}

test('given the stack policy, verify passes, exits 0 and prints every verified fact', async () => {
  const result = await verify([
    sidecarAddress(),
    ...trustStack(),
    ...pinStack(),
    '--dstack-endpoint',
    stack.dstackEndpoint,
  ]);

  assert.equal(result.code, 0, result.stderr);
  assert.match(field(result.stdout, 'result') ?? '', /^VERIFIED/);
  assert.equal(field(result.stdout, 'mrtd'), stack.expected.mrtd);
  assert.equal(field(result.stdout, 'app-id'), stack.expected.appId);
  assert.equal(field(result.stdout, 'compose-hash'), stack.expected.composeHash);
  assert.match(field(result.stdout, 'fingerprint') ?? '', /^sha256 [0-9a-f]{64}$/);
  assert.match(field(result.stdout, 'subject') ?? '', /dstack\.localhost/);
  assert.match(field(result.stdout, 'valid') ?? '', /^1975-01-01T00:00:00\.000Z to /);
  for (const label of ['rtmr0', 'rtmr1', 'rtmr2', 'rtmr3']) {
    assert.match(field(result.stdout, label) ?? '', /^[0-9a-f]{96}/, label);
  }
  assert.match(field(result.stdout, 'instance-id') ?? '', /^[0-9a-f]{40}$/);
  assert.match(field(result.stdout, 'tcb status') ?? '', /^UpToDate/);
  assert.equal(field(result.stdout, 'format'), 'versioned-v0, TDX quote v4');
  assert.match(field(result.stdout, 'binding') ?? '', /^ok/);
  assert.equal(field(result.stdout, 'verifier'), 'dcap:js');
  assert.match(field(result.stdout, 'root of trust') ?? '', /TEST ROOT .*NOT Intel/);
  assert.match(field(result.stdout, 'policy') ?? '', /^PASS: MRTD in --mrtd \(1\)/);
  assert.match(field(result.stdout, 'client cert') ?? '', /guest agent/);
  assert.match(result.stderr, /WARNING: .*custom root CA/, 'the test root is announced loudly');
});

test('given the gateway URL, --json reports the stack identity under stable names and no secret', async () => {
  const url = stack.gatewayUrl!;
  const result = await verify([url, ...trustStack(), '--json'], {
    DSTACK_SIMULATOR_ENDPOINT: stack.dstackEndpoint,
  });

  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  assert.equal(report.version, 1);
  assert.equal(report.passed, true);
  assert.equal(report.error, null);
  assert.equal(report.target.host, '127.0.0.1', 'TCP went to the libpq hostaddr');
  assert.equal(report.target.servername, stack.gatewayServername, 'the host name was the SNI');
  assert.equal(report.attestation.mrtd, stack.expected.mrtd);
  assert.equal(report.app.appId, stack.expected.appId);
  assert.equal(report.app.composeHash, stack.expected.composeHash);
  assert.equal(report.certificate.binding, 'verified');
  assert.equal(report.policy.verdict, 'passed');
  assert.equal(report.rootOfTrust.kind, 'custom');
  assert.equal(report.clientCertificate.endpoint, stack.dstackEndpoint);
  const secret = /:([0-9a-f]{64})@/.exec(url)![1]!;
  assert.ok(!result.stdout.includes(secret), 'the cluster secret is not printed');
  assert.ok(!result.stderr.includes(secret));
});

test('given a wrong --mrtd, verify exits 1 with MRTD_NOT_ALLOWED and still shows the real MRTD', async () => {
  const result = await verify([
    sidecarAddress(),
    ...trustStack(),
    '--mrtd',
    'ee'.repeat(48),
    '--dstack-endpoint',
    stack.dstackEndpoint,
  ]);

  assert.equal(result.code, 1);
  assert.match(result.stderr, /^pg-ra-tls: MRTD_NOT_ALLOWED: MRTD [0-9a-f]{96} is not in --mrtd/m);
  assert.equal(field(result.stdout, 'mrtd'), stack.expected.mrtd);
  assert.match(field(result.stdout, 'policy') ?? '', /^FAIL MRTD_NOT_ALLOWED/);
  assert.match(field(result.stdout, 'result') ?? '', /^REFUSED: MRTD_NOT_ALLOWED/);
});

test('given a sidecar whose certificate has no attestation, verify exits 1 with NO_ATTESTATION', async () => {
  const plain = await stack.serverIssuer.issueTlsKey({ usageServerAuth: true });
  const result = await withSidecarPresenting(
    { key: plain.key, cert: plain.certificateChain.join('\n') },
    () => verify([sidecarAddress(), ...trustStack(), '--json']),
  );

  assert.equal(result.code, 1);
  const report = JSON.parse(result.stdout);
  assert.equal(report.passed, false);
  assert.equal(report.error.code, 'NO_ATTESTATION');
  assert.equal(report.attestation, null);
  assert.equal(report.certificate.attestationFormat, null);
  assert.equal(report.policy.verdict, 'not-evaluated');
  assert.match(result.stderr, /^pg-ra-tls: NO_ATTESTATION: /m);
});

test('given a quote bound to another key, verify reports the binding as failed (PUBKEY_MISMATCH)', async () => {
  const stranger = await createDstackIssuer({ authority: stack.authority }).issueTlsKey({
    usageRaTls: true,
    usageServerAuth: true,
  });
  const replayed = await stack.serverIssuer.issueTlsKey({
    usageRaTls: true,
    usageServerAuth: true,
    faults: { bindTo: stranger.spki },
  });
  const result = await withSidecarPresenting(
    { key: replayed.key, cert: replayed.certificateChain.join('\n') },
    () => verify([sidecarAddress(), ...trustStack(), '--json']),
  );

  assert.equal(result.code, 1);
  const report = JSON.parse(result.stdout);
  assert.equal(report.error.code, 'PUBKEY_MISMATCH');
  assert.equal(report.certificate.binding, 'failed');
});

test('given no guest agent, verify presents no client certificate and still reads the sidecar (TLS 1.3)', async () => {
  const established = stack.sidecar.stats.established;
  const result = await verify([sidecarAddress(), ...trustStack(), ...pinStack()]);

  assert.equal(result.code, 0, result.stderr);
  assert.match(field(result.stdout, 'client cert') ?? '', /^none/);
  assert.equal(stack.sidecar.stats.established, established, 'nothing was piped to Postgres');
});

test('given a sidecar that never answers, --timeout ends the attempt with HANDSHAKE_TIMEOUT', async () => {
  stack.sidecar.misbehave({ stallHandshake: true });
  let result: Result;
  try {
    result = await verify([sidecarAddress(), ...trustStack(), '--timeout', '300ms']);
  } finally {
    stack.sidecar.reset();
  }
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^pg-ra-tls: HANDSHAKE_TIMEOUT: .*300 ms/m);
});

test('command-line mistakes exit 2 with BAD_CONFIG before any connection', async () => {
  const mistakes: [string[], RegExp][] = [
    [[], /exactly one server/],
    [['a:1', 'b:2'], /exactly one server/],
    [['db.example', '--mrtd', 'zz'], /--mrtd must be 48 bytes of hex/],
    [['db.example', '--tcb-status', 'Fine'], /--tcb-status .*is not a TCB status/],
    [['db.example', '--engine', 'rust'], /--engine must be one of both, js;/],
    [['db.example', '--engine', 'wasm'], /--engine wasm is not offered: .*QE identity/],
    [['db.example', '--engine', 'both', '--root-ca', rootCaPath], /--root-ca works only with/],
    [['db.example', '--intel-api', '--engine', 'js'], /cannot be combined with --engine/],
    [['db.example', '--intel-api'], /INTEL_TRUST_AUTHORITY_API_KEY/],
    [['db.example', '--root-ca', join(scratch, 'missing.pem')], /--root-ca .* cannot be read/],
    [['db.example', '--timeout', 'soon'], /--timeout must be/],
    [['db.example', '--frobnicate'], /unknown option --frobnicate/],
    [['postgres://u:hunter2@:5433/db'], /is not a valid URL/],
  ];
  for (const [args, message] of mistakes) {
    const result = await verify(args);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /^pg-ra-tls: BAD_CONFIG: /, args.join(' '));
    assert.match(result.stderr, message, args.join(' '));
    assert.doesNotMatch(result.stderr, /hunter2/, 'a password in the URL is never echoed');
    assert.equal(result.stdout, '');
  }
});

test('the real bin verifies the gateway URL and exits 0 with JSON on stdout', async () => {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'bin/pg-ra-tls.ts', 'verify', stack.gatewayUrl!, ...trustStack(), '--json'],
    {
      cwd: root,
      env: { ...process.env, DSTACK_SIMULATOR_ENDPOINT: stack.dstackEndpoint },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const [code] = await once(child, 'close');

  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.equal(report.passed, true);
  assert.equal(report.attestation.mrtd, stack.expected.mrtd);
  assert.equal(report.app.appId, stack.expected.appId);
});
