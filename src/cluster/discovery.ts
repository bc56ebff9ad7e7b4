/**
 * Finds a teesql cluster's leader from its signed DNS TXT manifest
 * (`_teesql-leader.<domain>`, docs/protocol.md §7), with a bounded lookup.
 */
import type { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { describeCause, RaTlsError } from '../errors.js';
import { parseTimeout } from '../util/duration.js';
import { type LeaderManifest, normalizeSigner, verifyManifest } from './manifest.js';

/** Options of {@link resolveLeader}. */
export interface ResolveLeaderOptions {
  /** The expected manifest signer, `0x` + 40 hex. */
  readonly signer: string;
  /**
   * DNS servers to ask, as `ip` or `ip:port` (`['127.0.0.1:5353']`).
   * Default: the system's resolvers.
   */
  readonly resolver?: readonly string[];
  /** Limit for the whole lookup, ms or `"5s"`. Default `"5s"`. */
  readonly timeout?: number | string;
  /** Verification time. Default: now. */
  readonly now?: Date;
  /** Clock skew tolerated past `valid_until`, seconds. Default 60. */
  readonly skew?: number;
  /** The highest epoch already seen; a lower one is refused. */
  readonly minEpoch?: number;
}

/** The verified leader of a cluster. */
export interface ClusterLeader {
  readonly host: string;
  readonly port: number;
  readonly instance: string;
  readonly epoch: number;
  /** Unix seconds. */
  readonly validUntil: number;
  /** The whole verified manifest. */
  readonly manifest: LeaderManifest;
}

/** The DNS name holding a cluster's manifest. */
export const LEADER_RECORD_PREFIX = '_teesql-leader.';
const DEFAULT_TIMEOUT = '5s';
/** Records read per lookup: a genuine name holds one or two (during a rollover). */
const MAX_RECORDS = 16;
const HOSTNAME =
  /^(?=.{1,240}$)([a-z0-9_](?:[a-z0-9-_]{0,61}[a-z0-9_])?)(\.[a-z0-9_](?:[a-z0-9-_]{0,61}[a-z0-9_])?)*$/i;

/**
 * Looks up `_teesql-leader.<clusterDomain>` and returns the leader named by
 * the first TXT record that *verifies* (a forged record listed first is
 * skipped). Throws DISCOVERY_FAILED when DNS fails, times out or has no
 * record; when records exist but none verifies, the first one's error
 * (MANIFEST_*), with every record's code in `details.records`.
 */
export async function resolveLeader(
  clusterDomain: string,
  options: ResolveLeaderOptions,
): Promise<ClusterLeader> {
  const name = recordName(clusterDomain);
  const signer = normalizeSigner(options?.signer);
  const timeoutMs = parseTimeout(options.timeout ?? DEFAULT_TIMEOUT, 'timeout');
  const resolver = createResolver(options.resolver, timeoutMs);
  const records = await lookupTxt(resolver, name, timeoutMs);
  const failures: RaTlsError[] = [];
  for (const chunks of records.slice(0, MAX_RECORDS)) {
    try {
      const manifest = verifyManifest(chunks, {
        signer,
        ...(options.now === undefined ? {} : { now: options.now }),
        ...(options.skew === undefined ? {} : { skew: options.skew }),
        ...(options.minEpoch === undefined ? {} : { minEpoch: options.minEpoch }),
      });
      return Object.freeze({
        host: manifest.host,
        port: manifest.port,
        instance: manifest.instance,
        epoch: manifest.epoch,
        validUntil: manifest.validUntil,
        manifest,
      });
    } catch (error) {
      if (!(error instanceof RaTlsError)) throw error;
      failures.push(error);
    }
  }
  const first = failures[0];
  if (first === undefined) {
    throw new RaTlsError('DISCOVERY_FAILED', `${name} has no TXT record`, {
      details: { name },
    });
  }
  throw new RaTlsError(
    first.code,
    `no leader manifest at ${name} verified (${failures.length} record(s)); first: ${first.message}`,
    { cause: first, details: { ...first.details, name, records: failures.map((e) => e.code) } },
  );
}

/** `_teesql-leader.<domain>` for a valid domain name; BAD_CONFIG otherwise. */
export function recordName(clusterDomain: string): string {
  const domain = typeof clusterDomain === 'string' ? clusterDomain.trim().replace(/\.$/, '') : '';
  if (!HOSTNAME.test(domain) || isIP(domain) !== 0) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `cluster domain ${JSON.stringify(String(clusterDomain).slice(0, 80))} is not a DNS name ` +
        '(e.g. "mycluster.example.com", whose _teesql-leader TXT record holds the manifest)',
      { details: { option: 'domain' } },
    );
  }
  return `${LEADER_RECORD_PREFIX}${domain.toLowerCase()}`;
}

function createResolver(servers: readonly string[] | undefined, timeoutMs: number): Resolver {
  // One try per server within the overall limit: a dead server costs one timeout, not four.
  const { Resolver } = process.getBuiltinModule('node:dns/promises');
  const resolver = new Resolver({ timeout: Math.max(1, Math.min(timeoutMs, 2_000)), tries: 1 });
  if (servers !== undefined) {
    if (!Array.isArray(servers) || servers.length === 0) {
      throw new RaTlsError('BAD_CONFIG', 'resolver must be a non-empty list of "ip[:port]"', {
        details: { option: 'resolver' },
      });
    }
    try {
      resolver.setServers([...servers]);
    } catch (error) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `resolver must list DNS servers as "ip" or "ip:port" (${describeCause(error)})`,
        { details: { option: 'resolver' } },
      );
    }
  }
  return resolver;
}

async function lookupTxt(resolver: Resolver, name: string, timeoutMs: number): Promise<string[][]> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      resolver.cancel();
      reject(
        new RaTlsError(
          'DISCOVERY_FAILED',
          `looking up ${name} took longer than ${timeoutMs} ms; check the resolver and DNS reachability`,
          { details: { name, reason: 'timeout' } },
        ),
      );
    }, timeoutMs);
  });
  try {
    return await Promise.race([resolver.resolveTxt(name), timedOut]);
  } catch (error) {
    if (error instanceof RaTlsError) throw error;
    const code = (error as { code?: unknown }).code;
    throw new RaTlsError(
      'DISCOVERY_FAILED',
      `looking up ${name} failed (${typeof code === 'string' ? code : describeCause(error)}); ` +
        'check the cluster domain, the resolver and DNS reachability',
      { cause: error, details: { name, reason: typeof code === 'string' ? code : 'error' } },
    );
  } finally {
    clearTimeout(timer);
  }
}
