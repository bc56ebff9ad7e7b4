/**
 * Follows a teesql cluster's leader (docs/protocol.md §7): re-reads the signed
 * manifest periodically and on demand, moves only to a higher epoch and only
 * after the new leader has been attested, refuses rollbacks, and keeps the
 * current leader through DNS failures until its manifest expires. The pool
 * asks it where to dial; all leader-following state lives here.
 */
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { AttestationReport } from '../attest/report.js';
import type { EndpointTarget } from '../connection/attested-connector.js';
import { describeCause, RaTlsError } from '../errors.js';
import { parseTimeout } from '../util/duration.js';
import { type ClusterLeader, recordName, resolveLeader } from './discovery.js';
import { normalizeSigner } from './manifest.js';

/** The `cluster` option: find the leader from a signed DNS manifest instead of a fixed host. */
export interface ClusterOptions {
  /** The cluster's DNS name; the manifest is the TXT record `_teesql-leader.<domain>`. */
  readonly domain: string;
  /** The manifest signer the cluster publishes with: `0x` + 40 hex. */
  readonly signer: string;
  /** DNS servers as `ip` or `ip:port`. Default: the system's. */
  readonly resolver?: readonly string[];
  /** How often the manifest is re-read. Default `"30s"`. */
  readonly refreshEvery?: number | string;
  /** Limit for one lookup. Default `"5s"`. */
  readonly lookupTimeout?: number | string;
  /** Clock skew tolerated past a manifest's `valid_until`, seconds. Default 60. */
  readonly skew?: number;
}

/** Payload of the pool's `leaderChanged` event. */
export interface LeaderChangedEvent {
  readonly previous: ClusterLeader | undefined;
  readonly current: ClusterLeader;
  /** The new leader's verified attestation (taken before the pool moved). */
  readonly report: AttestationReport;
}

/** Where to dial, with the manifest it came from. */
export interface LeaderTarget extends EndpointTarget {
  readonly epoch: number;
  readonly instance: string;
}

/** What the follower needs from its pool. @internal */
export interface LeaderFollowerHooks {
  /** Transport timeouts for dialling a leader. */
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  /** Attests a candidate leader (dial, verify, policy) without sending it any SQL. */
  verify(target: EndpointTarget, signal: AbortSignal): Promise<AttestationReport>;
  /** A verified higher-epoch leader: pin it and drain connections to the old one. */
  changed(event: LeaderChangedEvent): void;
  /** A lookup or a candidate leader failed; the current leader stays. */
  failed(error: RaTlsError): void;
}

const DEFAULT_REFRESH_EVERY = '30s';
const DEFAULT_LOOKUP_TIMEOUT = '5s';
const DEFAULT_SKEW_SECONDS = 60;
/** A lookup answered this recently is reused by a triggered refresh. */
const MIN_LOOKUP_GAP_MS = 100;
const FIRST_BACKOFF_MS = 250;

/**
 * Keeps the current leader of one cluster. @internal (used by RaTlsPool's
 * `cluster` option)
 */
