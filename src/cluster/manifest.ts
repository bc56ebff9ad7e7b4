/**
 * The signed leader manifest of a teesql cluster (docs/protocol.md §7): parsing,
 * canonical body, EIP-191 signature recovery and freshness. Pure: no I/O.
 */
import type * as Secp256k1 from '@noble/curves/secp256k1';
import type * as Sha3 from '@noble/hashes/sha3';
import { type ErrorCode, RaTlsError } from '../errors.js';
import { toHex } from '../util/bytes.js';
import { lazyRequire } from '../util/lazy-require.js';

// Only cluster pools verify manifests: loaded at the first one, never preloaded.
const secp256k1 = lazyRequire<typeof Secp256k1>('@noble/curves/secp256k1', { preload: false });
const sha3 = lazyRequire<typeof Sha3>('@noble/hashes/sha3', { preload: false });

/** A manifest that verified: who leads the cluster, at which epoch, until when. */
export interface LeaderManifest {
  /** Cluster address, `0x` + 40 lowercase hex. */
  readonly cluster: string;
  /** The leader's instance id, lowercase hex. */
  readonly instance: string;
  /** The signed `leader_url`, verbatim. */
  readonly leaderUrl: string;
  /** Host name (or IP) of the leader URL: where to dial and, for a name, the TLS SNI. */
  readonly host: string;
  /** Explicit port of the leader URL, else 443 for `https`. */
  readonly port: number;
  readonly epoch: number;
  /** Unix seconds after which (plus the skew allowance) the manifest is no longer believed. */
  readonly validUntil: number;
  /** The recovered signer, `0x` + 40 lowercase hex (equal to the expected one). */
  readonly signer: string;
}

/** Options of {@link verifyManifest}. */
export interface VerifyManifestOptions {
  /** The expected manifest signer: a 20-byte Ethereum address, `0x` + 40 hex (any case). */
  readonly signer: string;
  /** Verification time. Default: now. */
  readonly now?: Date;
  /** Clock skew tolerated past `valid_until`, in seconds. Default 60. */
  readonly skew?: number;
  /** The highest epoch already seen: a lower one is refused (MANIFEST_EPOCH_ROLLBACK). */
  readonly minEpoch?: number;
}

/**
 * Largest manifest accepted, in bytes. A genuine one is ~400 bytes; a cap
 * keeps a hostile resolver from making us hash or split megabytes.
 */
export const MAX_MANIFEST_BYTES = 2048;
const DEFAULT_SKEW_SECONDS = 60;
const FIELDS = ['cluster', 'epoch', 'leader_instance', 'leader_url', 'sig', 'v', 'valid_until'];
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const INSTANCE = /^[0-9a-fA-F]{2,128}$/;
const UINT = /^(?:0|[1-9][0-9]{0,14})$/;
const SIGNATURE = /^0x[0-9a-fA-F]{130}$/;
// Printable ASCII without space: what the wire form is made of.
const PRINTABLE = /^[\x21-\x7e]*$/;

/**
 * Parses and verifies one leader manifest (docs/protocol.md §7).
 *
 * `txt` is the record's text, or its chunks (one TXT record's character
 * strings), which are concatenated. The canonical body is rebuilt from the
 * parsed fields (all but `sig`, sorted by key, joined by `;`), so wire order
 * does not matter; unknown or repeated fields are refused because a peer's
 * signature would not cover what we read. The EIP-191 signature must recover
 * to `signer`; `v` must be 1; `valid_until` plus `skew` must not have passed.
 *
 * Throws RaTlsError: MANIFEST_INVALID (form), MANIFEST_SIGNER_MISMATCH,
 * MANIFEST_EXPIRED, MANIFEST_EPOCH_ROLLBACK (below `minEpoch`); BAD_CONFIG for
 * bad options.
 */
