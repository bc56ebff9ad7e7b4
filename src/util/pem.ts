/**
 * The one PEM reader of pg-ra-tls (RFC 7468 blocks such as CERTIFICATE or
 * X509 CRL). Strict about what it decodes: each block's body must be
 * canonical base64 (Buffer's decoder would otherwise skip junk silently).
 * Text outside the blocks is ignored, as PEM files carry comments. Pure code;
 * throws plain Errors that callers turn into their own typed error.
 */

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The DER of every `label` block of `text`, in order (an empty list when there is none). */
export function pemBlocks(text: string, label = 'CERTIFICATE'): Uint8Array[] {
  const pattern = new RegExp(`-----BEGIN ${label}-----([^-]*)-----END ${label}-----`, 'g');
  const blocks: Uint8Array[] = [];
  for (const match of text.matchAll(pattern)) {
    const body = (match[1] ?? '').replace(/\s+/g, '');
    if (body.length === 0 || body.length % 4 !== 0 || !BASE64.test(body)) {
      throw new Error(`PEM ${label} block ${blocks.length} is not valid base64`);
    }
    blocks.push(new Uint8Array(Buffer.from(body, 'base64')));
  }
  return blocks;
}
