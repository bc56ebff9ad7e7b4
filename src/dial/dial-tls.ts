import { isIP } from 'node:net';
import type { DetailedPeerCertificate, SecureContext, TLSSocket } from 'node:tls';
import { describeCause, type ErrorCode, RaTlsError } from '../errors.js';
import { abortError } from '../util/deadline.js';

/** Where and how to open one RA-TLS connection. */
export interface DialOptions {
  readonly host: string;
  readonly port: number;
  /** SNI; defaults to `host` unless it is an IP address (RFC 6066). */
  readonly servername?: string;
  /** Client key and certificate chain (PEM) to present; the sidecar requires one. */
  readonly clientCertificate?: { readonly key: string; readonly cert: string };
  /** Time allowed for the TCP connect. */
  readonly connectTimeoutMs: number;
  /** Time allowed for the TLS handshake once TCP is connected. */
  readonly handshakeTimeoutMs: number;
  /** Cancels the dial; the socket is destroyed and the promise rejects with the abort reason. */
  readonly signal?: AbortSignal;
}

/** A TLS socket whose handshake completed, and the certificate the peer presented. */
export interface DialedSocket {
  readonly socket: TLSSocket;
  /** DER of the peer's leaf certificate, captured once at secureConnect. */
  readonly peerCertificateDer: Uint8Array;
  /**
   * DER of the certificates the peer sent after its leaf, in issuing order
   * (each issued the one before), from the same handshake: the app CA and KMS
   * root of a dstack KMS chain (docs/protocol.md §1). Empty when it sent only its leaf.
   */
  readonly peerIssuersDer: readonly Uint8Array[];
}

/** A client credential as {@link dialTls} takes it. */
export type DialCredential = NonNullable<DialOptions['clientCertificate']>;

// One SecureContext per credential object, shared by every dial of the process:
// building one from PEM costs ~2 ms of a ~5 ms connect (issue 11). Keyed by
// object identity, so a rotated certificate (ClientIdentity hands out a new
// object) gets a new context and the old one is collected with its object.
const contexts = new WeakMap<DialCredential, SecureContext>();
let anonymousContext: SecureContext | undefined;

/** node:tls, loaded at the first dial rather than when pg-ra-tls is imported. */
function tls(): typeof import('node:tls') {
  return process.getBuiltinModule('node:tls');
}

/**
 * The TLS context every dial presenting `credential` uses (one without a client
 * certificate when undefined), built on first use. Throws
 * CLIENT_CERT_UNAVAILABLE when the key or certificate PEM cannot be loaded.
 * Sharing a context does not resume TLS sessions: Node.js resumes a client
 * session only when given one, so every dial gets the server's certificate.
 */
export function secureContextFor(credential: DialCredential | undefined): SecureContext {
  if (credential === undefined) {
    anonymousContext ??= tls().createSecureContext({});
    return anonymousContext;
  }
  let context = contexts.get(credential);
  if (context === undefined) {
    try {
      context = tls().createSecureContext({ key: credential.key, cert: credential.cert });
    } catch (cause) {
      throw new RaTlsError(
        'CLIENT_CERT_UNAVAILABLE',
        `the client key or certificate cannot be loaded into TLS (${describeCause(cause)}); ` +
          'pass a PKCS#8 private key PEM and its certificate chain PEM (leaf first)',
        { cause },
      );
    }
    contexts.set(credential, context);
  }
  return context;
}

/**
 * Opens TCP and speaks TLS from the first byte: the ClientHello (with SNI) is
 * the first thing on the wire, never a Postgres SSLRequest, because the teesql
 * sidecar and the dstack gateway expect exactly that (docs/protocol.md §5).
 * `rejectUnauthorized` is false: trust comes from the attestation of the
 * captured certificate, not from a CA. On success the socket carries no
 * listeners of ours; the caller owns it and must handle its 'error'.
 */
