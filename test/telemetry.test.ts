import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, beforeEach, describe, test } from 'node:test';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { isRaTlsError } from '../src/errors.js';
import { createPool, type RaTlsPoolOptions } from '../src/pool/ra-tls-pool.js';
import { SpanAttributes, SpanNames, TRACER_NAME } from '../src/telemetry/tracing.js';
import { PACKAGE_VERSION } from '../src/telemetry/version.js';
import { type PoolStack, raTlsCredentials, stackOptions, startPoolStack } from './pool-harness.js';

const exporter = new InMemorySpanExporter();
const contextManager = new AsyncLocalStorageContextManager().enable();
context.setGlobalContextManager(contextManager);
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
trace.setGlobalTracerProvider(provider);

let stack: PoolStack;
before(async () => {
  stack = await startPoolStack();
});
after(async () => {
  await stack.close();
  await provider.shutdown();
  contextManager.disable();
});
beforeEach(() => exporter.reset());

function options(extra: Partial<RaTlsPoolOptions> = {}): RaTlsPoolOptions {
  return stackOptions(stack, extra);
}

const named = (name: string) => exporter.getFinishedSpans().filter((span) => span.name === name);
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

describe('tracer identity', () => {
  test('the tracer is pg-ra-tls at the version in package.json', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    assert.equal(TRACER_NAME, 'pg-ra-tls');
    assert.equal(PACKAGE_VERSION, pkg.version);
  });
});

describe('spans of attested connections', () => {
  test('connect and verify nest under the caller’s active span and describe the server', async () => {
    const pool = createPool(options({ max: 2 }));
    const tracer = trace.getTracer('app');
    try {
      await tracer.startActiveSpan('app.request', async (parent) => {
        const [a, b] = await Promise.all([pool.connect(), pool.connect()]);
        a.release();
        b.release();
        parent.end();
      });
      const [appSpan] = named('app.request');
      const connects = named(SpanNames.CONNECT);
      const verifies = named(SpanNames.VERIFY);
      assert.equal(connects.length, 2);
      assert.equal(verifies.length, 2);
      for (const connect of connects) {
        assert.equal(parentOf(connect), appSpan?.spanContext().spanId);
        assert.equal(connect.instrumentationScope.name, 'pg-ra-tls');
        assert.equal(connect.instrumentationScope.version, PACKAGE_VERSION);
        assert.equal(connect.attributes[SpanAttributes.SERVER_ADDRESS], '127.0.0.1');
        assert.equal(connect.attributes[SpanAttributes.SERVER_PORT], stack.sidecar.port);
        assert.equal(connect.attributes[SpanAttributes.MRTD], stack.mrtd);
        assert.equal(connect.attributes[SpanAttributes.TCB_STATUS], 'UpToDate');
        assert.equal(connect.attributes[SpanAttributes.VERIFIER], 'dcap:js');
        // Instrumentation leaves success unset (OpenTelemetry spec); OK is the app's call.
        assert.equal(connect.status.code, SpanStatusCode.UNSET);
        assert.equal(connect.kind, SpanKind.CLIENT, 'connect dials the server');
      }
      const connectIds = connects.map((span) => span.spanContext().spanId);
      for (const verify of verifies) {
        assert.ok(connectIds.includes(parentOf(verify)!), 'verify is a child of connect');
        assert.equal(verify.attributes[SpanAttributes.FINGERPRINT], pool.attestation?.fingerprint);
        assert.equal(verify.kind, SpanKind.INTERNAL);
        assert.equal(verify.status.code, SpanStatusCode.UNSET);
      }
      // The two cold connects share one verification: one computes, one reuses.
      assert.deepEqual(verifies.map((span) => span.attributes[SpanAttributes.CACHE_HIT]).sort(), [
        false,
        true,
      ]);
    } finally {
      await pool.end();
    }
  });

  test('a re-attestation is a CLIENT span nested under the checkout that caused it', async () => {
    let offset = 0;
    const now = () => new Date(Date.now() + offset);
    const pool = createPool(options({ now, reattestEvery: '1m', max: 2 }));
    const tracer = trace.getTracer('app');
    try {
      await Promise.all([pool.query('select 1'), pool.query('select 2')]);
      offset += 61_000;
      exporter.reset();
      // Two checkouts in two requests: each re-attestation belongs to its own.
      await Promise.all(
        ['app.first', 'app.second'].map((name) =>
          tracer.startActiveSpan(name, async (parent) => {
            const client = await pool.connect();
            client.release();
            parent.end();
          }),
        ),
      );
      const reattests = named(SpanNames.REATTEST);
      assert.equal(reattests.length, 2);
      const parents = ['app.first', 'app.second'].map(
        (name) => named(name)[0]?.spanContext().spanId,
      );
      assert.deepEqual(reattests.map(parentOf).sort(), [...parents].sort());
      for (const reattest of reattests) {
        assert.equal(reattest.kind, SpanKind.CLIENT, 'a re-attestation probes the server');
        assert.equal(reattest.status.code, SpanStatusCode.UNSET);
        const verifies = named(SpanNames.VERIFY).filter(
          (span) => parentOf(span) === reattest.spanContext().spanId,
        );
        assert.equal(verifies.length, 1, 'its verification nests under it');
      }
    } finally {
      await pool.end();
    }
  });

  test('a refused server gives ERROR spans with the code and a sanitised message, no secret', async () => {
    stack.sidecar.misbehave({
      credentials: raTlsCredentials(stack.authority, { mrtd: 'ee'.repeat(48) }),
    });
    const pool = createPool(options());
    try {
      await assert.rejects(pool.query('select 1'), (error: unknown) =>
        isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
      );
      const [connect] = named(SpanNames.CONNECT);
      assert.equal(connect?.status.code, SpanStatusCode.ERROR);
      assert.equal(connect?.attributes[SpanAttributes.ERROR_CODE], 'MRTD_NOT_ALLOWED');
      const exception = connect?.events.find((event) => event.name === 'exception');
      assert.equal(exception?.attributes?.['exception.type'], 'MRTD_NOT_ALLOWED');
      assert.match(String(exception?.attributes?.['exception.message']), /allowedMrtds/);
      const everything = JSON.stringify(
        exporter.getFinishedSpans().map((span) => [span.attributes, span.events, span.status]),
      );
      assert.ok(!everything.includes(stack.postgres.clusterSecret));
      assert.ok(!everything.includes('BEGIN PRIVATE KEY'));
    } finally {
      stack.sidecar.reset();
      await pool.end();
    }
  });
});
