/**
 * Signs leader manifests (docs/protocol.md §7) with a throw-away secp256k1 key, as
 * a teesql cluster's publisher does: for tests and the local cluster only.
 */
import { secp256k1 } from '@noble/curves/secp256k1';
import { addressOfPublicKey, manifestBody, personalMessageHash } from '../../cluster/manifest.js';
import { toHex } from '../../util/bytes.js';

/** The fields of a manifest before signing (values as on the wire). */
export interface ManifestFields {
  readonly v?: string;
  readonly cluster: string;
  readonly leader_instance: string;
  readonly leader_url: string;
  readonly epoch: number | string;
  readonly valid_until: number | string;
  /** Extra fields, e.g. to test that unknown fields are refused. */
  readonly [extra: string]: string | number | undefined;
}

/** Options of {@link ManifestSigner.sign}. */
export interface SignManifestOptions {
  /** Recovery id as 27/28 (Ethereum's usual form, default) or raw 0/1. */
  readonly recoveryForm?: 'ethereum' | 'raw';
  /** Field order on the wire (the signature does not depend on it). Default: sorted. */
  readonly order?: readonly string[];
}

/** A manifest signing key. */
export interface ManifestSigner {
  /** The signer address clients pin: `0x` + 40 lowercase hex. */
  readonly address: string;
  /** The wire form `key=value;...;sig=0x<130 hex>` of `fields`, signed with this key. */
  sign(fields: ManifestFields, options?: SignManifestOptions): string;
  /** The 65-byte EIP-191 signature (r‖s‖v, v 27/28) of a canonical body. */
  signBody(body: string): string;
}

/** A signer with a fresh random key, or with `privateKey` (32 bytes hex) when given. */
export function createManifestSigner(privateKey?: string): ManifestSigner {
  const secret =
    privateKey === undefined
      ? secp256k1.utils.randomPrivateKey()
      : Uint8Array.from(Buffer.from(privateKey.replace(/^0x/, ''), 'hex'));
  const address = addressOfPublicKey(secp256k1.getPublicKey(secret, false));
  const signBody = (body: string, raw = false): string => {
    const signature = secp256k1.sign(personalMessageHash(body), secret);
    const v = signature.recovery + (raw ? 0 : 27);
    return `0x${toHex(signature.toCompactRawBytes())}${v.toString(16).padStart(2, '0')}`;
  };
  return Object.freeze({
    address,
    signBody: (body: string) => signBody(body),
    sign: (fields: ManifestFields, options: SignManifestOptions = {}) => {
      const wire: Record<string, string> = {};
      for (const [key, value] of Object.entries({ v: '1', ...fields })) {
        if (value !== undefined) wire[key] = String(value);
      }
      const sig = signBody(manifestBody(wire), options.recoveryForm === 'raw');
      const order = options.order ?? Object.keys(wire).sort();
      const parts = order.filter((key) => key in wire).map((key) => `${key}=${wire[key]}`);
      for (const key of Object.keys(wire).sort()) {
        if (!order.includes(key)) parts.push(`${key}=${wire[key]}`);
      }
      return [...parts, `sig=${sig}`].join(';');
    },
  });
}
