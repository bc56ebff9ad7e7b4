import { RaTlsError } from '../errors.js';
import { closestName } from '../util/did-you-mean.js';

/**
 * The fields of a Postgres connection string, before any pg-ra-tls rule is applied.
 * `parameters` holds every other `key=value` (URL query or libpq keyword), unvalidated.
 */
export interface ParsedConnectionString {
  readonly host?: string;
  /** libpq `hostaddr`: the numeric address to connect to, while `host` stays the TLS name. */
  readonly hostaddr?: string;
  readonly port?: string;
  readonly user?: string;
  readonly password?: string;
  readonly database?: string;
  readonly parameters: Readonly<Record<string, string>>;
}

const MASK = '****';
const URL_SCHEME = /^postgres(?:ql)?:\/\//i;

/**
 * Hides the password of a connection string (URL userinfo, `?password=` and
 * libpq `password=...`) so that it can be echoed in output and logs. Works on
 * strings that do not parse, erring towards hiding too much: in anything that
 * is not keyword form, everything between the first `:` of the userinfo and
 * the last `@` is hidden, so a password with an unencoded `/`, `?`, `#` or `@`
 * is hidden whole. Error messages never echo a connection string at all.
 */
export function maskConnectionString(dsn: string): string {
  if (KEYWORD_START.test(dsn)) return maskKeywordPasswords(dsn);
  // Both places a URL may hold the password are found on the original text and
  // hidden together: a "?" or "@" inside one must not hide the other.
  const hidden = [...userinfoRange(dsn), ...queryRanges(dsn)];
  return hideRanges(dsn, hidden);
}

type Range = readonly [start: number, end: number];

/** From the first ":" after the scheme to the last "@": the password, however encoded. */
function userinfoRange(dsn: string): Range[] {
  const scheme = /^\s*[A-Za-z][A-Za-z0-9+.-]*:\/*/.exec(dsn)?.[0].length ?? 0;
  const at = dsn.lastIndexOf('@');
  const colon = dsn.indexOf(':', scheme);
  if (colon < 0) return [];
  if (at > colon) return [[colon + 1, at]];
  // No "@" after it: a port, unless it is not a number ("user:password" without "@host").
  const port = /^[^/?#]*/.exec(dsn.slice(colon + 1))?.[0] ?? '';
  return at < 0 && !/^\d*$/.test(port) ? [[colon + 1, dsn.length]] : [];
}

/**
 * The values of `password` (or a misspelling) in the query, and whole
 * parameters that are no known keyword: such a "parameter" may be a piece of
 * a password with an unencoded "?" or "&".
 */
function queryRanges(dsn: string): Range[] {
  const ranges: Range[] = [];
  const query = dsn.indexOf('?');
  if (query < 0) return ranges;
  let start = query + 1;
  for (const segment of dsn.slice(query + 1).split('&')) {
    const eq = segment.indexOf('=');
    const key = eq < 0 ? segment : segment.slice(0, eq);
    if (isPasswordKey(key)) ranges.push([start + eq + 1, start + segment.length]);
    else if (!KEYWORDS.has(key.toLowerCase())) ranges.push([start, start + segment.length]);
    start += segment.length + 1;
  }
  return ranges;
}

function hideRanges(text: string, ranges: readonly Range[]): string {
  const hidden = new Uint8Array(text.length);
  for (const [start, end] of ranges) hidden.fill(1, Math.max(0, start), Math.max(start, end));
  let out = '';
  for (let i = 0; i < text.length; i++) {
    if (hidden[i] === 0) out += text[i];
    else if (i === 0 || hidden[i - 1] === 0) out += MASK;
  }
  return out;
}

const KEYWORD_START = /^\s*[A-Za-z0-9_]+\s*=/;
const KEYWORD_PASSWORD = /\b([A-Za-z0-9_]+)\s*=\s*/g;

/** `password`, or a misspelling of it: its value is masked all the same. */
function isPasswordKey(key: string): boolean {
  return closestName(key, ['password'], 3) !== undefined;
}
const NEXT_KEYWORD = /^\s+([A-Za-z0-9_]+)\s*=/;
/** Keyword fields whose values messages and descriptions show. */
const ECHOED_FIELDS = new Set(['host', 'hostaddr', 'port', 'user', 'dbname']);
/** libpq's keywords and node-postgres's own: the only names that can follow a password. */
const KEYWORDS = new Set(
  (
    'host hostaddr port user password passfile dbname connect_timeout client_encoding options ' +
    'application_name fallback_application_name keepalives keepalives_idle keepalives_interval ' +
    'keepalives_count tcp_user_timeout replication gssencmode sslmode requiressl sslnegotiation ' +
    'sslcompression sslcert sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni ' +
    'requirepeer ssl_min_protocol_version ssl_max_protocol_version min_protocol_version ' +
    'max_protocol_version krbsrvname gsslib gssdelegation service target_session_attrs ' +
    'load_balance_hosts require_auth channel_binding statement_timeout query_timeout ' +
    'lock_timeout idle_in_transaction_session_timeout ssl uselibpqcompat sslkeylogfile'
  ).split(' '),
);

