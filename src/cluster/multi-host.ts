/**
 * libpq multi-host connection strings for attested pools:
 * `postgres://u:p@h1:5433,h2:5433/db` and `host=h1,h2 port=5433,5433`, with
 * `target_session_attrs` and `load_balance_hosts` (PostgreSQL docs, libpq
 * "Connection Strings" §34.1.1.3 and "Parameter Key Words"). Every host is
 * attested before its first byte like any single host; the session attribute
 * is checked after attestation, on the logged-in session.
 */
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import type { EndpointTarget } from '../connection/attested-connector.js';
import { type ErrorCode, RaTlsError } from '../errors.js';

/** libpq's target_session_attrs values. */
export type TargetSessionAttrs =
  | 'any'
  | 'read-write'
  | 'read-only'
  | 'primary'
  | 'standby'
  | 'prefer-standby';

/** libpq's load_balance_hosts values. */
export type LoadBalanceHosts = 'disable' | 'random';

/** One host of a list; `port` undefined means the default. */
export interface HostEntry {
  readonly host: string;
  readonly port: number | undefined;
}

/** A connection string with its host list taken out. */
export interface HostList {
  readonly hosts: readonly HostEntry[];
  readonly targetSessionAttrs: TargetSessionAttrs;
  readonly loadBalanceHosts: LoadBalanceHosts;
  /** The connection string naming only the first host, without the two parameters above. */
  readonly connectionString: string;
}