export function verifyManifest(
  txt: string | readonly (string | Uint8Array)[],
  options: VerifyManifestOptions,
): LeaderManifest {
  const expected = normalizeSigner(options?.signer);
  const skew = options.skew ?? DEFAULT_SKEW_SECONDS;
  if (!(Number.isFinite(skew) && skew >= 0)) {
    throw new RaTlsError('BAD_CONFIG', 'skew must be a number of seconds >= 0', {
      details: { option: 'skew' },
    });
  }
  const text = joinChunks(txt);
  const fields = parseFields(text);
  const body = manifestBody(fields);
  const signer = recoverSigner(body, fields['sig']!);
  if (signer !== expected) {
    throw manifestError(
      'MANIFEST_SIGNER_MISMATCH',
      `the leader manifest is signed by ${signer}, not by the expected signer ${expected}: ` +
        'it was forged or tampered with, or the signer option names another cluster',
      { signer, expected },
    );
  }
  const manifest = checkFields(fields, signer);
  const nowSeconds = Math.floor((options.now ?? new Date()).getTime() / 1000);
  if (nowSeconds > manifest.validUntil + skew) {
    throw manifestError(
      'MANIFEST_EXPIRED',
      `the leader manifest (epoch ${manifest.epoch}) expired at ${iso(manifest.validUntil)}, ` +
        `beyond the ${skew} s skew allowance: the cluster's publisher has stopped refreshing it ` +
        '(or this clock is wrong)',
      { epoch: manifest.epoch, validUntil: manifest.validUntil },
    );
  }
  if (options.minEpoch !== undefined && manifest.epoch < options.minEpoch) {
    throw manifestError(
      'MANIFEST_EPOCH_ROLLBACK',
      `the leader manifest has epoch ${manifest.epoch}, lower than epoch ${options.minEpoch} ` +
        'already seen: a replayed, older manifest is refused',
      { epoch: manifest.epoch, minEpoch: options.minEpoch },
    );
  }
  return manifest;
}

/**
 * The canonical signed body of manifest fields (docs/protocol.md §7): every field
 * but `sig`, sorted by key, as `key=value` joined by `;`.
 */
export function manifestBody(fields: Readonly<Record<string, string>>): string {
  return Object.keys(fields)
    .filter((key) => key !== 'sig')
    .sort()
    .map((key) => `${key}=${fields[key]}`)
    .join(';');
}

/** keccak256 of the EIP-191 personal message of `body` (what the signer signs). */
export function personalMessageHash(body: string): Uint8Array {
  const message = new TextEncoder().encode(body);
  const prefix = new TextEncoder().encode(`\x19Ethereum Signed Message:\n${message.byteLength}`);
  const joined = new Uint8Array(prefix.byteLength + message.byteLength);
  joined.set(prefix);
  joined.set(message, prefix.byteLength);
  return sha3().keccak_256(joined);
}

/** The Ethereum address (`0x` + 40 lowercase hex) of an uncompressed or compressed public key. */
export function addressOfPublicKey(publicKey: Uint8Array): string {
  const point = secp256k1().secp256k1.Point.fromHex(toHex(publicKey));
  const uncompressed = point.toRawBytes(false);
  return `0x${toHex(sha3().keccak_256(uncompressed.subarray(1)).subarray(12))}`;
}

/** Validates and lowercases an expected signer address; BAD_CONFIG otherwise. */
export function normalizeSigner(signer: unknown): string {
  if (typeof signer !== 'string' || !ADDRESS.test(signer.trim())) {
    throw new RaTlsError(
      'BAD_CONFIG',
      'signer must be the cluster manifest signer as a 20-byte address (0x followed by 40 hex digits)',
      { details: { option: 'signer' } },
    );
  }
  return signer.trim().toLowerCase();
}

function joinChunks(txt: string | readonly (string | Uint8Array)[]): string {
  if (typeof txt === 'string') return checkSize(txt);
  if (!Array.isArray(txt)) {
    throw manifestError('MANIFEST_INVALID', 'the leader manifest must be a string or TXT chunks');
  }
  let total = 0;
  const parts: string[] = [];
  for (const chunk of txt) {
    const part =
      typeof chunk === 'string'
        ? chunk
        : chunk instanceof Uint8Array
          ? Buffer.from(chunk).toString('latin1')
          : undefined;
    if (part === undefined) {
      throw manifestError('MANIFEST_INVALID', 'a TXT chunk of the leader manifest is not text');
    }
    total += part.length;
    if (total > MAX_MANIFEST_BYTES) checkSize(' '.repeat(total));
    parts.push(part);
  }
  return parts.join('');
}

function checkSize(text: string): string {
  if (text.length > MAX_MANIFEST_BYTES) {
    throw manifestError(
      'MANIFEST_INVALID',
      `the leader manifest is larger than ${MAX_MANIFEST_BYTES} bytes; a genuine one is a few hundred`,
      { size: text.length },
    );
  }
  return text;
}

