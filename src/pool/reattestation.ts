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

/**
 * Re-attestation of pooled connections, pg-free: with `probe`, one fresh
 * handshake (shared by every caller for one reattestEvery interval) confirms
 * which certificate the server presents now; the connection's certificate is
 * then re-verified under the current policy (cache-aware). A certificate the
 * probe did not expect goes to the {@link ServerPin}.
 */
export class Reattestation {
  readonly #connector: AttestedConnector;
  readonly #pin: ServerPin;
  readonly #target: EndpointTarget;
  #probe: ProbeResult | undefined;
  #probeInflight: Promise<ProbeResult> | undefined;

  constructor(connector: AttestedConnector, pin: ServerPin, target: EndpointTarget) {
    this.#connector = connector;
    this.#pin = pin;
    this.#target = target;
  }

  /** Forgets the shared probe (the pinned certificate changed). */
  resetProbe(): void {
    this.#probe = undefined;
  }

  /**
   * Re-attests the connection(s) attested by `report` (certificate `der`), in
   * a `pg_ra_tls.reattest` span, within `scope` (its deadline is reattestTimeout).
   */
  async run(
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
          [SpanAttributes.SERVER_ADDRESS]: this.#target.host,
          [SpanAttributes.SERVER_PORT]: this.#target.port,
          [SpanAttributes.FINGERPRINT]: report.fingerprint,
        },
        async (span) => {
          outcome = await scope.race(this.#work(probe, der, issuers, report, scope.signal));
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
    probe: boolean,
    der: Uint8Array,
    issuers: readonly Uint8Array[],
    report: AttestationReport,
    signal: AbortSignal,
  ): Promise<ReattestOutcome> {
    if (probe) {
      const seen = await this.#sharedProbe(signal);
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

  #sharedProbe(signal: AbortSignal): Promise<ProbeResult> {
    const cached = this.#probe;
    if (
      cached !== undefined &&
      this.#connector.now() - cached.at < this.#connector.reattestEveryMs
    ) {
      return Promise.resolve(cached);
    }
    this.#probeInflight ??= this.#connector
      .probe(this.#target)
      .then((result) => {
        this.#probe = result;
        return result;
      })
      .finally(() => {
        this.#probeInflight = undefined;
      });
    return raceSignal(this.#probeInflight, signal);
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
