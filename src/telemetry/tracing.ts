import type { Attributes, Span, Tracer } from '@opentelemetry/api';
import type { AttestationReport } from '../attest/report.js';
import { maskConnectionString } from '../config/connection-string.js';
import { RaTlsError } from '../errors.js';
import { lazyRequire } from '../util/lazy-require.js';
import { PACKAGE_VERSION } from './version.js';

/** Name of the OpenTelemetry tracer pg-ra-tls uses. */
export const TRACER_NAME = 'pg-ra-tls';

/** Span names pg-ra-tls emits. */
export const SpanNames = {
  /** Dial, attest and hand over one new connection. */
  CONNECT: 'pg_ra_tls.connect',
  /** Verify one certificate (or reuse a cached report: `pg_ra_tls.cache_hit`). */
  VERIFY: 'pg_ra_tls.verify',
  /** Re-attest a pooled connection at checkout or in the background. */
  REATTEST: 'pg_ra_tls.reattest',
} as const;

/** Attribute keys pg-ra-tls sets on its spans. */
export const SpanAttributes = {
  SERVER_ADDRESS: 'server.address',
  SERVER_PORT: 'server.port',
  FINGERPRINT: 'pg_ra_tls.certificate.fingerprint',
  MRTD: 'pg_ra_tls.tdx.mrtd',
  TCB_STATUS: 'pg_ra_tls.tdx.tcb_status',
  CACHE_HIT: 'pg_ra_tls.cache_hit',
  VERIFIER: 'pg_ra_tls.verifier',
  ERROR_CODE: 'pg_ra_tls.error.code',
} as const;

type OtelApi = typeof import('@opentelemetry/api');

const requireApi = lazyRequire<OtelApi>('@opentelemetry/api');
/** undefined: not looked for yet; null: not installed. */
let api: OtelApi | null | undefined;

/**
 * The API is an optional peer dependency: loaded at the first span (not at
 * import, see lazyRequire) if installed, else nothing is traced.
 */
function otelApi(): OtelApi | undefined {
  if (api === undefined) {
    try {
      api = requireApi();
    } catch {
      api = null;
    }
  }
  return api ?? undefined;
}

/** The subset of a span pg-ra-tls writes to; a no-op stand-in when OpenTelemetry is absent. */
export interface SpanHandle {
  setAttribute(key: string, value: string | number | boolean): void;
}

const NOOP_SPAN: SpanHandle = { setAttribute() {} };

/** The pg-ra-tls tracer from the global provider (a no-op one without an SDK), or undefined without @opentelemetry/api. */
export function getTracer(): Tracer | undefined {
  return otelApi()?.trace.getTracer(TRACER_NAME, PACKAGE_VERSION);
}

/** Spans during which pg-ra-tls dials the server: kind CLIENT. */
const NETWORK_SPANS: ReadonlySet<string> = new Set([SpanNames.CONNECT, SpanNames.REATTEST]);

/**
 * Runs `fn` inside a span that is a child of the active context (so it nests
 * under pg or application spans) and is itself active while `fn` runs. Spans
 * that talk to the server (connect, reattest) are of kind CLIENT, the others
 * INTERNAL. Success leaves the status unset, as the OpenTelemetry spec asks of
 * instrumentation libraries (OK is the application's to set). A
 * failure sets ERROR status and records a sanitised exception: the RaTlsError
 * code and message (which never carry secrets), or for other errors only their
 * name and masked message.
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: SpanHandle) => Promise<T>,
): Promise<T> {
  const otel = otelApi();
  const tracer = otel?.trace.getTracer(TRACER_NAME, PACKAGE_VERSION);
  if (tracer === undefined || otel === undefined) return fn(NOOP_SPAN);
  const kind = NETWORK_SPANS.has(name) ? otel.SpanKind.CLIENT : otel.SpanKind.INTERNAL;
  return tracer.startActiveSpan(name, { attributes, kind }, async (span: Span) => {
    try {
      return await fn(span);
    } catch (error) {
      recordFailure(span, error, otel);
      throw error;
    } finally {
      span.end();
    }
  });
}

function recordFailure(span: Span, error: unknown, otel: OtelApi): void {
  if (error instanceof RaTlsError) {
    span.setAttribute(SpanAttributes.ERROR_CODE, error.code);
    span.recordException({ name: error.code, message: error.message });
    span.setStatus({ code: otel.SpanStatusCode.ERROR, message: `${error.code}: ${error.message}` });
    return;
  }
  const name = error instanceof Error ? error.name : 'Error';
  const message = maskConnectionString(error instanceof Error ? error.message : String(error));
  span.recordException({ name, message });
  span.setStatus({ code: otel.SpanStatusCode.ERROR, message });
}

/** Span attributes describing a verified report. */
export function reportAttributes(report: AttestationReport): Attributes {
  return {
    [SpanAttributes.FINGERPRINT]: report.fingerprint,
    [SpanAttributes.MRTD]: report.mrtd,
    [SpanAttributes.TCB_STATUS]: report.tcbStatus,
    [SpanAttributes.VERIFIER]: report.verifier,
  };
}

/** Sets several attributes on a span handle. */
export function setAttributes(span: SpanHandle, attributes: Attributes): void {
  for (const [key, value] of Object.entries(attributes)) {
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      span.setAttribute(key, value);
    }
  }
}