export class LeaderFollower {
  readonly domain: string;
  readonly #options: ClusterOptions;
  readonly #signer: string;
  readonly #refreshEveryMs: number;
  readonly #lookupTimeoutMs: number;
  readonly #skew: number;
  readonly #hooks: LeaderFollowerHooks;
  readonly #lifetime = new AbortController();
  #leader: ClusterLeader | undefined;
  #highestEpoch = -1;
  #inflight: Promise<boolean> | undefined;
  #lastLookupAt = 0;
  #failures = 0;
  #notBefore = 0;
  #lastError: RaTlsError | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: ClusterOptions, hooks: LeaderFollowerHooks) {
    if (options === null || typeof options !== 'object') {
      throw new RaTlsError('BAD_CONFIG', 'cluster must be { domain, signer }', {
        details: { option: 'cluster' },
      });
    }
    recordName(options.domain);
    this.domain = options.domain;
    this.#signer = normalizeSigner(options.signer);
    this.#options = options;
    // Both feed timers, which hold at most ~24.8 days (a longer one fires at once).
    this.#refreshEveryMs = parseTimeout(
      options.refreshEvery ?? DEFAULT_REFRESH_EVERY,
      'cluster.refreshEvery',
    );
    this.#lookupTimeoutMs = parseTimeout(
      options.lookupTimeout ?? DEFAULT_LOOKUP_TIMEOUT,
      'cluster.lookupTimeout',
    );
    const skew = options.skew ?? DEFAULT_SKEW_SECONDS;
    if (!(Number.isFinite(skew) && skew >= 0)) {
      throw new RaTlsError('BAD_CONFIG', 'cluster.skew must be a number of seconds >= 0', {
        details: { option: 'cluster.skew' },
      });
    }
    this.#skew = skew;
    if (options.resolver !== undefined && !Array.isArray(options.resolver)) {
      throw new RaTlsError('BAD_CONFIG', 'cluster.resolver must be a list of "ip[:port]"', {
        details: { option: 'cluster.resolver' },
      });
    }
    this.#hooks = hooks;
  }

  /** The current leader, or undefined before discovery (or once its manifest expired). */
  get leader(): ClusterLeader | undefined {
    return this.#usable(this.#leader);
  }

  /** True once the manifest of the leader followed has expired (until a fresh one is read). */
  get expired(): boolean {
    return this.#leader !== undefined && this.leader === undefined;
  }

  /** Where new connections go: the current leader, discovered first if needed. */
  async target(): Promise<LeaderTarget> {
    let leader = this.leader;
    if (leader === undefined) {
      await this.refresh();
      leader = this.leader;
    }
    if (leader === undefined) {
      throw (
        this.#lastError ??
        new RaTlsError('DISCOVERY_FAILED', `no leader is known for cluster ${this.domain}`)
      );
    }
    return this.#targetOf(leader);
  }

  /**
   * Throws (MANIFEST_EXPIRED, or the last lookup's error) when the leader's
   * manifest has expired and a fresh read fails: even pooled connections to
   * it are not used then, because nothing says it still leads.
   */
  async ensureBelievable(): Promise<void> {
    if (!this.expired) return;
    await this.#urgentRefresh();
    if (this.leader === undefined) {
      throw (
        this.#lastError ??
        new RaTlsError('MANIFEST_EXPIRED', `the leader manifest of ${this.domain} has expired`)
      );
    }
  }

  /** The current leader's endpoint, if one is known and its manifest is unexpired. */
  currentTarget(): LeaderTarget | undefined {
    const leader = this.leader;
    return leader === undefined ? undefined : this.#targetOf(leader);
  }

  /** True while `target` is the current leader: a connection to another is refused. */
  isCurrent(target: EndpointTarget | undefined): boolean {
    const leader = this.leader;
    const dialed = target as Partial<LeaderTarget> | undefined;
    return (
      leader !== undefined &&
      dialed !== undefined &&
      dialed.epoch === leader.epoch &&
      dialed.instance === leader.instance
    );
  }

  /**
   * Re-reads the manifest now (coalesced with a lookup in flight; skipped
   * right after one, and during the back-off after failures). Resolves true
   * when the pool moved to a new leader. Never rejects: failures go to the
   * `failed` hook.
   */
  refresh(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    if (this.#inflight !== undefined) return this.#inflight;
    const now = performance.now();
    if (now < this.#notBefore || now - this.#lastLookupAt < MIN_LOOKUP_GAP_MS) {
      return Promise.resolve(false);
    }
    return this.#startLookup();
  }

  /** One lookup; when it settles, the next periodic one is scheduled. */
  #startLookup(): Promise<boolean> {
    this.#inflight = this.#lookup().finally(() => {
      this.#inflight = undefined;
      this.#schedule();
    });
    return this.#inflight;
  }

  /**
   * A lookup despite the back-off, for a pool that cannot serve without one
   * (its leader's manifest expired): still one at a time and at most one per
   * MIN_LOOKUP_GAP_MS.
   */
  async #urgentRefresh(): Promise<void> {
    if (this.#inflight !== undefined) {
      await this.#inflight;
      return;
    }
    const wait = this.#lastLookupAt + MIN_LOOKUP_GAP_MS - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait).unref());
    if (this.#closed || this.leader !== undefined) return;
    await (this.#inflight ?? this.#startLookup());
  }

  /** Starts the periodic re-reading. */
  start(): void {
    this.#schedule();
  }

  /** Stops timers and cancels a candidate's verification. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#lifetime.abort(new RaTlsError('POOL_ENDED', 'the pool was ended'));
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const delay =
      this.#failures === 0
        ? this.#refreshEveryMs
        : Math.min(this.#refreshEveryMs, FIRST_BACKOFF_MS * 2 ** (this.#failures - 1));
    // The timer's delay is the back-off, so its lookup skips refresh()'s
    // checks: timers run on the event loop's cached clock and may fire a
    // little before performance.now() says the back-off ended, and a skipped
    // lookup here would end the periodic re-reading for good.
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#closed && this.#inflight === undefined) void this.#startLookup();
    }, delay);
    this.#timer.unref();
  }

  async #lookup(): Promise<boolean> {
    this.#lastLookupAt = performance.now();
    let found: ClusterLeader;
    try {
      found = await resolveLeader(this.domain, {
        signer: this.#signer,
        timeout: this.#lookupTimeoutMs,
        skew: this.#skew,
        ...(this.#options.resolver === undefined ? {} : { resolver: this.#options.resolver }),
        ...(this.#highestEpoch < 0 ? {} : { minEpoch: this.#highestEpoch }),
      });
    } catch (error) {
      this.#fail(asRaTlsError(error));
      return false;
    }
    const current = this.#leader;
    if (current !== undefined && found.epoch === current.epoch) {
      if (
        found.instance === current.instance &&
        found.manifest.leaderUrl === current.manifest.leaderUrl
      ) {
        // The same manifest, refreshed: it stays believable for longer.
        if (found.validUntil > current.validUntil) this.#leader = found;
        this.#succeed();
      } else {
        this.#fail(
          new RaTlsError(
            'MANIFEST_EPOCH_ROLLBACK',
            `a second manifest for epoch ${found.epoch} names another leader; the first one stays`,
            { details: { epoch: found.epoch, instance: found.instance } },
          ),
        );
      }
      return false;
    }
    if (current === undefined && this.#highestEpoch < 0) {
      // The first leader: the first connection attests it, as any connection.
      this.#adopt(found);
      this.#succeed();
      return false;
    }
    let report: AttestationReport;
    try {
      report = await this.#hooks.verify(this.#targetOf(found), this.#lifetime.signal);
    } catch (error) {
      const failure = asRaTlsError(error);
      this.#fail(
        new RaTlsError(
          failure.code,
          `the leader named by epoch ${found.epoch} (${found.host}:${found.port}) failed attestation; ` +
            `the pool stays on the current leader: ${failure.message}`,
          { cause: failure, details: { ...failure.details, epoch: found.epoch } },
        ),
      );
      return false;
    }
    if (this.#closed) return false;
    this.#adopt(found);
    this.#succeed();
    this.#hooks.changed({ previous: current, current: found, report });
    return true;
  }

  #adopt(leader: ClusterLeader): void {
    this.#leader = leader;
    this.#highestEpoch = Math.max(this.#highestEpoch, leader.epoch);
  }

  #succeed(): void {
    this.#failures = 0;
    this.#notBefore = 0;
    this.#lastError = undefined;
  }

  #fail(error: RaTlsError): void {
    this.#failures++;
    this.#notBefore =
      performance.now() +
      Math.min(this.#refreshEveryMs, FIRST_BACKOFF_MS * 2 ** (this.#failures - 1));
    this.#lastError = error;
    this.#hooks.failed(error);
  }

  /** A leader whose manifest (plus skew) has not expired. */
  #usable(leader: ClusterLeader | undefined): ClusterLeader | undefined {
    if (leader === undefined) return undefined;
    if (Date.now() / 1000 > leader.validUntil + this.#skew) {
      this.#lastError = new RaTlsError(
        'MANIFEST_EXPIRED',
        `the manifest naming the leader of ${this.domain} (epoch ${leader.epoch}) expired and no ` +
          'fresh one could be read; check DNS and the cluster publisher',
        { details: { epoch: leader.epoch, validUntil: leader.validUntil } },
      );
      return undefined;
    }
    return leader;
  }

  #targetOf(leader: ClusterLeader): LeaderTarget {
    return {
      host: leader.host,
      port: leader.port,
      // An IP literal gets no SNI (RFC 6066); a name is what the gateway routes by.
      servername: isIP(leader.host) === 0 ? leader.host : undefined,
      connectTimeoutMs: this.#hooks.connectTimeoutMs,
      handshakeTimeoutMs: this.#hooks.handshakeTimeoutMs,
      epoch: leader.epoch,
      instance: leader.instance,
    };
  }
}

function asRaTlsError(error: unknown): RaTlsError {
  if (error instanceof RaTlsError) return error;
  return new RaTlsError('DISCOVERY_FAILED', `leader discovery failed: ${describeCause(error)}`, {
    cause: error,
  });
}
