import { rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { describeCause } from '../../errors.js';
import type { EventLogEntry } from '../../evidence/types.js';
import { normalizeHex, toHex } from '../../util/bytes.js';
import { boundPort, closeServer, listen } from './net-utils.js';

/** A GetTlsKey request, decoded and validated (docs/protocol.md §4). */
export interface TlsKeyRequest {
  readonly subject: string;
  readonly altNames: readonly string[];
  /** Embed the attestation (OID 1.3.6.1.4.1.62397.1.8) in the leaf. */
  readonly usageRaTls: boolean;
  readonly usageServerAuth: boolean;
  readonly usageClientAuth: boolean;
  /** Unix seconds (agent ≥ 0.5.7). */
  readonly notBefore?: number;
  /** Unix seconds (agent ≥ 0.5.7). */
  readonly notAfter?: number;
  readonly withAppInfo?: boolean;
}

/** What an issuer hands back for GetTlsKey. */
export interface IssuedTlsKey {
  /** PKCS#8 PEM private key. */
  readonly key: string;
  /** PEM certificates, leaf first. */
  readonly certificateChain: readonly string[];
}

/** What an issuer hands back for GetQuote. */
export interface IssuedQuote {
  readonly quote: Uint8Array;
  /** The TDX event log; serialised as dstack's JSON event log. */
  readonly eventLog: readonly EventLogEntry[];
  /** Free-form VM configuration JSON (dstack's `vm_config`). */
  readonly vmConfig?: string;
}

/** The identity the agent reports from Info (docs/protocol.md §4). */
export interface GuestAgentInfo {
  /** 20-byte hex. */
  readonly appId: string;
  /** 20-byte hex. */
  readonly instanceId: string;
  readonly appName: string;
  /** 32-byte hex. */
  readonly composeHash: string;
  /** Sent as a JSON string, as dstack does. */
  readonly tcbInfo: Readonly<Record<string, unknown>>;
  readonly deviceId?: string;
  readonly osImageHash?: string;
  readonly keyProviderInfo?: string;
  readonly vmConfig?: string;
}

/**
 * Where the agent's certificates and quotes come from. The real one is the
 * DCAP test authority with the RA-TLS certificate builder; tests can supply
 * anything that keeps this contract.
 */
export interface TlsKeyIssuer {
  issueTlsKey(request: TlsKeyRequest): Promise<IssuedTlsKey>;
  /** `reportData` is always 64 bytes (shorter requests are zero-padded, as dstack does). */
  getQuote(reportData: Uint8Array): Promise<IssuedQuote>;
  info?(): Promise<GuestAgentInfo> | GuestAgentInfo;
}

/** Options of {@link startGuestAgent}. */
export interface GuestAgentOptions {
  readonly issuer: TlsKeyIssuer;
  /** Overrides fields of `issuer.info()`. */
  readonly info?: Partial<GuestAgentInfo>;
  /** Also serve on this unix socket path (as `/var/run/dstack.sock` would). */
  readonly socketPath?: string;
  /** TCP port on 127.0.0.1. Default: a free port. */
  readonly port?: number;
  /**
   * Answer to Version; `false` answers 404 like agents older than 0.5.7, which
   * makes DstackClient refuse `notBefore`/`notAfter`/`withAppInfo`. Unknown
   * methods always get a plain-text 404.
   */
  readonly version?: { readonly version: string; readonly rev: string } | false;
}

/** One request the agent received. */
export interface GuestAgentRequest {
  /** The path without its leading slash, e.g. `GetTlsKey`. */
  readonly method: string;
  /** The parsed JSON body, or undefined when it was not JSON. */
  readonly body: unknown;
  readonly status: number;
}

/** A running guest agent. */
export interface GuestAgent {
  /** `http://127.0.0.1:<port>`: a DstackClient endpoint or DSTACK_SIMULATOR_ENDPOINT. */
  readonly endpoint: string;
  readonly socketPath: string | undefined;
  /** Every request so far, in arrival order. */
  readonly requests: readonly GuestAgentRequest[];
  /**
   * While true, every request is answered HTTP 503 (logged with that status):
   * an agent that is down or restarting, for fault tests.
   */
  setDown(down: boolean): void;
  /** Closes both listeners and every open connection, and removes the socket file. */
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;
const REPORT_DATA_BYTES = 64;
const ZERO_20 = '00'.repeat(20);
const ZERO_32 = '00'.repeat(32);

class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A method this agent does not have; answered like an agent without that RPC. */
class UnknownMethod extends Error {}

/**
 * Starts a dstack guest agent (HTTP/1.1, `POST /<Method>` with JSON bodies,
 * docs/protocol.md §4) on loopback TCP and optionally a unix socket, so that
 * `@phala/dstack-sdk`'s DstackClient talks to it unchanged. Serves GetTlsKey,
 * GetQuote, Info and Version; bad bodies get HTTP 400 with `{ error }`.
 */
export async function startGuestAgent(options: GuestAgentOptions): Promise<GuestAgent> {
  const requests: GuestAgentRequest[] = [];
  let down = false;
  const handler = (request: IncomingMessage, response: ServerResponse) => {
    if (down) {
      const method = (request.url ?? '/').replace(/^\/+/, '').split('?')[0] ?? '';
      requests.push(Object.freeze({ method, body: undefined, status: 503 }));
      request.resume();
      send(response, 503, { error: 'the guest agent is down (test switch)' });
      return;
    }
    handle(options, request, response, requests).catch((error: unknown) => {
      // Last resort: handle() answers every failure itself; never crash the process.
      if (!response.headersSent) send(response, 500, { error: describeCause(error) });
      else response.destroy();
    });
  };
  const servers: Server[] = [];
  try {
    const tcp = createServer(handler);
    servers.push(tcp);
    await listen(tcp, options.port ?? 0, '127.0.0.1');
    if (options.socketPath !== undefined) {
      const unix = createServer(handler);
      servers.push(unix);
      await listen(unix, options.socketPath);
    }
  } catch (error) {
    await Promise.all(servers.map(stopServer));
    throw new Error(
      `the guest agent could not listen: ${describeCause(error)} (is the port or socket path in use?)`,
    );
  }
  const endpoint = `http://127.0.0.1:${boundPort(servers[0]!)}`;
  let closing: Promise<void> | undefined;
  return {
    endpoint,
    socketPath: options.socketPath,
    requests,
    setDown: (value: boolean) => {
      down = value;
    },
    close: () => {
      closing ??= (async () => {
        await Promise.all(servers.map(stopServer));
        if (options.socketPath !== undefined) await rm(options.socketPath, { force: true });
      })();
      return closing;
    },
  };
}

async function stopServer(server: Server): Promise<void> {
  const closed = closeServer(server);
  // DstackClient keeps HTTP connections alive; close() alone would wait for them.
  server.closeAllConnections();
  await closed;
}

async function handle(
  options: GuestAgentOptions,
  request: IncomingMessage,
  response: ServerResponse,
  log: GuestAgentRequest[],
): Promise<void> {
  const method = (request.url ?? '/').replace(/^\/+/, '').split('?')[0] ?? '';
  let body: unknown;
  let status = 200;
  try {
    if (request.method !== 'POST') throw new BadRequest(405, 'use POST /<Method>');
    const text = await readBody(request);
    try {
      body = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      throw new BadRequest(400, 'the request body is not valid JSON');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new BadRequest(400, 'the request body must be a JSON object');
    }
    const result = await dispatch(options, method, body as Record<string, unknown>);
    send(response, 200, result);
  } catch (error) {
    if (error instanceof UnknownMethod) {
      // Plain text, not JSON: DstackClient then fails to parse the answer,
      // which is how it detects an agent that lacks the RPC (e.g. Version < 0.5.7).
      status = 404;
      response.writeHead(status, { 'content-type': 'text/plain', 'content-length': 16 });
      response.end('Method not found');
      return;
    }
    status = error instanceof BadRequest ? error.status : 500;
    send(response, status, { error: describeCause(error) });
  } finally {
    log.push(Object.freeze({ method, body, status }));
  }
}

async function dispatch(
  options: GuestAgentOptions,
  method: string,
  body: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  switch (method) {
    case 'GetTlsKey': {
      const issued = await options.issuer.issueTlsKey(parseTlsKeyRequest(body));
      return { key: issued.key, certificate_chain: [...issued.certificateChain] };
    }
    case 'GetQuote': {
      const reportData = parseReportData(body['report_data']);
      const issued = await options.issuer.getQuote(reportData);
      return {
        quote: toHex(issued.quote),
        event_log: JSON.stringify(issued.eventLog.map(eventLogJson)),
        report_data: toHex(reportData),
        vm_config: issued.vmConfig ?? '',
      };
    }
    case 'Info':
      return infoJson({ ...(await options.issuer.info?.()), ...options.info });
    case 'Version':
      if (options.version === false) throw new UnknownMethod();
      return { ...(options.version ?? { version: '0.5.8', rev: 'pg-ra-tls-test' }) };
    default:
      throw new UnknownMethod();
  }
}

function parseTlsKeyRequest(body: Record<string, unknown>): TlsKeyRequest {
  const altNames = body['alt_names'] ?? [];
  if (!Array.isArray(altNames) || !altNames.every((name) => typeof name === 'string')) {
    throw new BadRequest(400, 'alt_names must be an array of strings');
  }
  const request: {
    -readonly [K in keyof TlsKeyRequest]: TlsKeyRequest[K];
  } = {
    subject: optionalString(body, 'subject') ?? '',
    altNames,
    usageRaTls: optionalBoolean(body, 'usage_ra_tls') ?? false,
    usageServerAuth: optionalBoolean(body, 'usage_server_auth') ?? false,
    usageClientAuth: optionalBoolean(body, 'usage_client_auth') ?? false,
  };
  const notBefore = optionalSeconds(body, 'not_before');
  const notAfter = optionalSeconds(body, 'not_after');
  const withAppInfo = optionalBoolean(body, 'with_app_info');
  if (notBefore !== undefined) request.notBefore = notBefore;
  if (notAfter !== undefined) request.notAfter = notAfter;
  if (withAppInfo !== undefined) request.withAppInfo = withAppInfo;
  if (notBefore !== undefined && notAfter !== undefined && notAfter <= notBefore) {
    throw new BadRequest(400, 'not_after must be later than not_before');
  }
  return Object.freeze(request);
}

function parseReportData(value: unknown): Uint8Array {
  if (value === undefined) return new Uint8Array(REPORT_DATA_BYTES);
  const hex = typeof value === 'string' ? normalizeHex(value) : undefined;
  if (hex === undefined) throw new BadRequest(400, 'report_data must be a hex string');
  if (hex.length > REPORT_DATA_BYTES * 2) {
    throw new BadRequest(400, `report_data must be at most ${REPORT_DATA_BYTES} bytes`);
  }
  const padded = new Uint8Array(REPORT_DATA_BYTES);
  padded.set(Buffer.from(hex, 'hex'));
  return padded;
}

function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new BadRequest(400, `${field} must be a string`);
  return value;
}

function optionalBoolean(body: Record<string, unknown>, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new BadRequest(400, `${field} must be a boolean`);
  return value;
}

function optionalSeconds(body: Record<string, unknown>, field: string): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new BadRequest(400, `${field} must be a non-negative integer of Unix seconds`);
  }
  return value;
}