const ATTRS: readonly TargetSessionAttrs[] = [
  'any',
  'read-write',
  'read-only',
  'primary',
  'standby',
  'prefer-standby',
];
const BALANCE: readonly LoadBalanceHosts[] = ['disable', 'random'];
const URL_PARTS = /^(postgres(?:ql)?:\/\/)([^/?#]*@)?([^/?#]*)(.*)$/is;
/** A failed host is skipped this long while others may work (a black hole costs one timeout). */
const HOST_COOL_DOWN_MS = 5_000;

/**
 * Splits a multi-host connection string. Returns undefined for a single
 * host without target_session_attrs (other than `any`) or load_balance_hosts:
 * the ordinary path then applies. Throws BAD_CONFIG on a malformed list.
 */
export function parseHostList(connectionString: string | undefined): HostList | undefined {
  if (typeof connectionString !== 'string') return undefined;
  const text = connectionString.trim();
  const url = URL_PARTS.exec(text);
  return url === null ? parseKeywordHosts(text) : parseUrlHosts(text, url);
}

function parseUrlHosts(text: string, parts: RegExpExecArray): HostList | undefined {
  const [, scheme, userinfo = '', hostPart = '', rest = ''] = parts;
  const queryAt = rest.indexOf('?');
  const path = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const query = new URLSearchParams(queryAt < 0 ? '' : rest.slice(queryAt + 1));
  const attrs = query.get('target_session_attrs');
  const balance = query.get('load_balance_hosts');
  const entries = hostPart === '' ? [] : hostPart.split(',');
  if (entries.length <= 1 && (attrs === null || attrs === 'any') && balance === null) {
    return undefined;
  }
  const hosts = entries.map((entry) => parseUrlEntry(text, entry));
  query.delete('target_session_attrs');
  query.delete('load_balance_hosts');
  const search = query.toString();
  return {
    hosts,
    targetSessionAttrs: checkAttrs(text, attrs),
    loadBalanceHosts: checkBalance(text, balance),
    connectionString: `${scheme}${userinfo}${entries[0] ?? ''}${path}${search === '' ? '' : `?${search}`}`,
  };
}

function parseUrlEntry(text: string, entry: string): HostEntry {
  const match = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(entry);
  if (match === null || match[1] === '') throw bad(text, `has an invalid host ${quote(entry)}`);
  let host = match[1]!.replace(/^\[(.*)\]$/, '$1');
  try {
    host = decodeURIComponent(host);
  } catch {
    throw bad(text, 'has an invalid percent-encoding in a host');
  }
  return { host, port: parsePort(text, match[2]) };
}

function parseKeywordHosts(text: string): HostList | undefined {
  const pairs = tokenizeKeywords(text);
  if (pairs === undefined) return undefined;
  const get = (key: string) => pairs.find(([k]) => k === key)?.[1];
  const hostValue = get('host');
  const attrs = get('target_session_attrs') ?? null;
  const balance = get('load_balance_hosts') ?? null;
  const hostNames = hostValue === undefined ? [] : hostValue.split(',');
  if (hostNames.length <= 1 && (attrs === null || attrs === 'any') && balance === null) {
    return undefined;
  }
  if ((get('hostaddr') ?? '').includes(',')) {
    throw bad(text, 'lists several hostaddr values; list host names in host= instead');
  }
  const portValue = get('port');
  const ports = portValue === undefined || portValue === '' ? [] : portValue.split(',');
  if (ports.length > 1 && ports.length !== hostNames.length) {
    throw bad(text, `lists ${hostNames.length} hosts but ${ports.length} ports`);
  }
  const hosts = hostNames.map((host, index) => {
    if (host === '') throw bad(text, 'has an empty host in its host list');
    return { host, port: parsePort(text, ports.length === 1 ? ports[0] : ports[index]) };
  });
  const kept = pairs
    .filter(([key]) => !['target_session_attrs', 'load_balance_hosts', 'port'].includes(key))
    .map(([key, value]): [string, string] => [key, key === 'host' ? (hostNames[0] ?? '') : value]);
  if (hosts[0]?.port !== undefined) kept.push(['port', String(hosts[0].port)]);
  return {
    hosts,
    targetSessionAttrs: checkAttrs(text, attrs),
    loadBalanceHosts: checkBalance(text, balance),
    connectionString: kept.map(([key, value]) => `${key}=${quoteKeyword(value)}`).join(' '),
  };
}

/** libpq keyword/value pairs, or undefined when the text is not of that form. */
function tokenizeKeywords(text: string): [string, string][] | undefined {
  const pairs: [string, string][] = [];
  const pattern = /\s*([A-Za-z0-9_]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)*)/gy;
  let at = 0;
  while (at < text.length) {
    if (/^\s*$/.test(text.slice(at))) break;
    pattern.lastIndex = at;
    const match = pattern.exec(text);
    if (match === null) return undefined;
    const raw = match[2]!;
    const value = (raw.startsWith("'") ? raw.slice(1, -1) : raw).replace(/\\(.)/g, '$1');
    pairs.push([match[1]!, value]);
    at = pattern.lastIndex;
  }
  return pairs;
}

function quoteKeyword(value: string): string {
  return /^[^\s'\\]+$/.test(value) ? value : `'${value.replace(/(['\\])/g, '\\$1')}'`;
}

function parsePort(text: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!(port >= 1 && port <= 65_535)) throw bad(text, `has an invalid port ${quote(value)}`);
  return port;
}

function checkAttrs(text: string, value: string | null): TargetSessionAttrs {
  if (value === null) return 'any';
  if (!(ATTRS as readonly string[]).includes(value)) {
    throw bad(
      text,
      `has target_session_attrs=${quote(value)}; expected one of ${ATTRS.join(', ')}`,
    );
  }
  return value as TargetSessionAttrs;
}

function checkBalance(text: string, value: string | null): LoadBalanceHosts {
  if (value === null) return 'disable';
  if (!(BALANCE as readonly string[]).includes(value)) {
    throw bad(text, `has load_balance_hosts=${quote(value)}; expected disable or random`);
  }
  return value as LoadBalanceHosts;
}

// The message names the problem, never the string: it may hold a password.
function bad(_text: string, why: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', `connectionString ${why}`, {
    details: { option: 'connectionString' },
  });
}

function quote(value: string): string {
  return JSON.stringify(value.slice(0, 80));
}

/** A target with the check its session must pass. */
export interface HostTarget extends EndpointTarget {
  /** Which session attribute the connection must have once logged in. */
  readonly require: TargetSessionAttrs;
  readonly key: string;
}

/** The one query that answers every target_session_attrs check. */
export const SESSION_STATE_QUERY =
  "SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS read_only";

/**
 * Chooses hosts for new connections and remembers, per host, why the last
 * attempt failed. A failed host is skipped for a few seconds while another
 * may work; when none is left, NO_HOST_AVAILABLE lists each host's code and
 * the next connection tries them all again. @internal
 */
export class HostSelector {
  readonly #list: HostList;
  readonly #defaultPort: number;
  readonly #transport: { connectTimeoutMs: number; handshakeTimeoutMs: number };
  readonly #failures = new Map<string, { code: ErrorCode; at: number }>();
  /** prefer-standby: every host was tried as a standby; until then any will do. */
  #relaxedUntil = 0;

  constructor(
    list: HostList,
    defaultPort: number,
    transport: { connectTimeoutMs: number; handshakeTimeoutMs: number },
  ) {
    this.#list = list;
    this.#defaultPort = defaultPort;
    this.#transport = transport;
  }

  get targetSessionAttrs(): TargetSessionAttrs {
    return this.#list.targetSessionAttrs;
  }

  /** The next host to dial. */
  next(): HostTarget {
    const now = Date.now();
    const order = [...this.#list.hosts];
    if (this.#list.loadBalanceHosts === 'random') {
      for (let i = order.length - 1; i > 0; i--) {
        const j = randomInt(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
    }
    for (const entry of order) {
      const key = this.#key(entry);
      const failure = this.#failures.get(key);
      if (failure === undefined || now - failure.at > HOST_COOL_DOWN_MS) return this.#target(entry);
    }
    const standbyMismatchOnly =
      this.#list.targetSessionAttrs === 'prefer-standby' &&
      now >= this.#relaxedUntil &&
      [...this.#failures.values()].some((f) => f.code === 'SESSION_ATTRS_MISMATCH');
    const hosts = order.map((entry) => ({
      host: entry.host,
      port: entry.port ?? this.#defaultPort,
      code: this.#failures.get(this.#key(entry))?.code,
    }));
    this.#failures.clear();
    if (standbyMismatchOnly) {
      // prefer-standby: no standby could be used, so any server will do (libpq's second pass).
      this.#relaxedUntil = now + HOST_COOL_DOWN_MS;
      return this.#target(order[0]!);
    }
    throw new RaTlsError(
      'NO_HOST_AVAILABLE',
      `no host could be used (target_session_attrs=${this.#list.targetSessionAttrs}): ` +
        hosts.map((h) => `${h.host}:${h.port} ${h.code ?? 'untried'}`).join(', '),
      { details: { hosts, targetSessionAttrs: this.#list.targetSessionAttrs } },
    );
  }

  /** Records why a host failed (attestation, transport or session attribute). */
  failed(target: EndpointTarget | undefined, error: unknown): void {
    const key = (target as Partial<HostTarget> | undefined)?.key;
    if (key === undefined) return;
    const code = error instanceof RaTlsError ? error.code : 'CONNECT_FAILED';
    this.#failures.set(key, { code, at: Date.now() });
  }

  /** A host served a matching session. */
  succeeded(target: EndpointTarget | undefined): void {
    const key = (target as Partial<HostTarget> | undefined)?.key;
    if (key !== undefined) this.#failures.delete(key);
  }

  /**
   * Checks a logged-in session against the target's attribute; throws
   * SESSION_ATTRS_MISMATCH (the connection must then be closed).
   */
  async checkSession(
    target: EndpointTarget | undefined,
    query: (sql: string) => Promise<{ rows: { standby: boolean; read_only: string }[] }>,
  ): Promise<void> {
    const require = (target as Partial<HostTarget> | undefined)?.require ?? 'any';
    if (require === 'any') return;
    const { rows } = await query(SESSION_STATE_QUERY);
    const state = rows[0];
    const standby = state?.standby === true;
    const readOnly = state?.read_only === 'on';
    const ok =
      require === 'read-write'
        ? !readOnly
        : require === 'read-only'
          ? readOnly
          : require === 'primary'
            ? !standby
            : standby;
    if (!ok) {
      const host = `${target?.host}:${target?.port}`;
      throw new RaTlsError(
        'SESSION_ATTRS_MISMATCH',
        `${host} is ${standby ? 'a standby' : 'a primary'}${readOnly ? ' (read-only)' : ''}, ` +
          `not what target_session_attrs=${this.#list.targetSessionAttrs} asks for; trying the next host`,
        { details: { host: target?.host, port: target?.port, standby, readOnly } },
      );
    }
  }

  #key(entry: HostEntry): string {
    return `${entry.host}|${entry.port ?? this.#defaultPort}`;
  }

  #target(entry: HostEntry): HostTarget {
    const attrs = this.#list.targetSessionAttrs;
    const require: TargetSessionAttrs =
      attrs === 'prefer-standby' ? (Date.now() < this.#relaxedUntil ? 'any' : 'standby') : attrs;
    return {
      host: entry.host,
      port: entry.port ?? this.#defaultPort,
      servername: isIP(entry.host) === 0 ? entry.host : undefined,
      connectTimeoutMs: this.#transport.connectTimeoutMs,
      handshakeTimeoutMs: this.#transport.handshakeTimeoutMs,
      require,
      key: this.#key(entry),
    };
  }
}