function followedByKeyword(rest: string): boolean {
  if (/^\s*$/.test(rest)) return true;
  const key = NEXT_KEYWORD.exec(rest)?.[1];
  return key !== undefined && KEYWORDS.has(key.toLowerCase());
}

/**
 * Masks each libpq `password=` value, quoted (with `\'` escapes) or not. When
 * what follows the value is not another `key=` or the end (an unquoted space
 * or a stray quote inside the password), the rest of the string is masked too.
 */
function maskKeywordPasswords(text: string): string {
  let out = '';
  let from = 0;
  for (const match of text.matchAll(KEYWORD_PASSWORD)) {
    const start = match.index + match[0].length;
    if (start < from || !isPasswordKey(match[1] ?? '')) continue;
    let end = start;
    if (text[end] === "'") {
      end++;
      while (end < text.length && text[end] !== "'") end += text[end] === '\\' ? 2 : 1;
      end = Math.min(end + 1, text.length);
    } else {
      while (end < text.length && !/\s/.test(text[end]!)) end += text[end] === '\\' ? 2 : 1;
      end = Math.min(end, text.length);
    }
    if (!followedByKeyword(text.slice(end))) end = text.length;
    out += `${text.slice(from, start)}${MASK}`;
    from = end;
  }
  return out + text.slice(from);
}

/**
 * Parses a `postgres://` / `postgresql://` URL or a libpq keyword/value string
 * (`host=... port=... user=... password=... dbname=...`). Pure: no I/O, no defaults.
 * Errors are BAD_CONFIG and never contain the connection string or any part of
 * it: a malformed one may hold the password anywhere.
 */
export function parseConnectionString(dsn: string): ParsedConnectionString {
  const text = dsn.trim();
  if (text === '') {
    throw new RaTlsError('BAD_CONFIG', 'connectionString is empty: pass a postgres:// URL');
  }
  return URL_SCHEME.test(text) ? parseUrl(text) : parseKeywords(text);
}

function badDsn(why: string): RaTlsError {
  return new RaTlsError(
    'BAD_CONFIG',
    `connectionString ${why} (the connection string is not shown: it may contain the password)`,
    { details: { option: 'connectionString' } },
  );
}

const ENCODE_HINT =
  'percent-encode "/", "?", "#", "@", "%" and spaces in the user and password (%2F, %3F, %23, %40, %25, %20)';

function decode(value: string, part: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw badDsn(`has an invalid percent-encoding in its ${part}: ${ENCODE_HINT}`);
  }
}

/**
 * The URL form, as node-postgres (pg-connection-string) reads it: the WHATWG
 * parser on the postgres: scheme itself, so a port is kept as written (80
 * included) and IPv6 hosts keep their brackets. pg-connection-string itself
 * is not called: it reads the sslcert/sslkey/sslrootcert files while parsing
 * (I/O in a pure step, for parameters pg-ra-tls ignores) and resolves
 * non-URLs against a dummy base. test/connection-config.test.ts checks both
 * agree on every field of valid URLs.
 */
