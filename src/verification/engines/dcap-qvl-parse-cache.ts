/**
 * Remembers pure parsing work of `@phala/dcap-qvl` across verifications, in
 * the thread that runs the JS engine (docs/protocol.md §3).
 *
 * The library re-parses the same collateral and PCK certificates on every
 * call: ~18 `X509Certificate`s built from PEM and ~20 asn1.js decodes of the
 * same two CRLs and a few certificates per verification, about half of its
 * time. Here each parse result is kept, keyed by the exact text or bytes it was
 * parsed from, so only identical input ever shares a result. What is never kept:
 * a signature check (`X509Certificate.verify`, `crypto.verify` run on every
 * call), a time or validity decision (made by the library on every call from the
 * parsed dates), a revocation decision (the library matches serials on every
 * call), or a parse error (thrown again for the same input).
 *
 * This reaches into the library's CommonJS modules (`src/crypto-compat.js`,
 * `src/utils.js`), so it is pinned to the installed shape: version
 * {@link PINNED_VERSION}, node's own `X509Certificate` behind the compatibility
 * layer, asn1.js entities with `decode`. If any of that differs the library
 * runs unpatched (correct, only slower) and {@link parseCacheState} says why.
 */
import { Buffer } from 'node:buffer';
import { X509Certificate } from 'node:crypto';
import { createRequire } from 'node:module';

/** The `@phala/dcap-qvl` version whose internals this was written against. */
export const PINNED_VERSION = '0.3.9';

/** How many parse results of each kind are kept (least recently used dropped first). */
export const PARSE_CACHE_ENTRIES = 64;

/** Whether the parse cache is installed in this thread's copy of the library. */
export type ParseCacheState =
  | { readonly active: true; readonly version: string }
  | { readonly active: false; readonly reason: string };

/** Hits and misses so far in this thread (tests and benchmarks). */
export interface ParseCacheStats {
  readonly certificateHits: number;
  readonly certificateMisses: number;
  readonly derHits: number;
  readonly derMisses: number;
}

interface Asn1Entity {
  decode(data: unknown, enc?: string, options?: unknown): unknown;
}

/** A small least-recently-used map. */
class Recent<K, V> {
  readonly #entries = new Map<K, V>();

