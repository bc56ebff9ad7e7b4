/**
 * Seed-derived P-256 keys and bytes, so that one seed always yields the same
 * test root of trust (keys, serial numbers, identifiers). ECDSA signatures stay
 * randomised (node:crypto has no RFC 6979 mode); nothing a test asserts depends on them.
 */
import {
  createECDH,
  createHash,
  createPrivateKey,
  createPublicKey,
  hkdfSync,
  type KeyObject,
} from 'node:crypto';

const SALT = 'pg-ra-tls test authority v1';

/** A P-256 key pair in the forms the authority needs. */
export interface P256KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** x ‖ y (64 bytes): the DCAP attestation-key encoding (uncompressed point without 0x04). */
  readonly publicPoint: Uint8Array;
  /** SHA-1 of the uncompressed point: the RFC 5280 §4.2.1.2 (method 1) key identifier. */
  readonly keyId: Uint8Array;
}

/** `length` bytes derived from `seed` for the purpose named by `label` (HKDF-SHA256). */
export function deriveBytes(seed: Uint8Array, label: string, length: number): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', seed, SALT, label, length));
}

/** The P-256 key pair derived from `seed` for `label`. */
export function deriveP256Key(seed: Uint8Array, label: string): P256KeyPair {
  const ecdh = createECDH('prime256v1');
  // A 32-byte string is a valid scalar unless it is 0 or ≥ n (probability ~2^-32);
  // re-derive with a counter in that case.
  for (let attempt = 0; ; attempt++) {
    try {
      ecdh.setPrivateKey(deriveBytes(seed, `${label}#${attempt}`, 32));
      break;
    } catch {
      if (attempt > 16) throw new Error(`cannot derive a P-256 key for ${label}`);
    }
  }
  const point = ecdh.getPublicKey();
  const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');
  const privateKey = createPrivateKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      x: b64(point.subarray(1, 33)),
      y: b64(point.subarray(33, 65)),
      d: b64(ecdh.getPrivateKey()),
    },
    format: 'jwk',
  });
  return {
    privateKey,
    publicKey: createPublicKey(privateKey),
    publicPoint: new Uint8Array(point.subarray(1)),
    keyId: new Uint8Array(createHash('sha1').update(point).digest()),
  };
}
