import type { AttestationReport } from '../attest/report.js';
import type {
  AttestedConnector,
  EndpointTarget,
  ProbeResult,
} from '../connection/attested-connector.js';
import { describeCause, RaTlsError } from '../errors.js';
import {
  reportAttributes,
  SpanAttributes,
  SpanNames,
  setAttributes,
  withSpan,
} from '../telemetry/tracing.js';
import { raceSignal, type Scope } from '../util/deadline.js';
import type { ServerChangedEvent, ServerPin } from './server-pin.js';

/** What one re-attestation found. */
export type ReattestOutcome =
  /** The certificate is still the server's and passes under `policyVersion`. */
  | {
      readonly kind: 'fresh';
      readonly report: AttestationReport;
      readonly policyVersion: number;
      readonly cacheHit: boolean;
    }
  /** The server presents another certificate, now pinned: the connection is obsolete. */
  | { readonly kind: 'superseded'; readonly change?: ServerChangedEvent }
  /** Failed (timeout, refused verdict, refused server); the connection must not be used. */
  | { readonly kind: 'failed'; readonly error: RaTlsError; readonly change?: ServerChangedEvent };

/** One shared probe of one endpoint: its last result and the handshake in flight. */
interface SharedProbe {
  result?: ProbeResult;
  inflight?: Promise<ProbeResult> | undefined;
}

/**
 * Re-attestation of pooled connections, pg-free: with `probe`, one fresh
 * handshake to the endpoint the connection dialled (shared by every caller
 * for one reattestEvery interval, one per endpoint: a multi-host pool has
 * several servers, a cluster pool moves between them) confirms which
 * certificate that server presents now; the connection's certificate is
 * then re-verified under the current policy (cache-aware). A certificate the
 * probe did not expect goes to the {@link ServerPin}.
 */
export class Reattestation {
  readonly #connector: AttestedConnector;
  readonly #pin: ServerPin;
  readonly #probes = new Map<string, SharedProbe>();

  constructor(connector: AttestedConnector, pin: ServerPin) {
    this.#connector = connector;
    this.#pin = pin;
  }

  /** Forgets the shared probes' results (the pinned certificate changed). */
  resetProbe(): void {
    for (const [key, shared] of this.#probes) {
      if (shared.inflight === undefined) this.#probes.delete(key);
      else shared.result = undefined;
    }
  }

  /**
   * Re-attests the connection(s) to `target` attested by `report`
   * (certificate `der`), in a `pg_ra_tls.reattest` span, within `scope` (its
   * deadline is reattestTimeout).
   */
  async run(
    target: EndpointTarget,
    probe: boolean,
    der: Uint8Array,
    issuers: readonly Uint8Array[],
    report: AttestationReport,
    scope: Scope,
  ): Promise<ReattestOutcome> {
    let outcome: ReattestOutcome | undefined;
    try {
      return await withSpan(
        SpanNames.REATTEST,
        {
          [SpanAttributes.SERVER_ADDRESS]: target.host,
          [SpanAttributes.SERVER_PORT]: target.port,
          [SpanAttributes.FINGERPRINT]: report.fingerprint,
        },
        async (span) => {
          outcome = await scope.race(this.#work(target, probe, der, issuers, report, scope.signal));
          // The span records the failure: its error is the outcome's.
          if (outcome.kind === 'failed') throw outcome.error;
          if (outcome.kind === 'fresh') {
            span.setAttribute(SpanAttributes.CACHE_HIT, outcome.cacheHit);
            setAttributes(span, reportAttributes(outcome.report));
            this.#pin.refreshed(outcome.report);
          }
          return outcome;
        },
      );
    } catch (error) {
      // A failed verdict must not be served from the cache to the next checkout.
      this.#connector.cache.delete(report.fingerprint);
      return outcome?.kind === 'failed'
        ? outcome
        : { kind: 'failed', error: asReattestError(error) };
    }
  }

  async #work(
    target: EndpointTarget,
    probe: boolean,
    der: Uint8Array,
    issuers: readonly Uint8Array[],
    report: AttestationReport,
    signal: AbortSignal,
  ): Promise<ReattestOutcome> {
    if (probe) {
      const seen = await this.#sharedProbe(target, signal);
      if (seen.fingerprint !== report.fingerprint) return this.#changed(seen, signal);
    }
    const fresh = await this.#connector.verifyCertificate(der, signal, issuers);
    return {
      kind: 'fresh',
      report: fresh.report,
      policyVersion: fresh.policyVersion,
      cacheHit: fresh.cacheHit,
    };
  }

  /** The probe saw another certificate than the connection's. */
  async #changed(seen: ProbeResult, signal: AbortSignal): Promise<ReattestOutcome> {
    const observed = this.#pin.observe(seen.fingerprint);
    if (observed === 'same') return { kind: 'superseded' };
    if (observed !== 'verify') {
      return observed.ok
        ? { kind: 'superseded' }
        : { kind: 'failed', error: observed.error, ...changeOf(observed) };
    }
    const { report } = await this.#connector.verifyCertificate(
      seen.certificateDer,
      signal,
      seen.issuersDer,
    );
    const admitted = this.#pin.admit(report);
    if (!admitted.ok) return { kind: 'failed', error: admitted.error, ...changeOf(admitted) };
    if (admitted.change !== undefined) this.resetProbe();
    return { kind: 'superseded', ...changeOf(admitted) };
  }

  #sharedProbe(target: EndpointTarget, signal: AbortSignal): Promise<ProbeResult> {
    // No servername and an empty one dial differently (SNI), so they are two keys.
    const key = JSON.stringify([target.host, target.port, target.servername]);
    let shared = this.#probes.get(key);
    if (shared === undefined) {
      shared = {};
      this.#probes.set(key, shared);
    }
    const cached = shared.result;
    if (
      cached !== undefined &&
      this.#connector.now() - cached.at < this.#connector.reattestEveryMs
    ) {
      return Promise.resolve(cached);
    }
    const entry = shared;
    entry.inflight ??= this.#connector
      .probe(target)
      .then((result) => {
        entry.result = result;
        return result;
      })
      .finally(() => {
        entry.inflight = undefined;
      });
    return raceSignal(entry.inflight, signal);
  }
}

function changeOf(result: { readonly change?: ServerChangedEvent }) {
  return result.change === undefined ? {} : { change: result.change };
}

function asReattestError(error: unknown): RaTlsError {
  if (error instanceof RaTlsError) return error;
  return new RaTlsError('REATTEST_FAILED', `re-attestation failed: ${describeCause(error)}`, {
    cause: error,
  });
}