  get(key: K): V | undefined {
    const value = this.#entries.get(key);
    if (value !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.#entries.set(key, value);
    if (this.#entries.size > PARSE_CACHE_ENTRIES) {
      this.#entries.delete(this.#entries.keys().next().value as K);
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}

let state: ParseCacheState | undefined;
let enabled = true;
const stats = { certificateHits: 0, certificateMisses: 0, derHits: 0, derMisses: 0 };
const certificates = new Recent<string, X509Certificate>();
const clearers: (() => void)[] = [certificates.clear.bind(certificates)];

/**
 * Installs the cache into this thread's `@phala/dcap-qvl` (once; later calls
 * return the first outcome). `engineVerifier` is the `QuoteVerifier` the
 * engine calls: the cache is installed only if it belongs to the copy of the
 * library patched here. Never throws: a library of another shape runs unpatched.
 */
export function installParseCache(engineVerifier: unknown): ParseCacheState {
  state ??= install(engineVerifier);
  return state;
}

/** The outcome of {@link installParseCache}, or undefined before it ran. */
export function parseCacheState(): ParseCacheState | undefined {
  return state;
}

export function parseCacheStats(): ParseCacheStats {
  return { ...stats };
}

/**
 * Turns the cache off or on and forgets what it holds (benchmarks compare
 * both in one process; tests prove a verification is the same either way).
 */
export function setParseCacheEnabled(on: boolean): void {
  enabled = on;
  for (const clear of clearers) clear();
}

/** The modules of `@phala/dcap-qvl` the cache reaches into, as loaded. */
export interface DcapQvlModules {
  /** `version` of its package.json. */
  readonly version: unknown;
  /** `src/index.js`. */
  readonly index: Record<string, unknown>;
  /** `src/crypto-compat.js`. */
  readonly compat: Record<string, unknown>;
  /** `src/utils.js`. */
  readonly utils: Record<string, unknown>;
}

/**
 * Why `modules` are not the shape the cache was written against (a sentence),
 * or undefined when they are. `engineVerifier` must be this copy's `QuoteVerifier`.
 */
export function shapeMismatch(
  modules: DcapQvlModules,
  engineVerifier: unknown,
): string | undefined {
  const { version, index, compat, utils } = modules;
  if (version !== PINNED_VERSION) {
    return `@phala/dcap-qvl is ${String(version)}, the parse cache is pinned to ${PINNED_VERSION}`;
  }
  if (index['QuoteVerifier'] !== engineVerifier) {
    return 'the engine uses another copy of @phala/dcap-qvl than the one found';
  }
  if (index['utils'] !== utils) return 'the package does not export its own utils module';
  if (compat['X509Certificate'] !== X509Certificate) {
    return "its crypto layer does not use node's X509Certificate";
  }
  for (const name of ['Certificate', 'CertificateList']) {
    if (typeof (utils[name] as Partial<Asn1Entity> | undefined)?.decode !== 'function') {
      return `utils.${name} is not an asn1.js entity`;
    }
  }
  const missing = BYTE_FUNCTIONS.find((name) => typeof utils[name] !== 'function');
  return missing === undefined ? undefined : `utils.${missing} is not a function`;
}

function install(engineVerifier: unknown): ParseCacheState {
  let modules: DcapQvlModules;
  try {
    const fromPackage = createRequire(createRequire(import.meta.url).resolve('@phala/dcap-qvl'));
    modules = {
      version: (fromPackage('../package.json') as { version?: unknown }).version,
      index: fromPackage('./index.js') as Record<string, unknown>,
      compat: fromPackage('./crypto-compat.js') as Record<string, unknown>,
      utils: fromPackage('./utils.js') as Record<string, unknown>,
    };
  } catch (cause) {
    return off(`the modules of @phala/dcap-qvl could not be read (${String(cause)})`);
  }
  const mismatch = shapeMismatch(modules, engineVerifier);
  if (mismatch !== undefined) return off(mismatch);
  const { compat, utils } = modules;
  compat['X509Certificate'] = cachingX509Certificate();
  cacheDerDecode(utils['Certificate'] as Asn1Entity);
  cacheDerDecode(utils['CertificateList'] as Asn1Entity);
  for (const name of BYTE_FUNCTIONS) cacheByBytes(utils, name);
  return { active: true, version: PINNED_VERSION };
}

function off(reason: string): ParseCacheState {
  return { active: false, reason: `${reason}; the JS engine runs without its parse cache` };
}

/**
 * Pure functions of the library's utils module from bytes to bytes (or a
 * number): the PCK certificate's SGX extension fields (each call defines and
 * compiles new asn1.js schemas) and the DER encoding of a raw ECDSA signature.
 * Called by the library through the module object, so replacing them there
 * reaches every caller that matters (verify.js, intel.js).
 */
const BYTE_FUNCTIONS = [
  'findExtension',
  'getCpuSvn',
  'getPceSvn',
  'getFmspc',
  'encodeAsDer',
] as const;

/**
 * A stand-in for `new X509Certificate(pem)` (called with `new`: returning an
 * object makes that object the result) that returns the certificate parsed
 * from the identical PEM text before. The object is node's own; `verify()` on
 * it still checks the signature on every call.
 */
function cachingX509Certificate(): unknown {
  return function CachedX509Certificate(input: unknown): X509Certificate {
    if (!enabled || typeof input !== 'string') return new X509Certificate(input as string);
    let cert = certificates.get(input);
    if (cert === undefined) {
      stats.certificateMisses++;
      cert = new X509Certificate(input);
      certificates.set(input, cert);
    } else {
      stats.certificateHits++;
    }
    return cert;
  };
}

/**
 * Makes `entity.decode(der, 'der')` return the result decoded from identical
 * bytes before. The bytes are copied first, so the result (whose buffers are
 * views of its input) never shares memory with a caller's buffer.
 */
function cacheDerDecode(entity: Asn1Entity): void {
  const decode = entity.decode.bind(entity) as Asn1Entity['decode'];
  const results = new Recent<string, unknown>();
  clearers.push(results.clear.bind(results));
  entity.decode = (data: unknown, enc?: string, options?: unknown): unknown => {
    if (!enabled || enc !== 'der' || options !== undefined || !Buffer.isBuffer(data)) {
      return decode(data, enc, options);
    }
    const key = data.toString('latin1');
    let result = results.get(key);
    if (result === undefined) {
      stats.derMisses++;
      const owned = Buffer.alloc(data.length);
      data.copy(owned);
      result = decode(owned, enc);
      rememberSerials(result);
      results.set(key, result);
    } else {
      stats.derHits++;
    }
    return result;
  };
}

/** The bytes of `value` as a string key, or undefined if it is not bytes. */
function bytesKey(value: unknown): string | undefined {
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  if (value instanceof Uint8Array) {
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('latin1');
  }
  return undefined;
}

/**
 * Makes `module[name](...args)` return what it returned for identical
 * arguments (byte arguments compared by content, a path of OID strings by
 * value). A Buffer result is copied out on every call, so no caller can change
 * what the next one gets.
 */
function cacheByBytes(module: Record<string, unknown>, name: string): void {
  const original = module[name] as (...args: unknown[]) => unknown;
  const results = new Recent<string, unknown>();
  clearers.push(results.clear.bind(results));
  const copyOut = (value: unknown) => (Buffer.isBuffer(value) ? Buffer.from(value) : value);
  module[name] = (...args: unknown[]): unknown => {
    const key = enabled ? argumentsKey(args) : undefined;
    if (key === undefined) return original(...args);
    let result = results.get(key);
    if (result === undefined) {
      stats.derMisses++;
      result = copyOut(original(...args));
      results.set(key, result);
    } else {
      stats.derHits++;
    }
    return copyOut(result);
  };
}

function argumentsKey(args: readonly unknown[]): string | undefined {
  const parts: string[] = [];
  for (const arg of args) {
    if (Array.isArray(arg) && arg.every((item) => typeof item === 'string')) {
      parts.push(`[${arg.join(' ')}]`);
      continue;
    }
    const bytes = bytesKey(arg);
    if (bytes === undefined) return undefined;
    parts.push(`${bytes.length}:${bytes}`);
  }
  return parts.join('|');
}

/**
 * The library compares certificate serials as decimal strings (bn.js
 * `toString()`), ~900 conversions a verification; a decoded result kept here
 * converts each of its serials once.
 */
function rememberSerials(decoded: unknown): void {
  const record = decoded as {
    tbsCertificate?: { serialNumber?: unknown };
    tbsCertList?: { revokedCertificates?: unknown };
  };
  rememberDecimal(record.tbsCertificate?.serialNumber);
  const revoked = record.tbsCertList?.revokedCertificates;
  if (Array.isArray(revoked)) {
    for (const entry of revoked)
      rememberDecimal((entry as { userCertificate?: unknown }).userCertificate);
  }
}

function rememberDecimal(number: unknown): void {
  if (typeof number !== 'object' || number === null) return;
  const convert = (number as { toString: (base?: unknown, padding?: unknown) => string }).toString;
  const decimal = convert.call(number, 10);
  Object.defineProperty(number, 'toString', {
    configurable: true,
    value: (base?: unknown, padding?: unknown): string =>
      (base === undefined || base === 10) && padding === undefined
        ? decimal
        : convert.call(number, base, padding),
  });
}
