import type { AttestationReport } from '../attest/report.js';
import type { AttestedConnector } from '../connection/attested-connector.js';
import { RaTlsError } from '../errors.js';

/** What the pool does when the server presents a certificate other than the pinned one. */
export type ServerChangeMode = 'reverify' | 'reject';

/** Payload of the pool's `serverChanged` event. */
export interface ServerChangedEvent {
  /** The report of the previously pinned certificate. */
  readonly previous: AttestationReport;
  /** Fingerprint of the certificate the server presents now. */
  readonly fingerprint: string;
  /** Its verified report (`reverify` mode only). */
  readonly current?: AttestationReport;
  readonly mode: ServerChangeMode;
}

/**
 * The outcome of showing the pin a certificate. `change` is set exactly once
 * per server change (the caller emits `serverChanged` and drains connections
 * to `change.previous`); `error` means the certificate is refused.
 */
export type PinResult =
  | { readonly ok: true; readonly change?: ServerChangedEvent }
  | { readonly ok: false; readonly error: RaTlsError; readonly change?: ServerChangedEvent };

/**
 * How a connection stands against the pin: `fresh` (use it), `stale` (its
 * report is older than reattestEvery: probe the server and re-verify),
 * `rejudge` (judged under an older policy: re-verify, no probe needed),
 * `superseded` (attested to a certificate no longer pinned: close it).
 */
export type Freshness = 'fresh' | 'stale' | 'rejudge' | 'superseded';

/** A connection as the pin sees it. */
export interface PinnedConnection {
  readonly attestation: AttestationReport | undefined;
}

/** Options of {@link ServerPin}. */
export interface ServerPinOptions {
  readonly mode: ServerChangeMode;
  /** The server, for messages (password masked). */
  readonly description: string;
  /** How long a report stays fresh (ms). */
  readonly reattestEveryMs: number;
  /** Clock (ms since epoch). */
  readonly now: () => number;
  /** The current policy version (connections judged under another are re-judged). */
  readonly policyVersion: () => number;
  /**
   * Several servers, each with its own certificate (a multi-host connection
   * string): every connection is attested on its own and nothing is pinned.
   */
  readonly unpinned?: boolean;
}

/** `onServerChange` checked: the mode, default `reverify`; BAD_CONFIG for anything else. */
export function serverChangeMode(value: unknown): ServerChangeMode {
  const mode = value ?? 'reverify';
  if (mode !== 'reverify' && mode !== 'reject') {
    throw new RaTlsError(
      'BAD_CONFIG',
      `onServerChange must be 'reverify' or 'reject', got ${JSON.stringify(mode)}`,
      { details: { option: 'onServerChange' } },
    );
  }
  return mode;
}

/**
 * The pin of the connections `connector` makes to one server (`description`,
 * for messages): its clock, reattestEvery and policy version drive the
 * staleness rule.
 */
export function serverPinFor(
  connector: Pick<AttestedConnector, 'reattestEveryMs' | 'now' | 'policyVersion'>,
  options: Pick<ServerPinOptions, 'mode' | 'description' | 'unpinned'>,
): ServerPin {
  return new ServerPin({
    ...options,
    reattestEveryMs: connector.reattestEveryMs,
    now: () => connector.now(),
    policyVersion: () => connector.policyVersion,
  });
}

/**
 * What a connection's client checks against the pin (the hooks a pool
 * installs on its clients): whether it may dial, whether the verified
 * certificate is accepted, and the policy version it was judged under.
 */
export function pinHooks(pin: ServerPin): {
  refusal(): RaTlsError | undefined;
  admit(report: AttestationReport): RaTlsError | undefined;
  attested(connection: PinnedConnection, attested: { readonly policyVersion: number }): void;
} {
  return {
    refusal: () => pin.refusal,
    admit: (report) => {
      const result = pin.admit(report);
      return result.ok ? undefined : result.error;
    },
    attested: (connection, attested) => pin.stamp(connection, attested.policyVersion),
  };
}

const SERVER_CHANGED_HINT =
  'the pool pinned the first verified certificate; recreate the pool to accept the new one ' +
  "(or use onServerChange: 'reverify')";

/**
 * The pool's certificate pin and staleness rule, without pg and without I/O:
 * the first verified certificate is pinned; another one is pinned in its place
 * once fully verified (`reverify`) or refuses the server for good (`reject`).
 * Every decision is returned as a result; nothing here throws for control flow.
 */
export class ServerPin {
  readonly mode: ServerChangeMode;
  readonly #options: ServerPinOptions;
  readonly #policyVersions = new WeakMap<PinnedConnection, number>();
  #pinned: AttestationReport | undefined;
  #refusal: RaTlsError | undefined;
  #closed: RaTlsError | undefined;