/** dstack's JSON event-log entry (docs/protocol.md §1): digest and payload as hex. */
function eventLogJson(entry: EventLogEntry): Record<string, unknown> {
  return {
    imr: entry.imr,
    event_type: entry.eventType,
    digest: toHex(entry.digest),
    event: entry.event,
    event_payload: toHex(entry.eventPayload),
  };
}

function infoJson(info: Partial<GuestAgentInfo>): Record<string, unknown> {
  return {
    app_id: info.appId ?? ZERO_20,
    instance_id: info.instanceId ?? ZERO_20,
    app_name: info.appName ?? 'pg-ra-tls-test',
    compose_hash: info.composeHash ?? ZERO_32,
    tcb_info: JSON.stringify(info.tcbInfo ?? {}),
    device_id: info.deviceId ?? ZERO_32,
    os_image_hash: info.osImageHash ?? ZERO_32,
    key_provider_info: info.keyProviderInfo ?? '',
    vm_config: info.vmConfig ?? '',
    app_cert: '',
  };
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).byteLength;
    if (size > MAX_BODY_BYTES) throw new BadRequest(413, 'the request body is too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Sends JSON with an explicit Content-Length and only ASCII: DstackClient's
 * unix-socket path frames the body by Content-Length but counts characters,
 * and cannot parse chunked encoding.
 */
function send(response: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value).replace(
    /[\u0080-\uffff]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  });
  response.end(body);
}