function parseUrl(dsn: string): ParsedConnectionString {
  const rest = dsn.replace(URL_SCHEME, '');
  const authorityEnd = rest.search(/[/?#]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const tail = authorityEnd < 0 ? '' : rest.slice(authorityEnd);
  // An "@" after the authority means the userinfo itself held a "/", "?" or
  // "#": the URL parser would read part of the password as host, path or fragment.
  if (tail.includes('@')) {
    throw badDsn(`has an "@" after its host part: ${ENCODE_HINT}`);
  }
  if (tail.includes('#')) {
    throw badDsn(`has a "#", which a Postgres URL does not use: ${ENCODE_HINT}`);
  }
  const hosts = splitHosts(authority.slice(authority.lastIndexOf('@') + 1));
  if (hosts.length > 1) {
    throw badDsn('lists several hosts; pg-ra-tls attests exactly one server');
  }
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    // The URL error text echoes the input, password included: never forward it.
    throw badDsn(
      `is not a valid URL: expected postgres://user:password@host:5433/database; ${ENCODE_HINT}`,
    );
  }
  const parameters: Record<string, string> = {};
  for (const [key, value] of url.searchParams) parameters[key] = value;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const path = url.pathname.replace(/^\//, '');
  // libpq lets query parameters (?host=, ?user=, ...) override the URL's parts.
  return {
    ...(host === '' ? {} : { host: decode(host, 'host') }),
    ...(url.port === '' ? {} : { port: url.port }),
    ...(url.username === '' ? {} : { user: decode(url.username, 'user') }),
    ...(url.password === '' ? {} : { password: decode(url.password, 'password') }),
    ...(path === '' ? {} : { database: decode(path, 'database name') }),
    ...pickConnectionFields(parameters),
    parameters: takeConnectionFields(parameters),
  };
}

/**
 * The comma-separated hosts of a URL authority (libpq's multi-host form),
 * IPv6 brackets respected. Only one is supported today; the list is kept so
 * that failover across hosts can be added here.
 */
function splitHosts(hostPart: string): string[] {
  return hostPart.split(/,(?![^[]*\])/);
}

const SCHEME_TYPO = /^\s*([A-Za-z][A-Za-z0-9+.-]*):/;

function parseKeywords(dsn: string): ParsedConnectionString {
  const values: Record<string, string> = {};
  let i = 0;
  const n = dsn.length;
  const skipSpace = () => {
    while (i < n && /\s/.test(dsn[i]!)) i++;
  };
  while (true) {
    skipSpace();
    if (i >= n) break;
    const keyStart = i;
    while (i < n && /[A-Za-z0-9_]/.test(dsn[i]!)) i++;
    const key = dsn.slice(keyStart, i);
    skipSpace();
    if (key === '' || dsn[i] !== '=') {
      const scheme = SCHEME_TYPO.exec(dsn)?.[1];
      const hint =
        scheme !== undefined && closestName(scheme, ['postgres', 'postgresql']) !== undefined
          ? ': its scheme is misspelled, use postgres:// or postgresql://'
          : keyStart === 0
            ? ': expected postgres://user:password@host:5433/database'
            : ": quote values that contain spaces (password='…')";
      throw badDsn(`is neither a postgres:// URL nor a list of key=value pairs${hint}`);
    }
    i++;
    skipSpace();
    let value = '';
    if (dsn[i] === "'") {
      i++;
      let closed = false;
      while (i < n) {
        const ch = dsn[i]!;
        if (ch === '\\' && i + 1 < n) {
          value += dsn[i + 1];
          i += 2;
        } else if (ch === "'") {
          i++;
          closed = true;
          break;
        } else {
          value += ch;
          i++;
        }
      }
      if (!closed) throw badDsn('has an unterminated quoted value');
    } else {
      while (i < n && !/\s/.test(dsn[i]!)) {
        if (dsn[i] === '\\' && i + 1 < n) i++;
        value += dsn[i];
        i++;
      }
      // `host= password=…`: as in libpq, spaces after `=` are skipped, so an empty
      // value swallows the next pair, which may be the password: refuse, unseen.
      // A host, port, user or database name never holds `=` unquoted; other
      // values may, but not a `keyword=` or `password=`-like pair.
      const swallowed =
        (ECHOED_FIELDS.has(key) && value.includes('=')) ||
        [...value.matchAll(/([A-Za-z0-9_]+)\s*=/g)].some(
          ([, name]) => KEYWORDS.has(name!) || isPasswordKey(name!),
        );
      if (swallowed) {
        const name = KEYWORDS.has(key) ? key : 'a setting';
        throw badDsn(
          `gives ${name} an empty value, so the next key=value pair was read as its value: ` +
            `write ${KEYWORDS.has(key) ? key : 'it'}='' or leave it out`,
        );
      }
    }
    values[key] = value;
  }
  if (values['host']?.includes(',')) {
    throw badDsn('lists several hosts; pg-ra-tls attests exactly one server');
  }
  return { ...pickConnectionFields(values), parameters: takeConnectionFields(values) };
}

function pickConnectionFields(
  values: Record<string, string>,
): Omit<ParsedConnectionString, 'parameters'> {
  const host = values['host'];
  const hostaddr = values['hostaddr'];
  return {
    ...(host === undefined ? {} : { host }),
    ...(hostaddr === undefined ? {} : { hostaddr }),
    ...(values['port'] === undefined ? {} : { port: values['port'] }),
    ...(values['user'] === undefined ? {} : { user: values['user'] }),
    ...(values['password'] === undefined ? {} : { password: values['password'] }),
    ...(values['dbname'] === undefined ? {} : { database: values['dbname'] }),
  };
}

/** Everything except the connection fields, which parseUrl/parseKeywords read separately. */
function takeConnectionFields(values: Record<string, string>): Record<string, string> {
  const rest: Record<string, string> = {};
  for (const [key, value] of Object.entries(values)) {
    if (!['host', 'hostaddr', 'port', 'user', 'password', 'dbname'].includes(key))
      rest[key] = value;
  }
  return rest;
}