  constructor(options: ServerPinOptions) {
    this.mode = options.mode;
    this.#options = options;
  }

  /** The current report of the pinned certificate, if any. */
  get pinned(): AttestationReport | undefined {
    return this.#pinned;
  }

  /** Why no connection is accepted any more (pool ended, server refused), if so. */
  get refusal(): RaTlsError | undefined {
    return this.#closed ?? this.#refusal;
  }

  /** The server was refused ('reject' mode): the pool is done. */
  get rejected(): boolean {
    return this.#refusal !== undefined;
  }

  /** Refuses everything from now on with `reason` (the pool ended). */
  close(reason: RaTlsError): void {
    this.#closed ??= reason;
  }

  /**
   * A fully verified report of a certificate the server presented: pins the
   * first, refreshes the pinned one, and handles another one per the mode.
   */
  admit(report: AttestationReport): PinResult {
    const refusal = this.refusal;
    if (refusal !== undefined) return { ok: false, error: refusal };
    if (this.#options.unpinned === true) return { ok: true };
    const pinned = this.#pinned;
    if (pinned === undefined) {
      this.#pinned = report;
      return { ok: true };
    }
    if (report.fingerprint === pinned.fingerprint) {
      this.refreshed(report);
      return { ok: true };
    }
    if (this.mode === 'reject') return this.refuse(report.fingerprint);
    this.#pinned = report;
    return {
      ok: true,
      change: {
        previous: pinned,
        fingerprint: report.fingerprint,
        current: report,
        mode: 'reverify',
      },
    };
  }

  /**
   * The server presents `fingerprint` (seen by a probe, not verified yet):
   * `same` needs nothing, `verify` means verify it and {@link admit} the
   * report ('reverify'), otherwise the result refuses it ('reject').
   */
  observe(fingerprint: string): 'same' | 'verify' | PinResult {
    const refusal = this.refusal;
    if (refusal !== undefined) return { ok: false, error: refusal };
    const pinned = this.#pinned;
    if (pinned === undefined || pinned.fingerprint === fingerprint) return 'same';
    return this.mode === 'reject' ? this.refuse(fingerprint) : 'verify';
  }

  /**
   * Moves the pin to a cluster's new leader, whose report was verified before
   * the move (docs/protocol.md §7: a higher epoch names it). Not a server
   * change, so neither mode refuses it; returns the report pinned until now
   * (connections attested to it are then superseded), if any.
   */
  follow(leader: AttestationReport): AttestationReport | undefined {
    if (this.refusal !== undefined) return undefined;
    const previous = this.#pinned;
    this.#pinned = leader;
    return previous?.fingerprint === leader.fingerprint ? undefined : previous;
  }

  /** A newer report of the pinned certificate (a re-attestation). */
  refreshed(report: AttestationReport): void {
    const pinned = this.#pinned;
    if (pinned?.fingerprint === report.fingerprint && report.verifiedAt >= pinned.verifiedAt) {
      this.#pinned = report;
    }
  }

  /** Records the policy version `connection` was (re-)judged under. */
  stamp(connection: PinnedConnection, policyVersion: number): void {
    this.#policyVersions.set(connection, policyVersion);
  }

  /** How `connection` stands: see {@link Freshness}. */
  freshness(connection: PinnedConnection): Freshness {
    const report = connection.attestation;
    if (report === undefined) return 'stale';
    if (this.#pinned !== undefined && report.fingerprint !== this.#pinned.fingerprint) {
      return 'superseded';
    }
    if (this.#options.now() - report.verifiedAt >= this.#options.reattestEveryMs) return 'stale';
    if (this.#policyVersions.get(connection) !== this.#options.policyVersion()) return 'rejudge';
    return 'fresh';
  }

  /** Enters the refusing state; only the first refusal reports a change. */
  refuse(fingerprint: string): PinResult {
    if (this.#refusal !== undefined) return { ok: false, error: this.#refusal };
    const previous = this.#pinned!;
    this.#refusal = new RaTlsError(
      'SERVER_CHANGED',
      `${this.#options.description} now presents certificate ${fingerprint.slice(0, 16)}… ` +
        `instead of the pinned ${previous.fingerprint.slice(0, 16)}…: ${SERVER_CHANGED_HINT}`,
      { details: { pinned: previous.fingerprint, presented: fingerprint } },
    );
    return {
      ok: false,
      error: this.#refusal,
      change: { previous, fingerprint, mode: 'reject' },
    };
  }
}
