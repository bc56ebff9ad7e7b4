import { bytesEqual } from '../util/bytes.js';

/**
 * One copy of each server certificate (and of the issuers sent with it) per
 * process, however many connections hold it: every pooled connection keeps
 * its server's certificate for re-attestation, and a dstack leaf with its
 * quote is ~7 KiB (issue 11). A copy lives as long as a connection holds it.
 */
const leaves = new Map<string, WeakRef<Uint8Array>>();
const issuersOf = new WeakMap<Uint8Array, readonly Uint8Array[]>();
const forget = new FinalizationRegistry<string>((fingerprint) => {
  if (leaves.get(fingerprint)?.deref() === undefined) leaves.delete(fingerprint);
});

/**
 * The process's copies of a leaf certificate `der` (SHA-256 `fingerprint`,
 * so equal bytes) and of the `issuers` presented after it; the given ones
 * become the copies when there are none. Issuers that differ from the
 * shared ones (another handshake sent another chain) are kept as given, never
 * mixed. The bytes are shared: never modify them.
 */
export function sharedCertificates(
  fingerprint: string,
  der: Uint8Array,
  issuers: readonly Uint8Array[],
): { readonly der: Uint8Array; readonly issuers: readonly Uint8Array[] } {
  const known = leaves.get(fingerprint)?.deref();
  if (known !== undefined) {
    const knownIssuers = issuersOf.get(known) ?? [];
    return { der: known, issuers: sameIssuers(knownIssuers, issuers) ? knownIssuers : issuers };
  }
  const frozen = Object.freeze([...issuers]);
  leaves.set(fingerprint, new WeakRef(der));
  issuersOf.set(der, frozen);
  forget.register(der, fingerprint);
  return { der, issuers: frozen };
}

function sameIssuers(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  return a.length === b.length && a.every((der, i) => bytesEqual(der, b[i]!));
}

/**
 * How many certificates the process-wide map holds, collected ones included
 * until their finalizer runs. For tests that hold its memory bound (a
 * collected certificate leaves it). @internal
 */
export function sharedCertificateCount(): number {
  return leaves.size;
}
