import { RaTlsError } from '../errors.js';

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
 * libpq `password=...`) so that it can be echoed in messages and logs.
 * Works on strings that do not even parse.
 */
export function maskConnectionString(dsn: string): string {
  return dsn
    .replace(/(:\/\/[^:/?#@\s]*:)[^@/?#\s]*@/g, `$1${MASK}@`)
    .replace(/([?&]password=)[^&#\s]*/gi, `$1${MASK}`)
    .replace(/(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']*)/gi, `$1${MASK}`);
}

/**
 * Parses a `postgres://` / `postgresql://` URL or a libpq keyword/value string
 * (`host=... port=... user=... password=... dbname=...`). Pure: no I/O, no defaults.
 * Errors are BAD_CONFIG with the password masked.
 */
export function parseConnectionString(dsn: string): ParsedConnectionString {
  const text = dsn.trim();
  if (text === '') {
    throw new RaTlsError('BAD_CONFIG', 'connectionString is empty: pass a postgres:// URL');
  }
  return URL_SCHEME.test(text) ? parseUrl(text) : parseKeywords(text);
}

function badDsn(dsn: string, why: string): RaTlsError {
  return new RaTlsError(
    'BAD_CONFIG',
    `connectionString ${JSON.stringify(maskConnectionString(dsn))} ${why}`,
    { details: { option: 'connectionString' } },
  );
}

function decode(dsn: string, value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw badDsn(dsn, 'has an invalid percent-encoding');
  }
}

function parseUrl(dsn: string): ParsedConnectionString {
  // The WHATWG parser treats postgres: as a non-special scheme; swap it for
  // http: so the authority (IPv6 brackets, ports) is parsed by the same rules.
  let url: URL;
  try {
    url = new URL(dsn.replace(URL_SCHEME, 'http://'));
  } catch {
    // The URL error text echoes the input, password included: never forward it.
    throw badDsn(dsn, 'is not a valid URL; expected postgres://user:password@host:5433/database');
  }
  const authority = /^postgres(?:ql)?:\/\/([^/?#]*)/i.exec(dsn)?.[1] ?? '';
  const hostPart = authority.slice(authority.lastIndexOf('@') + 1);
  if (hostPart.includes(',')) {
    throw badDsn(dsn, 'lists several hosts; pg-ra-tls attests exactly one server');
  }
  const parameters: Record<string, string> = {};
  for (const [key, value] of url.searchParams) parameters[key] = value;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const path = url.pathname.replace(/^\//, '');
  // libpq lets query parameters (?host=, ?user=, ...) override the URL's parts.
  return {
    ...(host === '' ? {} : { host: decode(dsn, host) }),
    ...(url.port === '' ? {} : { port: url.port }),
    ...(url.username === '' ? {} : { user: decode(dsn, url.username) }),
    ...(url.password === '' ? {} : { password: decode(dsn, url.password) }),
    ...(path === '' ? {} : { database: decode(dsn, path) }),
    ...pickConnectionFields(parameters),
    parameters: takeConnectionFields(parameters),
  };
}

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
      throw badDsn(dsn, 'is neither a postgres:// URL nor a list of key=value pairs');
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
      if (!closed) throw badDsn(dsn, 'has an unterminated quoted value');
    } else {
      while (i < n && !/\s/.test(dsn[i]!)) {
        if (dsn[i] === '\\' && i + 1 < n) i++;
        value += dsn[i];
        i++;
      }
    }
    values[key] = value;
  }
  if (values['host']?.includes(',')) {
    throw badDsn(dsn, 'lists several hosts; pg-ra-tls attests exactly one server');
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