function parseFields(text: string): Record<string, string> {
  if (!PRINTABLE.test(text)) {
    throw manifestError(
      'MANIFEST_INVALID',
      'the leader manifest contains characters other than printable ASCII',
    );
  }
  const fields: Record<string, string> = Object.create(null);
  for (const segment of text.split(';')) {
    const equals = segment.indexOf('=');
    if (equals <= 0) {
      throw manifestError(
        'MANIFEST_INVALID',
        `the leader manifest has a segment that is not key=value: ${JSON.stringify(preview(segment))}`,
      );
    }
    const key = segment.slice(0, equals);
    const value = segment.slice(equals + 1);
    if (!FIELDS.includes(key)) {
      throw manifestError(
        'MANIFEST_INVALID',
        `the leader manifest has the unknown field ${JSON.stringify(preview(key))}; ` +
          'fields outside docs/protocol.md §7 are refused',
        { field: preview(key) },
      );
    }
    if (key in fields) {
      throw manifestError('MANIFEST_INVALID', `the leader manifest repeats the field ${key}`, {
        field: key,
      });
    }
    fields[key] = value;
  }
  for (const key of FIELDS) {
    if (!(key in fields)) {
      throw manifestError('MANIFEST_INVALID', `the leader manifest lacks the field ${key}`, {
        field: key,
      });
    }
  }
  if (!SIGNATURE.test(fields['sig']!)) {
    throw manifestError(
      'MANIFEST_INVALID',
      'the leader manifest sig is not 0x followed by 130 hex digits (65 bytes r‖s‖v)',
      { field: 'sig' },
    );
  }
  return fields;
}

function recoverSigner(body: string, sigHex: string): string {
  const signature = Buffer.from(sigHex.slice(2), 'hex');
  const v = signature[64]!;
  // Ethereum writes the recovery id as 27/28; some signers emit the raw 0/1.
  const recovery = v >= 27 ? v - 27 : v;
  if (recovery !== 0 && recovery !== 1) {
    throw manifestError(
      'MANIFEST_INVALID',
      `the leader manifest signature has v=${v}; expected 27, 28, 0 or 1`,
      { field: 'sig' },
    );
  }
  try {
    const point = secp256k1()
      .secp256k1.Signature.fromCompact(toHex(signature.subarray(0, 64)))
      .addRecoveryBit(recovery)
      .recoverPublicKey(personalMessageHash(body));
    return addressOfPublicKey(point.toRawBytes(false));
  } catch (error) {
    throw manifestError(
      'MANIFEST_INVALID',
      'the leader manifest signature is not a valid secp256k1 signature',
      { field: 'sig' },
      error,
    );
  }
}

function checkFields(fields: Record<string, string>, signer: string): LeaderManifest {
  const bad = (field: string, why: string) =>
    manifestError('MANIFEST_INVALID', `the leader manifest field ${field} ${why}`, { field });
  if (fields['v'] !== '1') throw bad('v', `is ${JSON.stringify(fields['v'])}; only v=1 is known`);
  const cluster = fields['cluster']!;
  if (!ADDRESS.test(cluster)) throw bad('cluster', 'is not 0x followed by 40 hex digits');
  const instance = fields['leader_instance']!;
  if (!INSTANCE.test(instance)) throw bad('leader_instance', 'is not a hex instance id');
  const epoch = fields['epoch']!;
  if (!UINT.test(epoch)) throw bad('epoch', 'is not an unsigned integer');
  const validUntil = fields['valid_until']!;
  if (!UINT.test(validUntil)) throw bad('valid_until', 'is not Unix seconds');
  const leaderUrl = fields['leader_url']!;
  const { host, port } = parseLeaderUrl(leaderUrl, bad);
  return Object.freeze({
    cluster: cluster.toLowerCase(),
    instance: instance.toLowerCase(),
    leaderUrl,
    host,
    port,
    epoch: Number(epoch),
    validUntil: Number(validUntil),
    signer,
  });
}

function parseLeaderUrl(
  leaderUrl: string,
  bad: (field: string, why: string) => RaTlsError,
): { host: string; port: number } {
  let url: URL;
  try {
    url = new URL(leaderUrl);
  } catch {
    throw bad('leader_url', 'is not a URL');
  }
  if (url.protocol !== 'https:') {
    throw bad('leader_url', `has the scheme ${url.protocol.replace(/:$/, '')}; only https is used`);
  }
  if (
    url.username !== '' ||
    url.password !== '' ||
    url.search !== '' ||
    url.hash !== '' ||
    (url.pathname !== '/' && url.pathname !== '')
  ) {
    throw bad('leader_url', 'must be https://host[:port] without credentials, path or query');
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw bad('leader_url', 'has no host');
  return { host, port: url.port === '' ? 443 : Number(url.port) };
}

function manifestError(
  code: ErrorCode,
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): RaTlsError {
  return new RaTlsError(code, message, { details, ...(cause === undefined ? {} : { cause }) });
}

function preview(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

function iso(unixSeconds: number): string {
  const date = new Date(unixSeconds * 1000);
  return Number.isNaN(date.getTime()) ? String(unixSeconds) : date.toISOString();
}
