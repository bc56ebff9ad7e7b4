/**
 * Reading HTTP response bodies with a size cap. A body from a server we do not
 * trust (a PCCS, a guest agent's transport) must not decide how much memory we
 * hold: reading stops, and the connection is dropped, as soon as the cap is
 * passed, whatever the server announced or keeps sending.
 */
import type { IncomingMessage } from 'node:http';

/** Thrown when a body is (or announces itself as) larger than its cap. */
export class BodyTooLargeError extends Error {
  readonly limit: number;

  constructor(limit: number) {
    super(`the response body exceeds the ${limit}-byte limit`);
    this.name = 'BodyTooLargeError';
    this.limit = limit;
  }
}

/**
 * The body of a fetch `Response`, at most `limit` bytes. Refuses at once a
 * Content-Length over the limit; otherwise reads chunk by chunk and cancels the
 * stream (closing the connection) the moment the total passes the limit.
 */
export async function readResponseBody(response: Response, limit: number): Promise<Uint8Array> {
  const announced = Number(response.headers.get('content-length') ?? Number.NaN);
  if (announced > limit) {
    await response.body?.cancel().catch(() => undefined);
    throw new BodyTooLargeError(limit);
  }
  const stream = response.body;
  if (stream === null) return new Uint8Array(0);
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => undefined);
      throw new BodyTooLargeError(limit);
    }
    chunks.push(value);
  }
  return concat(chunks, total);
}

/**
 * The body of a node:http response, at most `limit` bytes; past the limit the
 * response (and its socket) is destroyed.
 */
export function readMessageBody(message: IncomingMessage, limit: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const announced = Number(message.headers['content-length'] ?? Number.NaN);
    if (announced > limit) {
      message.destroy();
      reject(new BodyTooLargeError(limit));
      return;
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    message.on('data', (chunk: Buffer) => {
      total += chunk.byteLength;
      if (total > limit) {
        message.destroy();
        reject(new BodyTooLargeError(limit));
        return;
      }
      chunks.push(chunk);
    });
    message.on('end', () => resolve(concat(chunks, total)));
    message.on('error', reject);
    message.on('close', () => {
      if (!message.complete) reject(new Error('the connection closed before the body ended'));
    });
  });
}

function concat(chunks: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}
