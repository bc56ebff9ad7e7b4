import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { inspectServer } from '../src/connection/inspect-server.js';
import { pgConnectOptsRaTls, verifyServer } from '../src/connection/verify-server.js';
import { isRaTlsError } from '../src/errors.js';
import { SpanAttributes, SpanNames } from '../src/telemetry/tracing.js';
import { NoopVerifier } from '../src/verification/noop-verifier.js';
import { type PoolStack, raTlsCredentials, startPoolStack } from './pool-harness.js';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
trace.setGlobalTracerProvider(provider);

let stack: PoolStack;
let originalCredentials: PoolStack['serverCredentials'];
before(async () => {
  stack = await startPoolStack();
  originalCredentials = stack.serverCredentials;
});
after(async () => {
  await stack.close();
  await provider.shutdown();
});
beforeEach(() => {
  stack.serverCredentials = originalCredentials;
  exporter.reset();
});

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const target = () => `127.0.0.1:${stack.sidecar.port}`;
const options = (allowedMrtds = [stack.mrtd]) => ({
  verifier: stack.verifier,
  dstackEndpoint: stack.agent.endpoint,
  policy: { allowedMrtds },
});

describe('inspectServer', () => {
  test('a genuine server: certificate, binding, report, timings; no byte to Postgres', async () => {
    const before = stack.sidecar.stats.connections.length;
    const started = performance.now();
    const inspection = await inspectServer(target(), options());
    const elapsed = performance.now() - started;
    assert.equal(inspection.error, undefined);
    assert.equal(inspection.binding, 'verified');
    assert.equal(inspection.policyRefused, false);
    assert.equal(inspection.report?.mrtd, stack.mrtd);
    assert.equal(inspection.certificate?.fingerprint, inspection.report?.fingerprint);
    assert.equal(inspection.certificate?.subject, 'CN=teesql sidecar');
    assert.ok(inspection.certificate?.attestationFormat !== undefined);
    // Durations within the call, not clock readings.
    for (const ms of [inspection.timings.dialMs, inspection.timings.verifyMs]) {
      assert.ok(typeof ms === 'number' && ms >= 0 && ms <= elapsed, `${ms} of ${elapsed} ms`);
    }
    assert.deepEqual(inspection.endpoint, {
      host: '127.0.0.1',
      port: stack.sidecar.port,
      servername: undefined,
      connectTimeoutMs: 10_000,
      handshakeTimeoutMs: 10_000,
    });
    const dialed = stack.sidecar.stats.connections.slice(before);
    assert.equal(dialed.length, 1);
    assert.equal(dialed[0]?.bytesToUpstream, 0);
    // verifyServer is the same check, throwing instead.
    assert.deepEqual((await verifyServer(target(), options())).mrtd, stack.mrtd);
  });

  test('refused by the policy: the error, and what the server does attest', async () => {
    const inspection = await inspectServer(target(), options(['ab'.repeat(48)]));
    assert.ok(isRaTlsError(inspection.error, 'MRTD_NOT_ALLOWED'));
    assert.equal(inspection.policyRefused, true);
    assert.equal(inspection.binding, 'verified');
    assert.equal(inspection.report?.mrtd, stack.mrtd, 'verified without pins, for display');
    const { dialMs, verifyMs } = inspection.timings;
    assert.ok(typeof dialMs === 'number' && dialMs >= 0 && dialMs < 60_000, String(dialMs));
    assert.ok(typeof verifyMs === 'number' && verifyMs >= 0 && verifyMs < 60_000, String(verifyMs));
    await assert.rejects(verifyServer(target(), options(['ab'.repeat(48)])), (error: unknown) =>
      isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  });

  test('a quote that does not bind the TLS key: binding failed, PUBKEY_MISMATCH, no report', async () => {
    stack.serverCredentials = raTlsCredentials(stack.authority, {
      reportData: new Uint8Array(64).fill(7),
    });
    const inspection = await inspectServer(target(), options());
    assert.equal(inspection.binding, 'failed');
    assert.ok(isRaTlsError(inspection.error, 'PUBKEY_MISMATCH'));
    assert.ok(!('report' in inspection), 'no report key at all');
    assert.equal(inspection.policyRefused, false);
  });

  test('nothing listening: a typed dial error and no certificate', async () => {
    const inspection = await inspectServer(`127.0.0.1:${await closedPort()}`, options());
    assert.ok(isRaTlsError(inspection.error, 'CONNECT_FAILED'));
    assert.equal(inspection.certificate, undefined);
    assert.equal(inspection.binding, 'not-checked');
    assert.equal(inspection.policyRefused, false);
    assert.deepEqual(inspection.timings, {});
  });

  test('reads every target form into the endpoint it dials, the TLS name apart from the address', async () => {
    const port = await closedPort();
    const timeouts = { connectTimeoutMs: 2000, handshakeTimeoutMs: 1500 };
    const quick = { ...options(), connectTimeout: '2s', handshakeTimeout: 1500 };
    const cases: [Parameters<typeof inspectServer>[0], object][] = [
      [`127.0.0.1:${port}`, { host: '127.0.0.1', port, servername: undefined }],
      [`  127.0.0.1:${port}\n`, { host: '127.0.0.1', port, servername: undefined }],
      [`[::1]:${port}`, { host: '::1', port, servername: undefined }],
      [`localhost:${port}`, { host: 'localhost', port, servername: 'localhost' }],
      [
        `postgres://user:secret@db.example:${port}/app?hostaddr=127.0.0.1`,
        { host: '127.0.0.1', port, servername: 'db.example' },
      ],
      [
        ` postgres://user@127.0.0.1:${port}/app `,
        { host: '127.0.0.1', port, servername: undefined },
      ],
      [
        `POSTGRESQL://user@127.0.0.1:${port}/app`,
        { host: '127.0.0.1', port, servername: undefined },
      ],
      [
        `host=db.example hostaddr=127.0.0.1 port=${port} password=secret`,
        { host: '127.0.0.1', port, servername: 'db.example' },
      ],
      [
        `postgres://user@127.0.0.2:${port}/app?hostaddr=127.0.0.1`,
        { host: '127.0.0.1', port, servername: undefined },
      ],
      [
        { host: '127.0.0.1', port, servername: 'sni.example' },
        { host: '127.0.0.1', port, servername: 'sni.example' },
      ],
      [
        { host: 'localhost', port },
        { host: 'localhost', port, servername: 'localhost' },
      ],
    ];
    for (const [given, endpoint] of cases) {
      const inspection = await inspectServer(given, quick);
      assert.deepEqual(inspection.endpoint, { ...endpoint, ...timeouts }, JSON.stringify(given));
      // Nothing listens there (IPv6 may not even exist on the machine): a typed dial error.
      assert.ok(isRaTlsError(inspection.error), JSON.stringify(given));
      assert.equal(inspection.certificate, undefined);
    }
  });

  test('a target without a port is the sidecar’s default port; ports 1 and 65535 are valid', async () => {
    const quick = { ...options(), connectTimeout: 200, handshakeTimeout: 200 };
    for (const [given, port] of [
      ['127.0.0.1', 5433],
      [{ host: '127.0.0.1' }, 5433],
      ['127.0.0.1:1', 1],
      ['127.0.0.1:65535', 65_535],
      [{ host: '127.0.0.1', port: 65_535 }, 65_535],
    ] as const) {
      const inspection = await inspectServer(given, quick);
      assert.equal(inspection.endpoint.port, port, JSON.stringify(given));
    }
  });

  test('a bad target object is BAD_CONFIG naming its host and port; a bad string is not echoed', async () => {
    const bad = [
      { host: '', port: 5433 },
      { host: '127.0.0.1', port: 0 },
      { host: '127.0.0.1', port: 65_536 },
      { host: '127.0.0.1', port: 1.5 },
    ];
    for (const target of bad) {
      await assert.rejects(inspectServer(target, options()), (error: unknown) => {
        assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
        assert.ok(error.message.includes(JSON.stringify(target)), error.message);
        assert.deepEqual(error.details, { option: 'target' });
        return true;
      });
    }
    await assert.rejects(inspectServer(null as never, options()), (error: unknown) =>
      isRaTlsError(error, 'BAD_CONFIG'),
    );
    await assert.rejects(
      inspectServer('postgres://u:hunter2@h:99999/db', options()),
      (error: unknown) => {
        assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
        assert.ok(!error.message.includes('hunter2'));
        return true;
      },
    );
    await assert.rejects(inspectServer('db.example:99999', options()), (error: unknown) => {
      assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
      assert.match(error.message, /verifyServer target \(a string, not shown\) is not/);
      assert.ok(!error.message.includes('db.example'));
      return true;
    });
  });

  test('a malformed target is BAD_CONFIG, thrown before any I/O', async () => {
    for (const bad of ['', 'host:0', 'host:70000', 'a b', 'host/path', '[::1']) {
      await assert.rejects(inspectServer(bad, options()), (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG'),
      );
    }
  });

  test('a debug TD refused for it still shows what it attests, verified without pins', async () => {
    // The DCAP engines refuse a debug TD themselves; the NoopVerifier leaves that to the policy.
    stack.serverCredentials = raTlsCredentials(stack.authority, { debug: true });
    const verifier = new NoopVerifier({ logger: () => {} });
    const inspection = await inspectServer(target(), { ...options(), verifier });
    assert.ok(isRaTlsError(inspection.error, 'DEBUG_MODE'));
    assert.equal(inspection.policyRefused, true);
    assert.equal(inspection.report?.mrtd, stack.mrtd);
  });

  test('a refused inspection’s durations are within the call', async () => {
    const started = performance.now();
    const inspection = await inspectServer(target(), options(['ab'.repeat(48)]));
    const elapsed = performance.now() - started;
    assert.equal(inspection.policyRefused, true);
    for (const ms of [inspection.timings.dialMs, inspection.timings.verifyMs]) {
      assert.ok(typeof ms === 'number' && ms >= 0 && ms <= elapsed, `${ms} of ${elapsed} ms`);
    }
  });

  test('the connect span names the server; it fails with the inspection’s error, or carries the report', async () => {
    await inspectServer(target(), options());
    await inspectServer(target(), options(['ab'.repeat(48)]));
    const spans = exporter.getFinishedSpans().filter((span) => span.name === SpanNames.CONNECT);
    assert.equal(spans.length, 2);
    for (const span of spans) {
      assert.equal(span.attributes[SpanAttributes.SERVER_ADDRESS], '127.0.0.1');
      assert.equal(span.attributes[SpanAttributes.SERVER_PORT], stack.sidecar.port);
    }
    const [passed, refused] = spans;
    assert.equal(passed!.status.code, SpanStatusCode.UNSET);
    assert.equal(Object.values(passed!.attributes).includes(stack.mrtd), true, 'report attributes');
    assert.equal(refused!.status.code, SpanStatusCode.ERROR);
    assert.match(String(refused!.status.message), /^MRTD_NOT_ALLOWED: /);
  });
});

describe('pgConnectOptsRaTls', () => {
  const attestation = () => ({
    verifier: stack.verifier,
    dstackEndpoint: stack.agent.endpoint,
    policy: { allowedMrtds: [stack.mrtd] },
  });

  test('takes the connection options besides the DSN and a signal; the config hands out its socket once', async () => {
    const config = await pgConnectOptsRaTls(stack.dsn, {
      ...attestation(),
      database: 'teesql',
      connectTimeout: '5s',
      signal: new AbortController().signal,
    });
    const stream = config.stream as () => { destroy(): void };
    const socket = stream();
    try {
      assert.equal(config.attestation.mrtd, stack.mrtd);
      assert.equal(config.database, 'teesql');
      const [span] = exporter.getFinishedSpans().filter((span) => span.name === SpanNames.CONNECT);
      assert.equal(span?.attributes[SpanAttributes.SERVER_ADDRESS], '127.0.0.1');
      assert.equal(span?.attributes[SpanAttributes.SERVER_PORT], stack.sidecar.port);
      assert.throws(stream, (error: unknown) => {
        assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
        assert.equal(
          error.message,
          'a pgConnectOptsRaTls config carries one verified socket and can be used once: ' +
            'call pgConnectOptsRaTls again for another connection',
        );
        return true;
      });
    } finally {
      socket.destroy();
    }
  });

  test('an aborted signal ends it before a byte; an unknown option is named with the function', async () => {
    const before = stack.sidecar.stats.connections.length;
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(
      pgConnectOptsRaTls(stack.dsn, { ...attestation(), signal: controller.signal }),
      (error: unknown) => isRaTlsError(error, 'CONNECTION_ENDED'),
    );
    assert.equal(stack.sidecar.stats.connections.length, before, 'no dial');
    await assert.rejects(
      pgConnectOptsRaTls(stack.dsn, { ...attestation(), databse: 'teesql' } as never),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') &&
        /^pgConnectOptsRaTls has no option "databse"/.test(error.message),
    );
  });
});
