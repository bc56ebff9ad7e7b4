/**
 * The dstack guest agent's RPC (docs/protocol.md §4): `POST /<Method>` with a JSON
 * body over its unix socket or, for the simulator, HTTP. Spoken here rather
 * than through @phala/dstack-sdk because the SDK reads answers without any
 * size limit and keeps reading after its caller gave up; this client bounds
 * both the time and the bytes of every call, and leaves no socket behind.
 */
import type { IncomingMessage } from 'node:http';
import { describeCause } from '../errors.js';
import { BodyTooLargeError, readMessageBody } from '../util/http-body.js';

/**
 * Largest guest agent answer read (1 MiB). A GetTlsKey answer (a key and a
 * short certificate chain with an embedded quote and event log) is tens of
 * KiB; reading stops at this size and the call fails.
 */
export const MAX_GUEST_AGENT_RESPONSE_BYTES = 1024 * 1024;

/** A failed call: `status` is the HTTP status when the agent answered at all. */
export class GuestAgentCallError extends Error {
  readonly status: number | undefined;

  constructor(message: string, status?: number) {
    super(message);
    this.name = 'GuestAgentCallError';
    this.status = status;
  }
}

/**
 * Calls `method` on the agent at `endpoint` (a socket path or an http(s) URL)
 * and returns the parsed JSON answer. Rejects with {@link GuestAgentCallError}
 * on a non-2xx status, a body over {@link MAX_GUEST_AGENT_RESPONSE_BYTES}, a
 * non-JSON answer, no complete answer within `timeoutMs`, or `signal` aborted
 * (the connection is destroyed then, so nothing keeps reading).
 */
export function callGuestAgent(
  endpoint: string,
  method: string,
  payload: Readonly<Record<string, unknown>>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<unknown> {
  if (signal?.aborted) {
    return Promise.reject(new GuestAgentCallError(`${method}: abandoned before it was sent`));
  }
  const body = JSON.stringify(payload);
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  return new Promise<unknown>((resolve, reject) => {
    let settled = false;
    const finish = (error: Error | undefined, value?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (error === undefined) resolve(value);
      else {
        req.destroy();
        reject(error);
      }
    };
    const onResponse = (response: IncomingMessage): void => {
      readMessageBody(response, MAX_GUEST_AGENT_RESPONSE_BYTES).then(
        (bytes) => {
          const text = Buffer.from(bytes).toString('utf8');
          const status = response.statusCode ?? 0;
          if (status < 200 || status > 299) {
            finish(
              new GuestAgentCallError(
                `${method} answered HTTP ${status}: ${excerpt(text)}`,
                status,
              ),
            );
            return;
          }
          try {
            finish(undefined, JSON.parse(text));
          } catch {
            finish(new GuestAgentCallError(`${method} answered something other than JSON`));
          }
        },
        (error: unknown) =>
          finish(
            new GuestAgentCallError(
              error instanceof BodyTooLargeError
                ? `${method} answered more than ${error.limit} bytes; refusing to read on`
                : `${method}: ${describeCause(error)}`,
            ),
          ),
      );
    };
    // Loaded here, not at import (node:https alone is a few ms of `import 'pg-ra-tls'`).
    const { request: httpRequest } = process.getBuiltinModule('node:http');
    const { request: httpsRequest } = process.getBuiltinModule('node:https');
    // agent: false: one connection per call, closed after it, so no keep-alive socket outlives close().
    const req = endpoint.startsWith('/')
      ? httpRequest(
          { socketPath: endpoint, path: `/${method}`, method: 'POST', headers, agent: false },
          onResponse,
        )
      : (endpoint.startsWith('https:') ? httpsRequest : httpRequest)(
          new URL(`/${method}`, endpoint),
          { method: 'POST', headers, agent: false },
          onResponse,
        );
    const timer = setTimeout(
      () => finish(new GuestAgentCallError(`${method}: no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    timer.unref();
    const onAbort = (): void =>
      finish(new GuestAgentCallError(`${method}: abandoned by its caller`));
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (error) =>
      finish(new GuestAgentCallError(`${method}: ${describeCause(error)}`)),
    );
    req.end(body);
  });
}

// The agent's error text helps the user; keep it short and on one line.
function excerpt(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > 200 ? `${line.slice(0, 200)}…` : line || '(empty body)';
}