export function dialTls(options: DialOptions): Promise<DialedSocket> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  const servername = options.servername ?? (isIP(options.host) === 0 ? options.host : undefined);
  const target = `${options.host}:${options.port}`;
  let secureContext: SecureContext;
  try {
    secureContext = secureContextFor(options.clientCertificate);
  } catch (error) {
    return Promise.reject(error);
  }

  return new Promise((resolve, reject) => {
    let phase: 'connect' | 'handshake' = 'connect';
    let timer: NodeJS.Timeout | undefined;
    const socket = tls().connect({
      host: options.host,
      port: options.port,
      ...(servername === undefined ? {} : { servername }),
      secureContext,
      rejectUnauthorized: false,
    });

    const arm = (ms: number, code: ErrorCode, what: string) => {
      clearTimeout(timer);
      timer = setTimeout(
        () => fail(new RaTlsError(code, `${what} to ${target} did not complete within ${ms} ms`)),
        ms,
      );
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('secureConnect', onSecureConnect);
      socket.off('error', onError);
      socket.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (error: Error) => {
      cleanup();
      // Keep a listener so a late socket error cannot become an uncaught exception.
      socket.on('error', () => {});
      socket.destroy();
      reject(error);
    };
    const onConnect = () => {
      phase = 'handshake';
      arm(options.handshakeTimeoutMs, 'HANDSHAKE_TIMEOUT', 'the TLS handshake');
    };
    const onSecureConnect = () => {
      // One detailed read gives the leaf and its issuers: each read converts every
      // certificate to an object (fingerprints, names), ~0.3 ms for a 7 KiB leaf.
      const peer = socket.getPeerCertificate(true);
      const raw = peer?.raw;
      if (raw === undefined || raw.length === 0) {
        fail(
          new RaTlsError('HANDSHAKE_FAILED', `the server at ${target} presented no certificate`),
        );
        return;
      }
      cleanup();
      resolve({
        socket,
        peerCertificateDer: new Uint8Array(raw),
        peerIssuersDer: issuersOf(peer),
      });
    };
    const onError = (error: Error) => {
      const code = phase === 'connect' ? 'CONNECT_FAILED' : 'HANDSHAKE_FAILED';
      const what = phase === 'connect' ? 'TCP connect' : 'the TLS handshake';
      fail(
        new RaTlsError(code, `${what} to ${target} failed: ${describeCause(error)}`, {
          cause: error,
          details: { host: options.host, port: options.port },
        }),
      );
    };
    const onClose = () => {
      onError(new Error('the connection was closed by the peer'));
    };
    const onAbort = () => fail(abortReason(signal!));

    socket.once('connect', onConnect);
    socket.once('secureConnect', onSecureConnect);
    socket.on('error', onError);
    socket.once('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
    arm(options.connectTimeoutMs, 'CONNECT_TIMEOUT', 'TCP connect');
  });
}

/** Longest chain kept: a dstack chain has 3 certificates; anything longer is refused later anyway. */
const MAX_ISSUERS = 8;

/**
 * The peer's issuers as Node links them: it orders the certificates the peer
 * sent by issuer name (not by their order on the wire) and stops at a
 * self-issued one. With `rejectUnauthorized: false` it may append an issuer
 * from the default CA store when the peer's last certificate is not
 * self-issued; no dstack KMS root is in that store, so such a chain fails
 * the KMS pin, as it should.
 */
function issuersOf(peer: DetailedPeerCertificate): Uint8Array[] {
  const issuers: Uint8Array[] = [];
  let current = peer;
  while (issuers.length < MAX_ISSUERS) {
    const issuer = current?.issuerCertificate;
    // Node ends the chain with a certificate that is its own issuer.
    if (issuer === undefined || issuer === null || issuer === current) break;
    if (issuer.raw === undefined || issuer.raw.length === 0) break;
    issuers.push(new Uint8Array(issuer.raw));
    current = issuer;
  }
  return issuers;
}

/** The signal's reason through the one abort mapping (util/deadline.ts). */
function abortReason(signal: AbortSignal): RaTlsError {
  return abortError(signal.reason);
}
